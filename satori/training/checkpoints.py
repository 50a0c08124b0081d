"""Run keys, work folders and checkpoints: a killed run resumes, a changed run starts afresh, a finished one
is not trained again.

The work folder is keyed by everything that decides the run (params, inputs, the code that builds
the command line and computes the rewards).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from satori.core.config import TrainParams, VisionParams
from satori.core.lineage import code_closure

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout: satori/training/checkpoints.py
# The code that decides a run beyond its params: the command line and the reward plugin, with all they import.
RUN_CODE_MODULES = ("satori.training.swift_cli", "satori.rewards.plugin", "satori.training.swift_template")


# A checkpoint is whole once the trainer has written its state (HF Trainer writes it after the weights).
CHECKPOINT_DONE_FILE = "trainer_state.json"


def files_digest(paths: list[Path]) -> str:
    """sha256 over the relative names and contents of every file under paths (folders walked in order)."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def run_code() -> list[Path]:
    """The files of RUN_CODE_MODULES and of every project module they import, in a fixed order."""
    files = set().union(*(code_closure(PACKAGE_ROOT, module) for module in RUN_CODE_MODULES))
    return [PACKAGE_ROOT / rel for rel in sorted(files)]


def run_key(params: TrainParams, vision: VisionParams, inputs: list[Path]) -> str:
    """What decides a training run: the params, the inputs' contents and the reward code. A change starts fresh."""
    decided = {
        "train": params.model_dump(),
        "vision": vision.model_dump(),
        "inputs": files_digest([*inputs, *run_code()]),
    }
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:16]


FINISHED_FILE = "finished"  # in a work folder whose run was exported: nothing left to resume


def prepare_work_dir(work_root: Path, key: str) -> Path:
    """work_root/<key>, kept if it holds an unfinished run (to resume); every other folder is removed.

    A finished run is not resumed (ms-swift would train past max_steps): run again, it starts afresh
    and, being deterministic, reproduces the same model.
    """
    work_root.mkdir(parents=True, exist_ok=True)
    for other in work_root.iterdir():
        if other.name != key or (other / FINISHED_FILE).exists():
            shutil.rmtree(other) if other.is_dir() else other.unlink()
    work = work_root / key
    work.mkdir(exist_ok=True)
    return work


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def resumable_checkpoint(output_dir: Path) -> Path | None:
    """The newest whole checkpoint; a half-written one (killed while saving) is removed."""
    for checkpoint in reversed(checkpoints(output_dir)):
        if (checkpoint / CHECKPOINT_DONE_FILE).is_file():
            return checkpoint
        shutil.rmtree(checkpoint)
    return None


def training_finished(checkpoint: Path) -> bool:
    """Whether the trainer had reached its last step when it saved this checkpoint (trainer_state.json).

    A run whose training finished but whose export (or a later step) failed is exported on the retry,
    not resumed: resuming a finished checkpoint makes ms-swift train one step past max_steps.
    """
    state = json.loads((checkpoint / CHECKPOINT_DONE_FILE).read_text(encoding="utf-8"))
    return int(state.get("max_steps") or 0) > 0 and int(state["global_step"]) >= int(state["max_steps"])


def last_checkpoint(output_dir: Path) -> Path:
    found = checkpoints(output_dir)
    if not found:
        raise FileNotFoundError(f"swift rlhf wrote no checkpoint-* under {output_dir}")
    return found[-1]
