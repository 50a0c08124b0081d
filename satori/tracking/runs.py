"""The runs of a pipeline: one parent per pipeline run, one child per stage (its own process: the parent's id
travels in SATORI_PARENT_RUN_ID); a stage run ends killed on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from satori.tracking.dvc_launch import end_orphans, launch_parent
from satori.tracking.store import client_for
from satori.tracking.tags import HOST_TAG, PARENT_RUN_ENV, PID_TAG, PROFILE_TAG, STAGE_TAG, flatten, parent_tags


@contextlib.contextmanager
def pipeline_run(
    experiment: str,
    profile: str,
    params: Mapping[str, Any],
    code_revision: str,
    tags: Mapping[str, str] | None = None,
    label: str | None = None,
    launched_by: str = "flow",
) -> Iterator[str]:
    """The parent run of one pipeline run; its id is exported for the stages it starts.

    It carries what makes two pipeline runs comparable in the MLflow UI: the active profile's
    parameters (flattened), the code revision, a hash of the parameters, the DVC experiment name
    when there is one, and a distinct name (profile, time).
    """
    mlflow = client_for(experiment)
    all_tags = {**parent_tags(profile, params, code_revision, "flows/pipeline.py", launched_by), **(tags or {})}
    name = f"{label or profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    with mlflow.start_run(run_name=name, tags=all_tags) as run:
        mlflow.log_params(flatten(params))
        previous = os.environ.get(PARENT_RUN_ENV)
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run.info.run_id
        finally:
            if previous is None:
                os.environ.pop(PARENT_RUN_ENV, None)
            else:
                os.environ[PARENT_RUN_ENV] = previous



class Terminated(BaseException):
    """SIGTERM arrived: unwinds the stage like Ctrl-C does, so its run ends KILLED and its partial outputs are removed."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def stage_run(
    stage: str, experiment: str, profile: str, params: Mapping[str, Any], continue_run: str | None = None
) -> Iterator[Any]:
    """A child run for one stage (top-level when no pipeline run is open); `continue_run` reopens an earlier one.

    The run ends FINISHED, FAILED on an error, or KILLED on SIGTERM/SIGINT; a run left RUNNING by a
    stage killed with SIGKILL is marked KILLED when the next run of that stage starts on this machine.
    """
    mlflow = client_for(experiment)
    end_orphans(mlflow, experiment, stage)
    tags = {STAGE_TAG: stage, PROFILE_TAG: profile, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    launched = None if os.environ.get(PARENT_RUN_ENV) else launch_parent(experiment, profile)
    parent = os.environ.get(PARENT_RUN_ENV) or launched
    if parent:
        tags["mlflow.parentRunId"] = parent
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    # In-process (a test, a notebook) the parent is the active run: MLflow needs nested=True for that.
    nested = mlflow.active_run() is not None
    # System metrics (CPU, memory, disk; GPU where nvidia-ml-py is installed, the gpu extra) every
    # MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's default, 10) while the stage runs; its
    # monitor's start and stop messages kept off the stage's output.
    import logging

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    if continue_run:
        run = mlflow.start_run(run_id=continue_run, nested=nested, log_system_metrics=True)
        mlflow.set_tags({PID_TAG: tags[PID_TAG], HOST_TAG: tags[HOST_TAG]})
    else:
        run = mlflow.start_run(run_name=stage, tags=tags, nested=nested, log_system_metrics=True)
    try:
        if not continue_run:
            mlflow.log_params(flatten(params))
        yield run
    except (Terminated, KeyboardInterrupt):
        mlflow.end_run("KILLED")
        if launched:  # a parent no flow holds open ends with its failed stage
            mlflow.MlflowClient().set_terminated(launched, "KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        if launched:
            mlflow.MlflowClient().set_terminated(launched, "FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


