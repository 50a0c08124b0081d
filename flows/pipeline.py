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
import contextlib
import fcntl
import itertools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

from satori import tracking  # noqa: E402
from satori.core.config import PARAMS_FILE, ParamsError, load_profile, profile_names, read_params, validate_profile  # noqa: E402
from satori.core.lineage import CODE_REVISION_ENV, code_revision  # noqa: E402
from satori.reports.results import console_table  # noqa: E402
from satori.stage import RESTORE_ONLY_ENV  # noqa: E402
from satori.core.transient import TRANSIENT_MARKER  # noqa: E402

NOTIFY_URL_ENV = "SATORI_NOTIFY_URL"  # an Apprise URL (Slack, e-mail, ...) told of every finished run
RUNS_DIR = ".runs"  # copies of the checkout, one per other profile (git-ignored)
LOCK_FILE = ".satori-run.lock"
STOP_GRACE_S = 10  # after SIGTERM, a stage gets this long to end its MLflow run and clean up
# A split run (gpu_deployment): the flow runs on the cpu pool, the `meta: {pool: gpu}` stages of dvc.yaml in a
# deployment of satori_stages on the gpu pool, in that worker's checkout; outputs move through the DVC remote.
CPU_POOL = "cpu"


class StageError(RuntimeError):
    """A stage failed; retrying would fail the same way."""


class TransientStageError(StageError):
    """A stage failed on the network (its output carries TRANSIENT_MARKER); a retry may succeed."""


class RunLocked(RuntimeError):
    """Another pipeline run holds the folder."""


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


def repro(stage: str, folder: Path, *, pull: bool = False, restore_only: bool = False) -> bool:
    """`dvc repro --single-item STAGE` in folder; True when the stage ran, False when DVC found it up to date.

    pull: what DVC lacks (outputs, and the runs of its run cache) comes from the DVC remote first, so a
    stage another worker ran is restored, not run again; restore_only: the stage must not run here (it
    belongs to another work pool), DVC may only restore it. Its output goes to the Prefect run log line
    by line, as it comes. On SIGTERM/SIGINT the stage gets STOP_GRACE_S seconds to end its MLflow run
    and remove partial outputs, then is killed.
    """
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--pull"] if pull else []), "--single-item", stage]
    env = stage_environment()
    if restore_only:
        env[RESTORE_ONLY_ENV] = "1"
    proc = subprocess.Popen(
        cmd,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopping the flow stops ms-swift's workers too
    )
    logger = get_run_logger()
    output = []
    log_file = folder / ".work" / "logs" / f"{stage}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc, lines), daemon=True).start()
    shown_progress = 0.0
    last_shown = started = time.monotonic()
    try:
        with log_file.open("w", encoding="utf-8") as log:
            while True:
                try:
                    line = lines.get(timeout=1.0)
                except queue.Empty:
                    # Nothing on the console for HEARTBEAT_S (a stage importing ms-swift, loading weights):
                    # a line that says the stage is alive, on the console only.
                    if time.monotonic() - last_shown >= HEARTBEAT_S:
                        last_shown = time.monotonic()
                        logger.info(f"[satori] {stage}: still running ({last_shown - started:.0f} s)",
                                    extra={CONSOLE_DETAIL: False, PROGRESS_ONLY: True})  # fmt: skip
                    continue
                if line is None:
                    break
                log.write(line)
                log.flush()
                output.append(line)
                text = line.rstrip("\n")
                if PROGRESS_BAR.search(text):
                    # Progress stays on the console, a line every PROGRESS_EVERY_S (and the last): never silent
                    # long, never a flood; the run log and .work/logs keep the stage's own lines.
                    now = time.monotonic()
                    if now - shown_progress >= PROGRESS_EVERY_S or text.lstrip().startswith("100%"):
                        shown_progress = last_shown = now
                        logger.info(text.strip(), extra={CONSOLE_DETAIL: False, PROGRESS_ONLY: True})
                    continue
                # Every other line reaches the Prefect run log as it comes; the console shows the stage's own.
                detail = not any(mark in text for mark in CONSOLE_LINES)
                if not detail:
                    last_shown = time.monotonic()
                logger.info(text, extra={CONSOLE_DETAIL: detail})
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        tail = "".join(output[-40:])
        error = TransientStageError if any(TRANSIENT_MARKER in line for line in output) else StageError
        raise error(f"dvc repro {stage} failed with exit code {proc.returncode}:\n{tail}")
    return any(re.search(rf"Running stage '{stage}'", line) for line in output)


# Lines of a stage's output the console shows; all of them go to the Prefect run log and .work/logs/<stage>.log.
CONSOLE_LINES = ("[satori]", "satori: error:", "Running stage", "didn't change, skipping", "ERROR", "Error:", "Traceback")
CONSOLE_DETAIL = "satori_detail"
PROGRESS_ONLY = "satori_progress"  # a progress bar's redraw: the console shows it, the run log does not
# tqdm's bar as ms-swift, transformers and VLMEvalKit print it: " 42%|████      | 21/50 [00:10<00:14, ...]"
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\|\s*\d+/\d+")
PROGRESS_EVERY_S = 5.0
HEARTBEAT_S = 8.0  # the console is never silent longer than this (and a second) while a stage runs


class _HideDetail(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, CONSOLE_DETAIL, False)


class _HideProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, PROGRESS_ONLY, False)


def quiet_console() -> None:
    """Keep stage output lines marked as detail off Prefect's console handlers, and progress-bar redraws off
    the run log that Prefect's API handler sends."""
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    wanted = {PrefectConsoleHandler: _HideDetail, APILogHandler: _HideProgress}
    for logger in (logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("prefect.flow_runs"),
                   logging.getLogger("prefect.task_runs")):  # fmt: skip
        for handler in logger.handlers:
            for kind, hide in wanted.items():
                if isinstance(handler, kind) and not any(isinstance(f, hide) for f in handler.filters):
                    handler.addFilter(hide())


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _read_lines(proc: subprocess.Popen, lines: queue.Queue) -> None:
    """The stage's output, line by line (text mode: a progress bar's every redraw, \\r, is a line), then None."""
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


def run_stage(stage: str, folder: str, split: bool = False, restore_only: bool = False) -> bool:
    ran = repro(stage, Path(folder), pull=True, restore_only=restore_only) if split else repro(stage, Path(folder))
    get_run_logger().info("stage %s %s", stage, "ran" if ran else "was up to date (skipped by DVC)")
    return ran


# Network stages (`meta: {network: true}` in dvc.yaml) retry transient failures with backoff; the rest fail
# fast (a retry would redo hours of work).
NETWORK_RETRIES = dict(retries=3, retry_delay_seconds=[30, 120, 600], retry_condition_fn=retry_if_transient)


def pipeline_stages(folder: Path) -> list[tuple[str, bool]]:
    """The stages of folder's dvc.yaml in an order DVC's graph allows (each after the stages whose outputs
    it reads; ties in the order dvc.yaml lists them), each with whether it is a network stage."""
    from dvc.repo import Repo

    with Repo(str(folder)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage whose output it reads
        listed = list(repo.index.stages)
        waiting = {stage: set(graph.successors(stage)) for stage in listed}
        order = []
        while waiting:
            ready = [stage for stage in listed if stage in waiting and not waiting[stage]]
            if not ready:
                raise ValueError(f"{folder / 'dvc.yaml'}: the stages {sorted(s.name for s in waiting)} form a cycle")
            order.append(ready[0])
            del waiting[ready[0]]
            for needs in waiting.values():
                needs.discard(ready[0])
        return [(stage.name, bool((stage.meta or {}).get("network"))) for stage in order]


def stage_pools(folder: Path) -> dict[str, str]:
    """Each stage of folder's dvc.yaml -> the work pool it runs on in a split run (`meta: {pool: gpu}`;
    the rest: cpu, the pool of the flow itself)."""
    import yaml

    stages = (yaml.safe_load((folder / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    return {name: str((entry.get("meta") or {}).get("pool", CPU_POOL)) for name, entry in stages.items()}


def push_run_cache(folder: Path) -> None:
    """`dvc push --run-cache` to folder's default remote: the outputs and DVC's record of each stage run, so the
    other worker's `dvc repro --pull` restores those stages instead of running them."""
    done = subprocess.run([sys.executable, "-m", "dvc", "push", "--run-cache"], cwd=folder, env=stage_environment(),
                          capture_output=True, text=True)  # fmt: skip
    get_run_logger().info("dvc push --run-cache: %s", " ".join((done.stdout + done.stderr).strip().splitlines()[-1:]))
    if done.returncode != 0:
        raise StageError(
            f"dvc push --run-cache failed in {folder} (a split run moves outputs through the DVC remote: "
            f"`dvc remote add -d NAME URL` in both checkouts):\n{(done.stdout + done.stderr)[-3000:]}"
        )


def stage_task(stage: str, network: bool):
    return task(run_stage, name=stage, **(NETWORK_RETRIES if network else {}))


@contextlib.contextmanager
def run_lock(folder: Path, profile: str) -> Iterator[None]:
    """Hold folder's run lock for the block; raise RunLocked at once if another run holds it."""
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(
            f"another pipeline run ({holder}) is running in {folder}; wait for it to finish, or run another "
            f"profile, which gets a folder of its own"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, profile {profile}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def checkout_files(checkout: Path) -> list[str]:
    """The files of the checkout as git sees them: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=checkout,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [rel for rel in listed.split("\0") if rel and (checkout / rel).is_file()]


def set_profile_line(text: str, name: str) -> str:
    """params.yaml text with its `profile:` line (the one switch) set to name, the rest as written."""
    new_text, count = re.subn(r"(?m)^profile:\s*\S+", f"profile: {name}", text, count=1)
    if count != 1:
        raise ValueError("params.yaml has no top-level 'profile:' line to switch")
    return new_text


def with_overrides(text: str, profile: str, overrides: list[str]) -> str:
    """params.yaml text with `section.key=value` overrides set in the profile (values read as YAML),
    checked as the stages will check them. The file is rewritten whole (anchors expanded)."""
    import yaml

    data = yaml.safe_load(text)
    for override in overrides:
        dotted, sep, value = override.partition("=")
        keys = dotted.strip().split(".")
        if not sep or not all(keys):
            raise ValueError(f"--set {override!r}: expected section.key=value, e.g. train.learning_rate=5e-4")
        node = data[profile]
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ValueError(f"--set {override!r}: profile {profile!r} has no section {key!r}")
            node = node[key]
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", parsed.strip()):
            parsed = float(parsed)  # YAML 1.1 (PyYAML) reads 5e-4 as a string; a user means the number
        node[keys[-1]] = parsed
    try:
        validate_profile(profile, data[profile])
    except ParamsError as err:
        raise ValueError(f"--set {' '.join(overrides)}: {err}") from None
    return yaml.safe_dump(data, sort_keys=False)


def prepare_run_dir(checkout: Path, profile: str, overrides: list[str] | None = None, name: str | None = None) -> Path:
    """checkout/.runs/<name, or profile>: a copy of the checkout's files with that profile active and
    the overrides set in it (see with_overrides).

    Outputs and dvc.lock of earlier runs of the profile stay (DVC re-runs only what changed);
    files whose content did not change are not rewritten. DVC there shares the checkout's cache
    and does not touch git (no_scm): the copy is not a git repository.
    """
    allowed = profile_names(read_params(checkout / PARAMS_FILE))
    if profile not in allowed:
        raise ValueError(f"unknown profile {profile!r}; params.yaml defines {allowed}")
    name = name or profile
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"run folder name {name!r}: use letters, digits, '_', '-' and '.'")
    dest = checkout / RUNS_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    with run_lock(dest, profile):
        for rel in checkout_files(checkout):
            if rel == "dvc.lock" or rel.startswith("reports/"):
                continue  # the results of this checkout's profile, not of this one
            data = (checkout / rel).read_bytes()
            if rel == PARAMS_FILE.as_posix():
                text = set_profile_line(data.decode("utf-8"), profile)
                data = (with_overrides(text, profile, overrides) if overrides else text).encode("utf-8")
            target = dest / rel
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        write_run_dir_config(checkout, dest)
    return dest


def write_run_dir_config(checkout: Path, dest: Path) -> None:
    """dest's .dvc/config.local: the checkout's own (its remotes, say), with the checkout's cache and no git."""
    import configparser

    config = configparser.ConfigParser()
    config.read(checkout / ".dvc" / "config.local", encoding="utf-8")
    config.read_dict({"core": {"no_scm": "true"}, "cache": {"dir": str((checkout / ".dvc" / "cache").resolve())}})
    with (dest / ".dvc" / "config.local").open("w", encoding="utf-8") as f:
        config.write(f)


def evaluation_markdown(profile: str, evaluation: dict, ran: dict[str, bool], run_link: str) -> str:
    """The Prefect artifact of a run: the evaluation table, the MLflow run, what ran and what DVC reused."""
    shown = f"[{run_link}]({run_link})" if run_link.startswith(("http://", "https://")) else run_link
    lines = [f"# SATORI pipeline, profile `{profile}`", "", f"MLflow: {shown}", ""]
    lines += ["| Benchmark | Base | Trained | Δ |", "|---|---:|---:|---:|"]
    for name, row in evaluation.items():
        lines.append(f"| {name} | {100 * row['base']:.1f} | {100 * row['trained']:.1f} | {100 * row['delta']:+.1f} |")
    lines += ["", "| Stage | |", "|---|---|"]
    lines += [f"| {stage} | {'ran' if flag else 'cached (DVC found it up to date)'} |" for stage, flag in ran.items()]
    return "\n".join(lines)


def key_metrics(evaluation: dict) -> str:
    return ", ".join(f"{name} {100 * row['base']:.1f} -> {100 * row['trained']:.1f}" for name, row in evaluation.items())


def notify(flow_, flow_run, state) -> None:
    """Say how the run ended (profile, key metrics or the failure reason), in the Prefect log and through Apprise."""
    profile = (flow_run.parameters or {}).get("profile") or "active"
    message = f"SATORI pipeline run {flow_run.name} (profile {profile}): {state.name}"
    if state.is_failed():
        message += f": {str(state.message)[:500]}"
    else:
        try:
            result = state.result()
            message = f"SATORI pipeline run {flow_run.name} (profile {result['profile']}): {state.name}; "
            message += key_metrics(result["evaluation"])
        except Exception:  # a notification never fails the run
            pass
    print(message)
    url = os.environ.get(NOTIFY_URL_ENV)
    if url:
        import apprise

        sender = apprise.Apprise()
        sender.add(url)
        sender.notify(title="satori-pipeline", body=message)


def run_folder(profile: str | None, overrides: list[str] | None, name: str | None) -> tuple[Path, str, Any, str]:
    """(folder, profile, its params, revision) of a run in this checkout: itself for its active profile, else .runs/<name>."""
    if overrides and not name:
        raise ValueError("a variant (--set) needs --name: the folder under .runs/ it runs in")
    active, _ = load_profile(REPO_ROOT / PARAMS_FILE)
    profile = profile or active
    folder = REPO_ROOT
    if profile != active or overrides or (name and name != profile):
        # This checkout's revision, and its MLflow store: the copy has no git history and would open its own.
        os.environ.setdefault(CODE_REVISION_ENV, code_revision(REPO_ROOT))
        os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
        folder = prepare_run_dir(REPO_ROOT, profile, overrides, name)
    profile, params = load_profile(folder / PARAMS_FILE)
    return folder, profile, params, os.environ.get(CODE_REVISION_ENV) or code_revision(REPO_ROOT)


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
    folder, profile, params, revision = run_folder(profile, overrides, name)
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
                                       tracking_uri=tracking.tracking_uri()))  # fmt: skip
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
    folder, profile, _, _ = run_folder(profile, overrides, name)
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
    if args.overrides and not args.name:
        parser.error("--set needs --name: the folder under .runs/ the variant runs in")
    # SIGTERM (a worker cancelling the run, `kill`) stops the flow like Ctrl-C: the stage is stopped in seconds.
    signal.signal(signal.SIGTERM, _interrupt)
    result = satori_pipeline(profile=args.profile, overrides=args.overrides, name=args.name)
    print(json.dumps(result, indent=2))
    print("\n" + console_table(result["evaluation"]))


if __name__ == "__main__":
    main()
