"""MLflow, behind one small module.

One parent run per pipeline run (opened by the driver, `flows/pipeline.py`),
one child run per stage. A stage runs in its own process (DVC starts it), so
the parent's id travels in SATORI_PARENT_RUN_ID and the child is tied to it
with the `mlflow.parentRunId` tag. A stage run by hand, with no parent, is a
top-level run of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from satori.core.config import REPO_ROOT

PARENT_RUN_ENV = "SATORI_PARENT_RUN_ID"
STAGE_TAG = "satori.stage"
PROFILE_TAG = "satori.profile"
PID_TAG = "satori.pid"
HOST_TAG = "satori.host"
CODE_TAG = "satori.code_revision"
PARAMS_HASH_TAG = "satori.params_hash"
DVC_EXP_TAG = "satori.dvc_experiment"
OUTPUTS_TAG = "satori.outputs_md5"  # what the stage's outputs hash to in dvc.lock
CACHED_TAG = "satori.cached"
PIPELINE_TAG = "satori.pipeline"  # on parent runs
VARIANT_TAG = "satori.variant"  # on parent runs of a variant: its --set overrides
PRODUCED_BY_TAG = "satori.produced_by"
LAUNCHED_BY_TAG = "satori.launched_by"  # on parent runs: flow, flow variant, prefect deployment, dvc repro, dvc exp run
LAUNCH_TAG = "satori.launch"  # on parent runs opened for a DVC command: host, pid and start of that dvc process
RAN_TAG = "satori.ran"  # on parent runs: the stages that ran, comma-separated, or "none"
# Stages that keep no MLflow run of their own: watch_mirrors runs on every repro (a plain `dvc repro` would add
# a run each time), record_run writes to the pipeline run itself.
NO_RUN_STAGES = ("watch_mirrors", "record_run")


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


def artifact_root(uri: str) -> Path:
    """Artifacts sit beside a SQLite store (mlartifacts/); MLflow's default is relative to the cwd."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return store_root() / "mlartifacts"


def _client_for(experiment: str):
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
    mlflow = _client_for(experiment)
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


def params_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_tags(profile: str, params: Mapping[str, Any], code_revision: str) -> dict[str, str]:
    tags = {PROFILE_TAG: profile, CODE_TAG: code_revision, PARAMS_HASH_TAG: params_hash(params)}
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
        tags[DVC_EXP_TAG] = os.environ["DVC_EXP_NAME"]
    return tags


def parent_tags(
    profile: str, params: Mapping[str, Any], code_revision: str, source: str, launched_by: str
) -> dict[str, str]:
    """The tags of a pipeline run: profile, code, params hash, how it was launched, and MLflow's own source
    tags (a run started by a Prefect worker would otherwise name `prefect/engine.py` and no commit)."""
    tags = {
        **run_tags(profile, params, code_revision),
        PIPELINE_TAG: "true",
        LAUNCHED_BY_TAG: launched_by,
        "mlflow.source.name": source,
        "mlflow.source.type": "LOCAL",
    }
    commit = code_revision.removesuffix("-dirty")
    if re.fullmatch(r"[0-9a-f]{40}", commit):
        tags["mlflow.source.git.commit"] = commit
    return tags


def dvc_launch() -> str:
    """How DVC started the stages of a pipeline run that no flow opened."""
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
        return "dvc exp run --temp" if store_root() != REPO_ROOT else "dvc exp run"
    return "dvc repro"


def _record_cached(client, experiment_id: str, parent_id: str, stage: str, outputs_hash: str | None) -> None:
    """A child run of the pipeline run for a stage DVC skipped, tagged cached, naming (and linking) the run
    that produced the outputs it reused, found by their hash."""
    producer = None
    if outputs_hash:
        query = f"tags.`{STAGE_TAG}` = '{stage}' and tags.`{OUTPUTS_TAG}` = '{outputs_hash}'"
        found = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"])
        producer = found[0] if found else None
    note = f"DVC found `{stage}` up to date and skipped it."
    if producer:
        link = f"#/experiments/{experiment_id}/runs/{producer.info.run_id}"
        note += f" Its outputs were produced by run [{producer.info.run_name}]({link})."
    tags = {
        "mlflow.parentRunId": parent_id,
        STAGE_TAG: stage,
        CACHED_TAG: "true",
        OUTPUTS_TAG: outputs_hash or "",
        PRODUCED_BY_TAG: producer.info.run_id if producer else "unknown",
        "mlflow.note.content": note,
    }
    run = client.create_run(experiment_id, run_name=f"{stage} (cached)", tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")


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
    mlflow = _client_for(experiment)
    _end_orphans(mlflow, experiment, stage)
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
            return f"{socket.gethostname()}:{process.pid}:{started:.2f}:{os.environ.get('DVC_EXP_NAME', '')}"
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


def _end_orphans(mlflow, experiment_name: str, stage: str) -> None:
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
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return f"run `{run.info.run_name}` ({run_id}); open with `mlflow ui --backend-store-uri {uri}`"


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


def record_pipeline_run(
    experiment: str,
    profile: str,
    stages: list[str],
    outputs: Mapping[str, str | None],
    summary: Mapping[str, Any],
    curves: Path | None,
) -> str | None:
    """Bring the pipeline run's parent up to date once its last stage has run, however it was launched.

    Its child runs say which stages ran; a stage DVC found up to date (or restored from its run cache) gets
    a child tagged cached that links the run which produced its outputs (found by `outputs`, each stage's
    outputs hash in dvc.lock), unless nothing ran at all: then the parent alone says so. The parent gets
    the summary metrics (evaluation, training), the reward curves and which stages ran. Returns its id,
    None for stages run by hand (no pipeline run).
    """
    import mlflow

    _client_for(experiment)
    parent_id = os.environ.get(PARENT_RUN_ENV) or launch_parent(experiment, profile)
    if parent_id is None:
        return None
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    ran_runs = stage_children(parent_id)
    ran = {stage: stage in ran_runs for stage in stages}
    if any(ran.values()):
        for stage in stages:
            if ran[stage]:  # tagged with the hash of its outputs, so a later run that reuses them links it
                client.set_tag(ran_runs[stage].info.run_id, OUTPUTS_TAG, outputs.get(stage) or "")
            else:
                _record_cached(client, experiment_id, parent_id, stage, outputs.get(stage))
    else:
        note = "Nothing ran: DVC found every stage up to date (or restored it from its run cache)."
        client.set_tag(parent_id, "mlflow.note.content", note)
    client.set_tag(parent_id, RAN_TAG, ",".join(s for s in stages if ran[s]) or "none")
    points = [(0, {**summary, "ran": {stage: int(flag) for stage, flag in ran.items()}})]
    if curves is not None and curves.exists():
        points += curve_points(curves, "train")
    log_to_run(parent_id, points)
    return parent_id


def stage_children(parent_id: str) -> dict[str, Any]:
    """The stages that ran under a pipeline run, each its latest child run (a stage's run is a child once the
    stage ran; a `(cached)` child says DVC reused it)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
    children = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"])
    return {run.data.tags.get(STAGE_TAG): run for run in children if run.data.tags.get(CACHED_TAG) != "true"}


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
