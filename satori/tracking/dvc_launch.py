"""A pipeline launched by `dvc repro` or `dvc exp run` (no flow opened its parent): the DVC process that
launched the stages is found, and one parent run is opened per launch; runs whose process died are ended."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from satori.core.config import REPO_ROOT
from satori.tracking.tags import HOST_TAG, LAUNCH_TAG, PID_TAG, PIPELINE_TAG, STAGE_TAG, dvc_launch, flatten, parent_tags


def launch_key() -> str | None:
    """What identifies one `dvc repro` or `dvc exp run` (its stages run as separate processes under it): the
    host, pid and start time of the nearest dvc process above this one, and the experiment's name when there
    is one (a queue worker runs several). None for a stage started by hand."""
    import psutil

    for process in psutil.Process().parents():
        try:
            argv = process.cmdline()
            started = process.create_time()
        except psutil.Error:
            continue
        if any(Path(arg).name == "dvc" for arg in argv[:2]) or argv[1:3] == ["-m", "dvc"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) + f".{int(started * 100) % 100:02d}"
            experiment = os.environ.get("DVC_EXP_NAME")
            return f"dvc pid {process.pid} on {socket.gethostname()}, started {when}" + (
                f", experiment {experiment}" if experiment else ""
            )
    return None


def launch_parent(experiment_name: str, profile: str) -> str | None:
    """The parent run of this stage's pipeline run when no flow opened one: one per `dvc repro` or `dvc exp
    run` (see launch_key), created by its first stage that tracks, with the profile's params and tags."""
    import mlflow

    key = launch_key()
    if key is None:
        return None
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    query = f"tags.`{LAUNCH_TAG}` = '{key}' and tags.`{PIPELINE_TAG}` = 'true'"
    found = client.search_runs([experiment.experiment_id], query, max_results=1)
    if found:
        return found[0].info.run_id
    from satori.core.config import PARAMS_FILE, read_params
    from satori.core.lineage import code_revision

    params = read_params(REPO_ROOT / PARAMS_FILE)[profile]
    how = dvc_launch()
    tags = {**parent_tags(profile, params, code_revision(REPO_ROOT), "dvc.yaml", how), LAUNCH_TAG: key}
    name = os.environ.get("DVC_EXP_NAME") or profile
    run = client.create_run(
        experiment.experiment_id, run_name=f"{how.split()[1]}-{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags=tags
    )
    from mlflow.entities import Param

    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(params).items()])  # chunked by MLflow
    client.set_terminated(run.info.run_id, "FINISHED")  # its stages' runs carry their own status
    return run.info.run_id


def end_orphans(mlflow, experiment_name: str, stage: str) -> None:
    """Mark KILLED the RUNNING runs of this stage whose process (on this machine) no longer exists."""
    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(experiment_name)
    host = socket.gethostname()
    query = f"attributes.status = 'RUNNING' and tags.`{STAGE_TAG}` = '{stage}' and tags.`{HOST_TAG}` = '{host}'"
    for run in client.search_runs([experiment.experiment_id], query):
        pid = int(run.data.tags.get(PID_TAG, "0") or 0)
        if pid and not _alive(pid):
            client.set_terminated(run.info.run_id, "KILLED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


