"""MLflow, behind one small module.

One parent run per pipeline run (opened by the driver, `flows/pipeline.py`),
one child run per stage. A stage runs in its own process (DVC starts it), so
the parent's id travels in SATORI_PARENT_RUN_ID and the child is tied to it
with the `mlflow.parentRunId` tag. A stage run by hand, with no parent, is a
top-level run of its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.config import REPO_ROOT

PARENT_RUN_ENV = "SATORI_PARENT_RUN_ID"
STAGE_TAG = "satori.stage"
PROFILE_TAG = "satori.profile"


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or a SQLite store at the repo root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlflow.db'}"


def artifact_root(uri: str) -> Path:
    """Artifacts sit beside a SQLite store (mlartifacts/); MLflow's default is relative to the cwd."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return REPO_ROOT / "mlartifacts"


def _client_for(experiment: str):
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(artifact_root(uri) / experiment).as_uri())
    mlflow.set_experiment(experiment)
    return mlflow


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every non-mapping value of a nested mapping."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def flatten(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested params as dotted keys, values as strings MLflow accepts (500 chars at most)."""
    return {k: (v if isinstance(v, str) else json.dumps(v))[:500] for k, v in leaves(params)}


@contextlib.contextmanager
def pipeline_run(experiment: str, profile: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """The parent run of one pipeline run; its id is exported for the stages it starts."""
    mlflow = _client_for(experiment)
    with mlflow.start_run(run_name=f"pipeline-{profile}", tags={PROFILE_TAG: profile, **(tags or {})}) as run:
        previous = os.environ.get(PARENT_RUN_ENV)
        os.environ[PARENT_RUN_ENV] = run.info.run_id
        try:
            yield run.info.run_id
        finally:
            if previous is None:
                os.environ.pop(PARENT_RUN_ENV, None)
            else:
                os.environ[PARENT_RUN_ENV] = previous


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, profile: str, params: Mapping[str, Any]) -> Iterator[Any]:
    """A child run for one stage (top-level when no pipeline run is open)."""
    mlflow = _client_for(experiment)
    tags = {STAGE_TAG: stage, PROFILE_TAG: profile}
    parent = os.environ.get(PARENT_RUN_ENV)
    if parent:
        tags["mlflow.parentRunId"] = parent
    # In-process (a test, a notebook) the parent is the active run: MLflow needs nested=True for that.
    with mlflow.start_run(run_name=stage, tags=tags, nested=mlflow.active_run() is not None) as run:
        mlflow.log_params(flatten(params))
        yield run


# MLflow metric names allow letters, digits, _ - . / and spaces; benchmark categories may hold more.
_METRIC_NAME_UNSAFE = re.compile(r"[^\w\-./ ]")


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the finite numbers of a (nested) mapping to the active run, under dotted names."""
    import mlflow

    clean = {
        _METRIC_NAME_UNSAFE.sub("_", k): float(v)
        for k, v in leaves(metrics)
        if isinstance(v, (int, float)) and math.isfinite(v)
    }
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)
