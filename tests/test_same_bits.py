"""Same inputs, same bits, on any x86-64 machine with AVX2 (satori.core.cpu_numerics): the base-model build and a few
GRPO steps, run as the stages run them, with the environment asking for another machine's CPU code paths (we
cannot rent one: torch, MKL, oneDNN and numpy each take their instruction set and threads from it), give
byte-identical weights. The control: with the pinning off, asking for another code path changes the bits, so
the simulated machines do differ and the test can fail."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from satori.core.cpu_numerics import MODE_ENV, NATIVE, unpinned_environment
from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow

# Other machines, as their environment makes torch, MKL, oneDNN and numpy see them.
AS_IS = "as-is"  # this machine, nothing set, as a newcomer's `make run` runs: the fixture's `dvc repro` build
MACHINES = {
    AS_IS: {},
    "avx512-2threads": {
        "ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "MKL_CBWR": "AUTO",
        "ONEDNN_MAX_CPU_ISA": "ALL", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "NPY_DISABLE_CPU_FEATURES": "",
    },
    "default-1thread-compatible": {
        "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    },
}  # fmt: skip
TRAINED_ON = (AS_IS, "avx512-2threads")  # GRPO costs ~1 min a machine: the two furthest apart


def md5_of_weights(folder: Path) -> str:
    digest = hashlib.md5()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout with a short warm-up and 2 GRPO steps, fetched and preprocessed once (as-is)."""
    work = tmp_path_factory.mktemp("same_bits")
    repo = copy_checkout(work / "checkout")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["base_model"]["tiny"]["warmup_steps"] = 40
    params["tiny"]["train"].update(max_steps=2, save_steps=2, eval_steps=1000)  # no validation pass
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = machine_env(work, {})
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "preprocess"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return repo, work


def machine_env(work: Path, asks: dict[str, str]) -> dict[str, str]:
    env = unpinned_environment()
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        HF_HUB_OFFLINE="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **asks,
    )
    return env


def build(repo: Path, work: Path, name: str, asks: dict[str, str]) -> Path:
    out = repo / "models" / f"base-{name}"
    stage = [sys.executable, "-m", "stages.fetch_base_model", "--mirror-manifest", "data/mirrors/base_model.json",
             "--prompt", "prompt.txt", "--out", str(out.relative_to(repo))]  # fmt: skip
    done = subprocess.run(stage, cwd=repo, env=machine_env(work, asks), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def train(repo: Path, work: Path, name: str, base: Path, asks: dict[str, str]) -> Path:
    out = f"models/trained-{name}"
    stage = [sys.executable, "-m", "stages.train", "--data", "data/processed", "--raw", "data/raw", "--base-model",
             str(base.relative_to(repo)), "--prompt", "prompt.txt", "--work", f".work/train-{name}", "--out", out,
             "--metrics", f"reports/train-{name}.json", "--plots", f"reports/train_rewards-{name}.csv",
             "--plot-image", f"reports/train_rewards-{name}.png", "--samples", f"reports/train_samples-{name}.md"]  # fmt: skip
    done = subprocess.run(stage, cwd=repo, env=machine_env(work, asks), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return repo / out


def test_the_base_model_and_grpo_give_the_same_weights_on_every_simulated_machine(checkout):
    repo, work = checkout
    bases = {name: build(repo, work, name, asks) for name, asks in MACHINES.items() if name != AS_IS}
    bases[AS_IS] = repo / "models/base"
    base_hashes = {name: md5_of_weights(folder) for name, folder in bases.items()}
    assert len(set(base_hashes.values())) == 1, base_hashes
    trained = {name: md5_of_weights(train(repo, work, name, bases[name], MACHINES[name])) for name in TRAINED_ON}
    assert len(set(trained.values())) == 1, trained
    assert set(trained.values()) != set(base_hashes.values())  # GRPO did change the weights


def test_without_the_pinning_another_code_path_gives_other_bits(checkout):
    """The control: the simulated machines differ. ATEN_CPU_CAPABILITY=default (no vector kernels) is a code path
    every x86-64 machine has; the pinned build equals the first test's."""
    repo, work = checkout
    native = build(repo, work, "native-default", {MODE_ENV: NATIVE, "ATEN_CPU_CAPABILITY": "default"})
    assert md5_of_weights(native) != md5_of_weights(repo / "models/base")
