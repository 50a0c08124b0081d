"""Running `swift rlhf` and reading what it logs (logging.jsonl, one record per step).

The CLI runs in a subprocess, the way the published recipe runs it: with NPROC_PER_NODE > 1
ms-swift re-launches itself under torch.distributed.run, so one code path serves one CPU process
and N GPUs (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from satori.core.reward_registry import REWARD_CLASSES, REWARD_LABELS

# What ms-swift writes in its output folder: per-step records, and the rollouts (--log_completions).
LOGGING_FILE = "logging.jsonl"
COMPLETIONS_FILE = "completions.jsonl"


# Lines of ms-swift's output the console shows; everything goes to the log file.
_CONSOLE_MARKERS = ("{'loss'", "{'reward'", "Train:", "Val:", "Error", "error:", "Traceback", "last_model_checkpoint")


def run_swift(argv: list[str], env: dict[str, str], log_file: Path, on_output: Callable[[], None]) -> None:
    """`swift rlhf ARGV`, its output in log_file (appended: a resumed run keeps the killed one's log).

    The console gets progress and per-step lines only; on_output is called after each line.
    """
    cmd = [sys.executable, "-m", "swift.cli.main", "rlhf", *argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                log.write(line)
                if any(marker in line for marker in _CONSOLE_MARKERS):
                    sys.stdout.write(line)
                    sys.stdout.flush()
                on_output()
            code = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        tail = "".join(log_file.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"swift rlhf exited with {code}; see {log_file}. Last lines:\n{tail}")


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """Per-step training records of ms-swift's logging.jsonl, one per step (a resumed step: its last record)."""
    path = output_dir / LOGGING_FILE
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run may be cut
            continue
        if "reward" in record and "global_step/max_steps" in record:
            by_step[step_of(record)] = record
    return [by_step[step] for step in sorted(by_step)]


def step_of(record: dict[str, Any]) -> int:
    return int(str(record["global_step/max_steps"]).split("/")[0])


def step_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one logging.jsonl record that are about the model, not the clock; a reward's keys by the
    name a user reads (`rewards/<ClassName>/mean`, as ms-swift logs it, becomes `rewards/<label>/mean`)."""
    skip = ("global_step/max_steps", "elapsed_time", "remaining_time", "memory(GiB)", "train_speed(iter/s)")
    labels = {REWARD_CLASSES[name]: label for name, label in REWARD_LABELS.items()}
    metrics = {}
    for key, value in record.items():
        if key in skip or not isinstance(value, (int, float)):
            continue
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "rewards" and parts[1] in labels:
            key = f"rewards/{labels[parts[1]]}/{parts[2]}"
        metrics[key] = float(value)
    return metrics
