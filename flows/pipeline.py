"""The SATORI pipeline as a Prefect flow: one task per DVC stage, in order.

The flow is thin. Each task is `dvc repro --single-item <stage>`, so DVC
decides what is stale and the stages themselves know nothing of Prefect;
Prefect adds retries (download, publish), a schedule (prefect.yaml) and
notifications. The flow opens the MLflow parent run that every stage's
child run hangs under.

    python -m flows.pipeline                   # the active profile of params.yaml
    python -m flows.pipeline --profile paper   # switch params.yaml's profile first
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Prefect keeps its local database under PREFECT_HOME; keep it in the project, not in ~.
os.environ.setdefault("PREFECT_HOME", str(REPO_ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, get_run_logger, task  # noqa: E402

from stages import tracking  # noqa: E402
from stages.config import PARAMS_FILE, load_profile, profile_names, read_params  # noqa: E402
from stages.transient import TRANSIENT_MARKER  # noqa: E402

STAGES = ("download", "preprocess", "train", "evaluate", "publish")
NOTIFY_URL_ENV = "SATORI_NOTIFY_URL"  # an Apprise URL (Slack, e-mail, ...) told of every finished run


class StageError(RuntimeError):
    """A stage failed; retrying would fail the same way."""


class TransientStageError(StageError):
    """A stage failed on the network (its output carries TRANSIENT_MARKER); a retry may succeed."""


def retry_if_transient(task_, task_run, state) -> bool:
    """Prefect retry condition: retry only failures a later attempt may cure."""
    try:
        state.result()
    except TransientStageError:
        return True
    except Exception:
        return False
    return False


def stage_environment() -> dict[str, str]:
    """The caller's environment, with this interpreter's bin first so dvc.yaml's `python` is the venv's."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def repro(stage: str) -> bool:
    """`dvc repro --single-item STAGE`; True when the stage ran, False when DVC found it up to date."""
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=stage_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in proc.stdout:
        sys.stdout.write(line)
        output.append(line)
    if proc.wait() != 0:
        tail = "".join(output[-40:])
        error = TransientStageError if any(TRANSIENT_MARKER in line for line in output) else StageError
        raise error(f"dvc repro {stage} failed with exit code {proc.returncode}:\n{tail}")
    return any(re.search(rf"Running stage '{stage}'", line) for line in output)


def run_stage(stage: str) -> bool:
    ran = repro(stage)
    get_run_logger().info("stage %s %s", stage, "ran" if ran else "was up to date (skipped by DVC)")
    return ran


# Network stages retry transient failures with backoff; the rest fail fast (a retry would redo hours of work).
NETWORK_RETRIES = dict(retries=3, retry_delay_seconds=[30, 120, 600], retry_condition_fn=retry_if_transient)
download = task(run_stage, name="download", **NETWORK_RETRIES)
preprocess = task(run_stage, name="preprocess")
train = task(run_stage, name="train")
evaluate = task(run_stage, name="evaluate")
publish = task(run_stage, name="publish", **NETWORK_RETRIES)
TASKS = {"download": download, "preprocess": preprocess, "train": train, "evaluate": evaluate, "publish": publish}


def set_profile(name: str, params_file: Path = PARAMS_FILE) -> None:
    """Set params.yaml's `profile:` line (the one switch), keeping the rest of the file as written."""
    allowed = profile_names(read_params(params_file))
    if name not in allowed:
        raise ValueError(f"unknown profile {name!r}; params.yaml defines {allowed}")
    text = params_file.read_text(encoding="utf-8")
    new_text, count = re.subn(r"(?m)^profile:\s*\S+", f"profile: {name}", text, count=1)
    if count != 1:
        raise ValueError(f"{params_file} has no top-level 'profile:' line to switch")
    params_file.write_text(new_text, encoding="utf-8")


def notify(flow_, flow_run, state) -> None:
    """Say how the run ended, in the Prefect log and, if configured, through Apprise."""
    message = f"SATORI pipeline run {flow_run.name}: {state.name}"
    print(message)
    url = os.environ.get(NOTIFY_URL_ENV)
    if url:
        import apprise

        sender = apprise.Apprise()
        sender.add(url)
        sender.notify(title="satori-pipeline", body=message)


@flow(name="satori-pipeline", on_completion=[notify], on_failure=[notify])
def satori_pipeline(profile: str | None = None) -> dict:
    """Run every stage in order under one MLflow parent run; returns what ran and the evaluation."""
    if profile is not None:
        set_profile(profile)
    name, active = load_profile()
    with tracking.pipeline_run(active.mlflow_experiment, name) as run_id:
        ran = {stage: TASKS[stage](stage) for stage in STAGES}
        evaluation_file = REPO_ROOT / "reports" / "evaluate.json"
        evaluation = json.loads(evaluation_file.read_text(encoding="utf-8"))
        tracking.log_metrics({**evaluation, "ran": {stage: int(flag) for stage, flag in ran.items()}})
    return {"mlflow_run_id": run_id, "profile": name, "ran": ran, "evaluation": evaluation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help="switch params.yaml to this profile before running")
    args = parser.parse_args()
    result = satori_pipeline(profile=args.profile)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
