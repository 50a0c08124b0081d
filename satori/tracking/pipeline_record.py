"""record_run's bookkeeping: the parent run brought up to date (metrics, curves, the stages that ran), and a child
for each stage DVC reused, linking the run that produced its outputs."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from satori.tracking.dvc_launch import launch_parent
from satori.tracking.records import curve_points, log_to_run
from satori.tracking.store import client_for
from satori.tracking.tags import CACHED_TAG, OUTPUTS_TAG, PARENT_RUN_ENV, PRODUCED_BY_TAG, RAN_TAG, STAGE_TAG


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

    client_for(experiment)
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
    client.set_tag(parent_id, RAN_TAG, ",".join(s for s in stages if ran[s]) or "none")
    client.set_tag(parent_id, "mlflow.note.content", description(summary, [s for s in stages if ran[s]]))
    points = [(0, dict(summary))]
    if curves is not None and curves.exists():
        points += curve_points(curves, "train")
    log_to_run(parent_id, points)
    parent = client.get_run(parent_id).info
    if parent.status != "RUNNING":
        # Opened and ended by a `dvc repro`'s first stage (no flow holds it open): it ends with its last stage.
        client.set_terminated(parent_id, parent.status, end_time=int(time.time() * 1000))
    return parent_id


def description(summary: Mapping[str, Any], ran: list[str]) -> str:
    """The parent run's description (MLflow's note): each benchmark's accuracy, base -> trained, and what ran."""
    scores = [f"{name} {100 * row['base']:.1f} -> {100 * row['trained']:.1f}" for name, row in summary.items()
              if isinstance(row, Mapping) and {"base", "trained"} <= set(row)]  # fmt: skip
    text = ("Accuracy (%), base -> trained: " + ", ".join(scores) + ". ") if scores else ""
    if ran:
        return text + f"Ran: {', '.join(ran)}; the other stages DVC reused."
    return text + "Nothing ran: DVC found every stage up to date (or restored it from its run cache)."


def stage_children(parent_id: str) -> dict[str, Any]:
    """The stages that ran under a pipeline run, each its latest child run (a stage's run is a child once the
    stage ran; a `(cached)` child says DVC reused it)."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_id}'"
    children = client.search_runs([experiment_id], query, order_by=["attributes.start_time ASC"])
    return {run.data.tags.get(STAGE_TAG): run for run in children if run.data.tags.get(CACHED_TAG) != "true"}


