"""The GPU bundle and the GPU machine rehearsed on CPU: the check runs where Python sees only that machine's
packages plus the bundle, so a package missing from the bundle fails here, not in a GPU session."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess

import pytest

from benchmarks import gpu_bundle, gpu_rehearsal
from tests.conftest import copy_with_venv, readme_commands


def test_the_bundle_pins_what_the_project_runs_and_nothing_the_gpu_machine_has():
    gpu_machine = gpu_rehearsal.gpu_machine_names()
    for requirement in gpu_bundle.pinned():
        name, version = requirement.split("==")
        assert gpu_rehearsal.normalized(name) not in gpu_machine, f"{name} is on the GPU machine already"
        assert importlib.metadata.version(name) == version, f"{name}: the bundle's pin is not what the tests run"


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_gpu_machine_s_packages_plus_the_bundle(tmp_path):
    # What travels: the CPython 3.12 bundle with the tracked tree, under the limit, made by the README's
    # `make gpu-bundle` as typed (in a copy of the checkout: it writes .whl/).
    (make_bundle,) = readme_commands("gpu-bundle")
    copy = copy_with_venv(tmp_path / "checkout")
    done = subprocess.run(["bash", "-c", make_bundle], cwd=copy, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = sorted((copy / ".whl").glob("*.whl"))
    assert all(f"{w.name}" in done.stdout for w in wheels)
    assert {w.name.split("-")[0].lower().replace("_", "-") for w in wheels} == {
        r.split("==")[0].lower().replace("_", "-") for r in gpu_bundle.pinned()
    }
    assert sum(w.stat().st_size for w in wheels) + gpu_bundle.tracked_bytes() < gpu_bundle.LIMIT_MIB * 2**20

    python, env = gpu_rehearsal.build(tmp_path / "rehearsal")
    # The environment holds neither the pipeline's services nor VLMEvalKit: the check must not need them.
    for module in ("mlflow", "prefect", "dvc", "vlmeval", "pydantic_settings"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    env["OUT"] = str(tmp_path / "out")
    check = [str(python), "-m", "benchmarks.gpu_check", "--cpu", "--cycles", "1", "--questions", "4",
             "--folder", str(tmp_path / "check")]  # fmt: skip
    done = subprocess.run(check, cwd=gpu_bundle.REPO_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    seed, fast = results["settings"]["seed"], results["settings"]["fast"]
    # seed: one generation per step, one generation batch of completions; fast: one per 4 steps, 4 batches.
    from satori.core.config import load_profile

    train = load_profile(gpu_bundle.REPO_ROOT / "params.yaml", "tiny")[1].train
    batch = train.per_device_train_batch_size * train.nproc_per_node * train.gradient_accumulation_steps
    assert (seed["decode"]["rows"], fast["decode"]["rows"]) == (batch, 4 * batch)
    assert (seed["train"]["steps"], fast["train"]["steps"]) == (1, 4)  # one generation cycle each
    assert (seed["train"]["generation_steps"], fast["train"]["generation_steps"]) == (1, 1)
    for row in (seed, fast):
        assert "model.safetensors" in row["train"]["exported"]  # exported whole, as the train stage exports
        assert row["train"]["completion_tokens_per_s_per_gpu"] > 0 and row["decode"]["decode_ms_per_token"] > 0
    logged = [json.loads(line) for line in (tmp_path / "check/train_fast/swift_output/logging.jsonl").open()]
    steps = [int(r["global_step/max_steps"].split("/")[0]) for r in logged if "global_step/max_steps" in r]
    rewarded = [int(r["global_step/max_steps"].split("/")[0]) for r in logged if "rewards/Format/mean" in r]
    assert (sorted(set(steps)), rewarded) == ([1, 2, 3, 4], [1])  # rewards scored once: the one generation of 4 steps
    assert set(results["evaluation"]["samples_per_s"]) == {"1", "16"}
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert f"| seed | {batch} |" in table and f"| fast | {4 * batch} |" in table
