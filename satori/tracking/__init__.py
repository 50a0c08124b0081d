"""MLflow, behind one small API: what the stages and the flow record. Infrastructure (satori.core.lineage):
it records and cannot change an output, so it is in no stage's code.

One parent run per pipeline run (opened by the driver, `flows/pipeline.py`, or for a `dvc repro` by the
first stage it launches), one child run per stage. A stage runs in its own process (DVC starts it), so
the parent's id travels in SATORI_PARENT_RUN_ID and the child is tied to it with the `mlflow.parentRunId`
tag. A stage run by hand, with no parent, is a top-level run of its own.
"""

from satori.tracking.pipeline_record import record_pipeline_run, stage_children
from satori.tracking.records import (
    curve_points,
    log_artifact,
    log_datasets,
    log_image,
    log_metrics,
    log_to_run,
    logged_steps,
    metric_values,
    register_model,
    run_link,
    say,
)
from satori.tracking.runs import pipeline_run, stage_run
from satori.tracking.store import store_root, tracking_uri, without_credentials
from satori.tracking.tags import NO_RUN_STAGES, PARENT_RUN_ENV, VARIANT_TAG, flatten

__all__ = [
    "NO_RUN_STAGES", "PARENT_RUN_ENV", "VARIANT_TAG", "curve_points", "flatten", "log_artifact", "log_datasets",
    "log_image", "log_metrics", "log_to_run", "logged_steps", "metric_values", "pipeline_run", "record_pipeline_run",
    "register_model", "run_link", "say", "stage_children", "stage_run", "store_root", "tracking_uri",
    "without_credentials",
]  # fmt: skip
