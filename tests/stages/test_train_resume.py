"""A training run killed with SIGKILL after checkpoint k resumes at step k+1 when run again, and a run whose export
failed after training finished is exported on the retry without training again (a real ms-swift run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow


def test_a_killed_run_resumes_from_its_last_checkpoint_with_one_mlflow_history(tmp_path):
    import mlflow

    repo = copy_checkout(tmp_path / "checkout")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["base_model"]["tiny"]["warmup_steps"] = 0  # seconds to build; learning is not the point here
    # eval_steps past the last step: no validation pass (this test checks the resume, not validation).
    params["tiny"]["train"].update(max_steps=4, save_steps=1, save_total_limit=4, eval_steps=1000)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": store,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    dvc = [sys.executable, "-m", "dvc", "repro", "--single-item"]
    for stage in ("watch_mirrors", "fetch_dataset", "fetch_base_model", "preprocess"):
        done = subprocess.run([*dvc, stage], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Kill the whole stage (DVC, the stage, ms-swift) as a preempted machine would, right after checkpoint-1.
    first = subprocess.Popen([*dvc, "train"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 600
    while not list(repo.glob(".work/train/*/swift_output/checkpoint-1/trainer_state.json")):
        assert first.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint-1 in 10 minutes"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (output_dir,) = repo.glob(".work/train/*/swift_output")
    whole = [int(p.parent.name.split("-")[1]) for p in output_dir.glob("checkpoint-*/trainer_state.json")]
    k = max(whole)
    lines_before = (output_dir / "logging.jsonl").read_text().splitlines() if (output_dir / "logging.jsonl").exists() else []
    assert not (repo / "models/trained").exists()

    # The resumed run trains to the end, then its export fails (a file where the export's temporary folder must
    # go): a run whose training finished but whose export did not.
    blocker = repo / "models/.trained.partial"
    blocker.parent.mkdir(exist_ok=True)
    blocker.write_text("not a folder")
    second = subprocess.run([*dvc, "train"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode != 0 and "FileExistsError" in second.stdout + second.stderr
    assert f"resuming from checkpoint-{k} " in second.stdout

    new_records = []
    for line in (output_dir / "logging.jsonl").read_text().splitlines()[len(lines_before):]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line SIGKILL cut, continued by the resumed run
            continue
        if "reward" in record:
            new_records.append(int(record["global_step/max_steps"].split("/")[0]))
    assert new_records[0] == k + 1, (k, new_records)
    assert new_records[-1] == 4

    # The retry exports the finished checkpoint and trains no step more (resuming it would make ms-swift train
    # step 5 of 4, and the model would differ from an uninterrupted run's).
    blocker.unlink()
    trained_log = (output_dir / "logging.jsonl").read_text()
    retried = subprocess.run([*dvc, "train"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert retried.returncode == 0, retried.stdout[-4000:] + retried.stderr[-3000:]
    assert "finished training at checkpoint-4; exporting it, not training again" in retried.stdout
    assert (output_dir / "logging.jsonl").read_text() == trained_log  # ms-swift did not run again
    exported = (repo / "models/trained/model.safetensors").read_bytes()
    assert exported == (output_dir / "checkpoint-4/model.safetensors").read_bytes()  # the last step, byte for byte
    assert json.loads((repo / "models/trained/SOURCE.json").read_text())["checkpoint"] == "checkpoint-4"

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("satori-tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.`satori.stage` = 'train'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the killed run, continued twice
    history = client.get_metric_history(runs[0].info.run_id, "reward")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # no gap, no duplicate
    assert json.loads((repo / "reports/train.json").read_text())["steps"] == 4
