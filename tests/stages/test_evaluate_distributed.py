"""The evaluate stage's inference on two CPU processes (torchrun, gloo) gives what one process gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow


def test_two_gloo_processes_match_one(tmp_path):
    repo = copy_checkout(tmp_path / "checkout")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["base_model"]["tiny"]["warmup_steps"] = 60  # enough to answer in the format sometimes
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=900)  # noqa: E731
    done = run(sys.executable, "-m", "stages.download")
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(repo / "models/base", repo / "models/trained")

    results = {}
    for nproc in (1, 2):
        shutil.rmtree(repo / ".work", ignore_errors=True)
        if nproc == 1:
            done = run(sys.executable, "-m", "stages.evaluate", "--worker")
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            done = run(*launcher, "-m", "stages.evaluate", "--worker")
        assert done.returncode == 0, done.stderr[-3000:]
        scores = json.loads((repo / ".work/evaluate/results.json").read_text())
        completions = {
            path.name: [json.loads(line)["completion"] for line in path.read_text().splitlines()]
            for path in (repo / ".work/evaluate").rglob("*_completions.jsonl")
        }
        results[nproc] = (scores, completions)
    one, two = results[1], results[2]
    assert one[0] == two[0]
    assert one[1] == two[1] and len(one[1]) == 6  # 3 variants x 2 benchmarks, every answer identical
    assert one[0]["base"]["SatoriTiny_MMBench"]["predictions"] == 48
