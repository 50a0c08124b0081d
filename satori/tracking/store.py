"""Where the runs go: the MLflow store of the checkout (a SQLite file beside it, or MLFLOW_TRACKING_URI) and its
artifact folder, followed when a checkout is copied or DVC runs an experiment in a temporary copy."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from satori.core.config import REPO_ROOT

# Where `dvc exp run --temp` runs a copy of the checkout (deleted afterwards): <checkout>/.dvc/tmp/exps/<tmp>/.
DVC_TEMP_RUNS = (".dvc", "tmp", "exps")


def store_root(checkout: Path | None = None) -> Path:
    """The checkout whose local MLflow store runs go to: this one, or under `dvc exp run --temp` the checkout
    that started the experiment (a store in DVC's temporary copy would be deleted with it)."""
    parts = (checkout or REPO_ROOT).parts
    for i in range(len(parts) - len(DVC_TEMP_RUNS)):
        if parts[i : i + len(DVC_TEMP_RUNS)] == DVC_TEMP_RUNS:
            return Path(*parts[:i])
    return checkout or REPO_ROOT


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or a SQLite store at the checkout's root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def without_credentials(uri: str) -> str:
    """uri with no `user:password@` (a tracking server's credentials belong in MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD, never in a link, an artifact or a Prefect parameter)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def artifact_root(uri: str) -> Path:
    """Artifacts sit beside a SQLite store (mlartifacts/); MLflow's default is relative to the cwd."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return store_root() / "mlartifacts"


def client_for(experiment: str):
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if not uri.startswith("sqlite:///"):  # a tracking server decides where artifacts go
        if found is None:
            mlflow.create_experiment(experiment)
    else:
        wanted = (artifact_root(uri) / experiment).as_uri()
        if found is None:
            mlflow.create_experiment(experiment, artifact_location=wanted)
        elif found.artifact_location != wanted:
            _move_artifact_location(uri, found.experiment_id, wanted)
    mlflow.set_experiment(experiment)
    return mlflow


def _move_artifact_location(uri: str, experiment_id: str, location: str) -> None:
    """Point an experiment of a local SQLite store at the artifact folder beside that store.

    MLflow writes an experiment's artifact location as an absolute path when it creates it and
    offers no API to change it, so a copied or moved checkout would keep writing its artifacts
    into the original's folder. New runs take the location from the experiment; old runs keep theirs.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (location, experiment_id))


