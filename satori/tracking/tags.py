"""What the runs are tagged and logged with: the satori.* tags, params flattened to dotted keys, their hash."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from satori.core.config import REPO_ROOT
from satori.tracking.store import store_root

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
LAUNCH_TAG = "satori.launch"  # on parent runs opened for a DVC command: "dvc pid P on HOST, started T[, experiment E]"
RAN_TAG = "satori.ran"  # on parent runs: the stages that ran, comma-separated, or "none"
# Stages that keep no MLflow run of their own: watch_mirrors runs on every repro (a plain `dvc repro` would add
# a run each time), record_run writes to the pipeline run itself.
NO_RUN_STAGES = ("watch_mirrors", "record_run")

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


