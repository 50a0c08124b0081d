"""What a stage records: metrics, images, artifacts, datasets, a registered model, and the console's [satori]
lines."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from satori.tracking.store import tracking_uri, without_credentials
from satori.tracking.tags import leaves


def log_image(image, key: str, step: int) -> None:
    """An image in the active run, under key, at a step (MLflow's image slider shows them per step)."""
    import mlflow

    mlflow.log_image(image, key=key, step=step)


def logged_steps(run_id: str, metric: str) -> list[int]:
    """The steps at which `metric` was logged in a run."""
    import mlflow

    return [m.step for m in mlflow.MlflowClient(tracking_uri()).get_metric_history(run_id, metric)]


def run_link(run_id: str) -> str:
    """Where to see a run: its URL on a tracking server, or the command that opens a local store."""
    import mlflow

    uri = tracking_uri()
    run = mlflow.MlflowClient(uri).get_run(run_id)
    shown = without_credentials(uri)
    if uri.startswith(("http://", "https://")):
        return f"{shown.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return f"run `{run.info.run_name}` ({run_id}); open with `mlflow ui --backend-store-uri {shown}`"


def say(message: str) -> None:
    """One line on the console (flushed, so it shows while a long stage runs)."""
    print(f"[satori] {message}", flush=True)


# MLflow metric names allow letters, digits, _ - . / and spaces; benchmark categories may hold more.
_METRIC_NAME_UNSAFE = re.compile(r"[^\w\-./ ]")


def metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) mapping, under dotted names MLflow accepts."""
    return {
        _METRIC_NAME_UNSAFE.sub("_", k): float(v)
        for k, v in leaves(metrics)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the finite numbers of a (nested) mapping to the active run, under dotted names."""
    import mlflow

    clean = metric_values(metrics)
    if clean:
        mlflow.log_metrics(clean, step=step)


def curve_points(table: Path, prefix: str) -> Iterator[tuple[int, dict[str, float]]]:
    """(step, {prefix/column: value}) per row of a per-step CSV (a `step` column, then one number a column;
    empty cells skipped)."""
    import csv

    with table.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = int(row.pop("step"))
            yield step, {f"{prefix}/{k}": float(v) for k, v in row.items() if v not in ("", None)}


def log_to_run(run_id: str, points: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
    """Log (step, metrics) points to a run by its id, not as the active run: the flow's parent is open in
    another process."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(k, v, now, step) for step, metrics in points for k, v in metric_values(metrics).items()]
    mlflow.MlflowClient().log_batch(run_id, metrics=entries)  # MLflow splits it into batches it accepts


def log_datasets(files: Mapping[str, Path], context: str) -> None:
    """Datasets the active run read (MLflow's Dataset column), by name: each file's md5 as its digest, its
    path as its source, its rows (a JSONL file's lines, a TSV's rows) in its profile and tags."""
    import warnings

    import mlflow
    import pandas as pd

    from satori.core.files import file_md5

    for name, path in files.items():
        table = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path, sep="\t")
        with warnings.catch_warnings():  # MLflow warns that a relative path may not resolve elsewhere, and of
            warnings.simplefilter("ignore")  # integer columns in the schema it infers
            dataset = mlflow.data.from_pandas(table, source=path.as_posix(), name=name, digest=file_md5(path))
            mlflow.log_input(dataset, context=context, tags={"rows": str(len(table))})


def register_model(name: str, location: str, tags: Mapping[str, str]) -> str:
    """A new version of the registered model `name` for the model the active run published, its weights left
    where they are (location: the folder, or its Hub URL): an MLflow external model, which holds no artifacts,
    tagged with the location. Returns the version."""
    import mlflow

    tags = {"satori.location": location, **tags}
    run = mlflow.active_run()
    model = mlflow.create_external_model(name=name, source_run_id=run.info.run_id, tags=tags, model_type="transformers")
    return mlflow.register_model(model.model_uri, name, tags=tags).version


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path)
