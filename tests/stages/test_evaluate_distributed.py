"""The evaluate_base stage on two CPU processes (torchrun, gloo) gives what one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow

EVALUATE_BASE = [
    "-m", "stages.evaluate_base", "--model", "models/base", "--benchmarks", "data/benchmarks", "--prompt", "prompt.txt",
    "--work", ".work/evaluate_base", "--out", "reports/evaluate_base", "--metrics", "reports/evaluate_base.json",
]  # fmt: skip


def set_params(repo: Path, **evaluate) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["base_model"]["tiny"]["warmup_steps"] = 60  # enough to answer in the format sometimes
    params["tiny"]["evaluate"].update(evaluate)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_two_gloo_processes_match_one(tmp_path):
    repo = copy_checkout(tmp_path / "checkout")
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)  # noqa: E731
    set_params(repo, nproc_per_node=1)
    # The fetch stages by hand, as dvc.yaml runs them (the mirror manifest is only their DVC dependency).
    for fetch in (["fetch_base_model", "--mirror-manifest", "m.json", "--prompt", "prompt.txt", "--out", "models/base"],
                  ["fetch_benchmarks", "--mirror-manifest", "m.json", "--out", "data/benchmarks", "--metrics",
                   "reports/fetch_benchmarks.json"]):  # fmt: skip
        done = run(sys.executable, "-m", f"stages.{fetch[0]}", *fetch[1:])
        assert done.returncode == 0, done.stderr[-3000:]

    results = {}
    for nproc in (1, 2):
        set_params(repo, nproc_per_node=nproc)
        done = run(sys.executable, *EVALUATE_BASE)
        assert done.returncode == 0, done.stderr[-3000:]
        scores = json.loads((repo / "reports/evaluate_base.json").read_text())
        completions = {
            path.name: [json.loads(line)["completion"] for line in path.read_text().splitlines()]
            for path in (repo / "reports/evaluate_base").glob("*_completions.jsonl")
        }
        results[nproc] = (scores, completions)
    one, two = results[1], results[2]
    assert one[0] == two[0]
    assert one[1] == two[1] and len(one[1]) == 4  # 2 variants x 2 benchmarks, every answer identical
    assert one[0]["base"]["SatoriTiny_MMBench"]["predictions"] == 32  # 32 questions, no rotations (color_cue)
