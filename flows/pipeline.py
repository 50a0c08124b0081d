"""The SATORI pipeline as a Prefect flow: one task per DVC stage, in order.

The flow is thin. Each task is `dvc repro --single-item <stage>`, so DVC decides what is stale
and the stages know nothing of Prefect; Prefect adds retries (the network stages), a schedule
(prefect.yaml), the run log and notifications. The flow opens the MLflow parent run that every
stage's child run hangs under.

    python -m flows.pipeline                   # the active profile of params.yaml, in this checkout
    python -m flows.pipeline --profile paper   # another profile, in .runs/paper (a copy of this checkout)
    python -m flows.pipeline --set train.reward_control=invert --name control
                                               # a variant of a profile, in .runs/control

Running a profile never edits a tracked file: another profile than the active one runs in its
own copy of the checkout under .runs/<profile>/, with its own outputs and dvc.lock and the DVC
cache shared, so it never deletes this checkout's outputs. A variant (--set) runs in its own copy
too, the changed params written there only; the stages its changes do not reach come from DVC's
run cache, not from a new run. One run at a time per folder: a second one fails at once, before
touching anything.
"""


from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Prefect keeps its local database under PREFECT_HOME; keep it in the project, not in ~.
os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect waits 20 s for the temporary server a flow run starts when no API URL is set, which a busy
# machine can take longer than ("Timed out while attempting to connect to ephemeral Prefect API server").
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import deployment  # noqa: E402

from flows.console import quiet_console  # noqa: E402
from flows.dvc_graph import CPU_POOL, pipeline_stages, push_run_cache, stage_pools  # noqa: E402
from flows.report import evaluation_markdown, notify  # noqa: E402
from flows.stage_runner import StageError, TransientStageError, repro  # noqa: E402
from satori import tracking  # noqa: E402
from satori.core.config import PARAMS_FILE, read_params  # noqa: E402
from satori.core.lineage import CODE_REVISION_ENV, code_revision  # noqa: E402
from satori.reports.results import console_table  # noqa: E402
from satori.run_folders import check_run_request, run_folder, run_lock  # noqa: E402
from satori.stage import run_main  # noqa: E402


# What `python -m flows.pipeline` returns (MLflow run, profile, folder, which stages ran, the evaluation), in the
# run's folder (git-ignored scratch): the console shows the table only.
RUN_SUMMARY = Path(".work") / "last_run.json"


def retry_if_transient(task_, task_run, state) -> bool:
    """Prefect retry condition: retry only failures a later attempt may cure."""
    try:
        state.result()
    except TransientStageError:
        return True
    except Exception:
        return False
    return False


def run_stage(stage: str, folder: str, split: bool = False, restore_only: bool = False) -> bool:
    ran = repro(stage, Path(folder), pull=True, restore_only=restore_only) if split else repro(stage, Path(folder))
    get_run_logger().info("stage %s %s", stage, "ran" if ran else "was up to date (skipped by DVC)")
    return ran


# Network stages (`meta: {network: true}` in dvc.yaml) retry transient failures with backoff; the rest fail
# fast (a retry would redo hours of work).
NETWORK_RETRIES = dict(retries=3, retry_delay_seconds=[30, 120, 600], retry_condition_fn=retry_if_transient)


def stage_task(stage: str, network: bool):
    return task(run_stage, name=stage, **(NETWORK_RETRIES if network else {}))


def run_on_pool(deployment_name: str, stages: list[str], **parameters) -> dict[str, bool]:
    """The stages, run by the deployment (of satori_stages) on its work pool's worker; waits for it to end.
    Returns which of them ran there (a child of the parent MLflow run each), which were up to date."""
    from prefect.deployments import run_deployment

    get_run_logger().info("stages %s: on deployment %s", ", ".join(stages), deployment_name)
    flow_run = run_deployment(deployment_name, parameters={"stages": stages, **parameters}, timeout=None)
    if not flow_run.state.is_completed():
        raise StageError(
            f"stages {', '.join(stages)} on deployment {deployment_name}: flow run {flow_run.name} ended "
            f"{flow_run.state.name}: {flow_run.state.message}"
        )
    ran = tracking.stage_children(parameters["parent_run_id"])
    return {stage: stage in ran for stage in stages}


@flow(name="satori-pipeline", on_completion=[notify], on_failure=[notify])
def satori_pipeline(
    profile: str | None = None, overrides: list[str] | None = None, name: str | None = None,
    gpu_deployment: str | None = None,
) -> dict:  # fmt: skip
    """Run every stage in order under one MLflow parent run; returns what ran and the evaluation.

    overrides (`section.key=value`) make a variant of the profile, run in .runs/<name>. gpu_deployment
    (`satori-stages/<deployment>`, on another work pool): a split run; the `meta: {pool: gpu}` stages of
    dvc.yaml run there, in that worker's checkout, the outputs moving through the DVC remote."""
    folder, profile, params, revision = run_folder(REPO_ROOT, profile, overrides, name)
    logged = read_params(folder / PARAMS_FILE)[profile]
    name = name or profile
    tags = {tracking.VARIANT_TAG: " ".join(overrides)} if overrides else {}
    launched = "prefect deployment" if deployment.id else "flow variant" if overrides else "flow"
    pools = stage_pools(folder) if gpu_deployment else {}
    with (
        run_lock(folder, profile),
        tracking.pipeline_run(params.mlflow_experiment, profile, logged, revision, tags, name, launched) as run_id,
    ):
        quiet_console()
        ran: dict[str, bool] = {}
        stages = pipeline_stages(folder)
        # The last stage, record_run, brings this parent run up to date (metrics, curves, the stages DVC reused).
        for index, (stage, network) in enumerate(stages):
            pool = pools.get(stage, CPU_POOL)
            if pool != CPU_POOL and stage not in ran:
                # This stage and the next ones of its pool run on that pool's worker; here they are only restored.
                segment = list(itertools.takewhile(lambda s: pools.get(s, CPU_POOL) == pool, [s for s, _ in stages[index:]]))
                push_run_cache(folder)
                ran.update(run_on_pool(gpu_deployment, segment, profile=profile, overrides=overrides, name=name,
                                       parent_run_id=run_id, revision=revision,
                                       tracking_uri=tracking.without_credentials(tracking.tracking_uri())))  # fmt: skip
            if gpu_deployment:
                here = stage_task(stage, network)(stage, str(folder), split=True, restore_only=pool != CPU_POOL)
                ran.setdefault(stage, here)
            else:
                ran[stage] = stage_task(stage, network)(stage, str(folder))
            stage_log = folder / ".work" / "logs" / f"{stage}.log"
            if stage_log.exists():
                tracking.log_artifact(stage_log, "logs")
        evaluation = json.loads((folder / "reports" / "evaluate.json").read_text(encoding="utf-8"))
        link = tracking.run_link(run_id)
    key = "satori-" + re.sub(r"[^a-z0-9-]", "-", name.lower())  # Prefect artifact keys: lowercase, digits, dashes
    create_markdown_artifact(evaluation_markdown(name, evaluation, ran, link), key=key)
    return {"mlflow_run_id": run_id, "profile": profile, "name": name, "folder": str(folder), "ran": ran,
            "evaluation": evaluation}  # fmt: skip


@flow(name="satori-stages")
def satori_stages(
    stages: list[str], parent_run_id: str, revision: str, tracking_uri: str, profile: str | None = None,
    overrides: list[str] | None = None, name: str | None = None,
) -> None:  # fmt: skip
    """A split run's stages on this worker (satori_pipeline's gpu_deployment), in this worker's checkout: the
    stages before them restored from the DVC remote (never run here), theirs run as children of the
    parent MLflow run, then everything pushed back."""
    here = os.environ.get(CODE_REVISION_ENV) or code_revision(REPO_ROOT)
    if here != revision:
        raise StageError(
            f"this worker's checkout ({REPO_ROOT}) is at {here}, the run at {revision}: check out the same "
            f"commit on every worker (git pull), or DVC would find other stages than the run's"
        )
    os.environ.update({CODE_REVISION_ENV: revision, "MLFLOW_TRACKING_URI": tracking_uri,
                       tracking.PARENT_RUN_ENV: parent_run_id})  # fmt: skip
    folder, profile, _, _ = run_folder(REPO_ROOT, profile, overrides, name)
    listed = pipeline_stages(folder)
    order = [stage for stage, _ in listed]
    unknown = sorted(set(stages) - set(order))
    if unknown:
        raise ValueError(f"{folder / 'dvc.yaml'} has no stage(s) {unknown}")
    last = max(order.index(stage) for stage in stages)
    with run_lock(folder, profile):
        quiet_console()
        for stage, network in listed[: last + 1]:
            restore = stage not in stages and stage not in tracking.NO_RUN_STAGES
            stage_task(stage, network)(stage, str(folder), split=True, restore_only=restore)
        push_run_cache(folder)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="run this profile (another than params.yaml's runs in .runs/<profile>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a variant: set this param of the profile (repeatable), in .runs/<name> only")  # fmt: skip
    parser.add_argument("--name", help="the variant's folder under .runs/ and its MLflow run name")
    args = parser.parse_args()
    # A bad --profile, --set or --name stops here: one `satori: error:` line, exit 2, before Prefect starts.
    run_main(lambda: check_run_request(REPO_ROOT, args.profile, args.overrides, args.name))
    # SIGTERM (a worker cancelling the run, `kill`) stops the flow like Ctrl-C: the stage is stopped in seconds.
    signal.signal(signal.SIGTERM, _interrupt)
    result = satori_pipeline(profile=args.profile, overrides=args.overrides, name=args.name)
    # The console ends with the table; the run's summary (MLflow run, what ran, the scores) goes to a file.
    summary = Path(result["folder"]) / RUN_SUMMARY
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nThe run's summary: {summary}\n\n" + console_table(result["evaluation"]))


if __name__ == "__main__":
    main()
