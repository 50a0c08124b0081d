"""The stage runner: one DVC stage, `dvc repro --single-item`, its output streamed line by line to the run log
as it comes, stopped within seconds on SIGTERM, its failure classed (transient: a retry may cure it)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect import get_run_logger

from flows import console
from satori.core.transient import TRANSIENT_MARKER
from satori.stage import RESTORE_ONLY_ENV

STOP_GRACE_S = 10  # after SIGTERM, a stage gets this long to end its MLflow run and clean up


class StageError(RuntimeError):
    """A stage failed; retrying would fail the same way."""


class TransientStageError(StageError):
    """A stage failed on the network (its output carries TRANSIENT_MARKER); a retry may succeed."""



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
                    # Nothing on the console for console.HEARTBEAT_S (a stage importing ms-swift, loading weights):
                    # a line that says the stage is alive, on the console only.
                    if time.monotonic() - last_shown >= console.HEARTBEAT_S:
                        last_shown = time.monotonic()
                        logger.info(f"[satori] {stage}: still running ({last_shown - started:.0f} s)",
                                    extra={console.CONSOLE_DETAIL: False, console.PROGRESS_ONLY: True})  # fmt: skip
                    continue
                if line is None:
                    break
                log.write(line)
                log.flush()
                output.append(line)
                text = line.rstrip("\n")
                if console.PROGRESS_BAR.search(text):
                    # Progress stays on the console, a line every console.PROGRESS_EVERY_S (and the last): never silent
                    # long, never a flood; the run log and .work/logs keep the stage's own lines.
                    now = time.monotonic()
                    if now - shown_progress >= console.PROGRESS_EVERY_S or text.lstrip().startswith("100%"):
                        shown_progress = last_shown = now
                        logger.info(text.strip(), extra={console.CONSOLE_DETAIL: False, console.PROGRESS_ONLY: True})
                    continue
                # Every other line reaches the Prefect run log as it comes; the console shows the stage's own.
                detail = not any(mark in text for mark in console.CONSOLE_LINES)
                if not detail:
                    last_shown = time.monotonic()
                logger.info(text, extra={console.CONSOLE_DETAIL: detail})
        proc.wait()
    except BaseException:
        _stop(proc)
        raise
    if proc.returncode != 0:
        tail = "".join(output[-40:])
        error = TransientStageError if any(TRANSIENT_MARKER in line for line in output) else StageError
        raise error(f"dvc repro {stage} failed with exit code {proc.returncode}:\n{tail}")
    return any(re.search(rf"Running stage '{stage}'", line) for line in output)


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


