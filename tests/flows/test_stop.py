"""The flow stops within seconds of SIGTERM, and the stage it was running ends its MLflow run KILLED."""

from __future__ import annotations

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

HANGING_STAGE = (
    "python -c \"exec('import time\\nfrom satori import tracking\\n"
    "with tracking.stage_run(\\\\'fetch_dataset\\\\', \\\\'satori-tiny\\\\', \\\\'tiny\\\\', {}):\\n"
    "    tracking.say(\\\\'hanging\\\\')\\n    time.sleep(600)')\""
)


def test_sigterm_stops_the_flow_and_the_stage_within_seconds(tmp_path):
    import mlflow

    repo = copy_checkout(tmp_path / "checkout")
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    spec["stages"]["fetch_dataset"]["cmd"] = HANGING_STAGE  # a stage that never ends by itself
    (repo / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PREFECT_HOME": str(tmp_path / "prefect")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    flow = subprocess.Popen([sys.executable, "-m", "flows.pipeline"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 180
    for line in flow.stdout:
        if "[satori] hanging" in line:
            break
        assert time.monotonic() < deadline, "the stage never started"
    time.sleep(2)  # the stage's MLflow run is open
    sent = time.monotonic()
    flow.send_signal(signal.SIGTERM)
    flow.communicate(timeout=60)
    assert time.monotonic() - sent < 20
    assert flow.returncode != 0
    leftover = subprocess.run(["pgrep", "-f", "time.sleep(600)"], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""  # the stage (its whole process group) is gone
    client = mlflow.MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("satori-tiny").experiment_id])
    stage_runs = [r for r in runs if r.data.tags.get("satori.stage") == "fetch_dataset"]
    assert [r.info.status for r in stage_runs] == ["KILLED"]
    assert all(r.info.status != "RUNNING" for r in runs)
