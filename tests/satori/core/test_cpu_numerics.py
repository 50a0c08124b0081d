"""satori.core.cpu_numerics: which CPU code paths a process computes with (tests/test_same_bits.py shows the bits)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from satori.core import cpu_numerics
from satori.core.cpu_numerics import MODE_ENV, NATIVE, PINNED, gpu_visible, pin, unpinned_environment


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_numerics, "gpu_visible", lambda environ=None: False)
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "x86_64")


def test_pinning_overrides_what_the_machine_or_the_user_set(no_gpu):
    environ = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "OMP_NUM_THREADS": "16", "HOME": "/root"}
    assert pin(environ) == PINNED
    assert environ == {**PINNED, "HOME": "/root"}


def test_native_mode_and_other_architectures_are_left_alone(no_gpu, monkeypatch):
    environ = {MODE_ENV: NATIVE, "ATEN_CPU_CAPABILITY": "avx512"}
    assert pin(environ) == {} and environ == {MODE_ENV: NATIVE, "ATEN_CPU_CAPABILITY": "avx512"}
    monkeypatch.setattr(cpu_numerics.platform, "machine", lambda: "aarch64")
    assert pin({}) == {}


def test_a_visible_nvidia_gpu_keeps_the_machine_s_choices(tmp_path):
    (tmp_path / "nvidiactl").touch()
    assert not gpu_visible({}, tmp_path)  # the control device alone is no GPU
    (tmp_path / "nvidia0").touch()
    assert gpu_visible({}, tmp_path)
    assert gpu_visible({"CUDA_VISIBLE_DEVICES": "0"}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, tmp_path)
    assert not gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, tmp_path)


def test_a_process_that_loaded_torch_first_is_warned(no_gpu, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    with pytest.warns(RuntimeWarning, match="ATEN_CPU_CAPABILITY='avx512'"):
        pin(os.environ)
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"  # the children are pinned all the same


@pytest.mark.skipif(gpu_visible(), reason="a GPU machine keeps its own CPU code paths")
def test_a_stage_process_computes_with_the_pinned_kernels_whatever_its_environment_asks():
    """What torch itself reports, in a process started as DVC starts a stage (satori imported first)."""
    env = unpinned_environment()
    env.update(ATEN_CPU_CAPABILITY="avx512", OMP_NUM_THREADS="2", MKL_CBWR="AUTO")
    code = ("import satori, torch, os; "
            "print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), os.environ['MKL_CBWR'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "1", "AVX2,STRICT"]
    env[MODE_ENV] = NATIVE
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[1:] == ["2", "AUTO"]


def test_an_unpinned_environment_drops_every_pinned_key_and_the_mode_only():
    environ = {**PINNED, MODE_ENV: NATIVE, "HOME": "/root", "PATH": "/bin"}
    assert unpinned_environment(environ) == {"HOME": "/root", "PATH": "/bin"}
