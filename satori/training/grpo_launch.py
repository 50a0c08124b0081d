"""Launch: the train stage's GRPO run, from its params and inputs, resumed where a killed run left off.

`prepare` decides the run before any MLflow run opens: its key, its work folder, the checkpoint to
resume from, the command line (checked by ms-swift's own parser) and the MLflow run to continue.
`train` runs ms-swift and logs each step once, across resumes; a run whose training had finished
(its export failed, say) is not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from satori import tracking
from satori.training.checkpoints import FINISHED_FILE, prepare_work_dir, resumable_checkpoint, run_key, training_finished
from satori.core.config import SPLIT_SIZE_KEYS, SPLITS, TrainParams, VisionParams, check_split_sizes
from satori.core.errors import InputError
from satori.core.lineage import stage_command
from satori.training.reward_curves import reward_table
from satori.core.reward_registry import REWARD_LABELS
from satori.training.swift_cli import NODE_RANK_ENV, TrainConfigError, check_swift_arguments, swift_arguments, swift_environment
from satori.training.swift_run import read_log_history, run_swift, step_metrics, step_of

RUN_ID_FILE = "mlflow_run_id"  # in the work folder: a resumed run continues the killed run's MLflow history
SWIFT_OUTPUT = "swift_output"  # ms-swift's --output_dir, in the work folder
SWIFT_LOG = "swift.log"  # everything ms-swift printed, in the work folder


@dataclasses.dataclass(frozen=True)
class Launch:
    params: TrainParams
    vision: VisionParams
    key: str
    work: Path
    resume: Path | None  # the newest whole checkpoint of a killed run
    trained: bool  # that checkpoint is the last step: export it, train no more
    cuda: bool
    argv: list[str]
    env: dict[str, str]  # ms-swift's environment on this machine (its node rank among train.nnodes)
    previous_run_id: str | None  # the killed run's MLflow run, continued

    @property
    def output_dir(self) -> Path:
        return self.work / SWIFT_OUTPUT

    @property
    def log_file(self) -> Path:
        return self.work / SWIFT_LOG


def prepare(params: TrainParams, vision: VisionParams, work_root: Path, *, data: Path, raw: Path, base_model: Path,
            prompt: Path, node_rank: int = 0) -> Launch:  # fmt: skip
    """node_rank 0: the train stage; 1 and up: a worker machine of a train.nnodes > 1 run."""
    import torch

    # The splits against the batches, in seconds, before the model loads (preprocess checked them too).
    rows = [sum(1 for _ in (data / f"{split}.jsonl").open(encoding="utf-8")) for split in SPLITS]
    check_split_sizes(*rows, **{key: getattr(params, key) for key in SPLIT_SIZE_KEYS})
    cuda = torch.cuda.is_available()
    key = run_key(params, vision, [data, raw, base_model, prompt])
    work = prepare_work_dir(work_root, key)
    output_dir = work / SWIFT_OUTPUT
    resume = resumable_checkpoint(output_dir) if output_dir.exists() else None
    if resume is not None and params.nnodes > 1 and not training_finished(resume):
        # Only node 0 saves checkpoints, so the other machines cannot resume with it: every node starts afresh.
        tracking.say(f"a killed {params.nnodes}-machine run is not resumed ({resume.name} is on node 0 only): starting afresh")
        resume = None
    if resume is None:  # killed before its first checkpoint: nothing to resume, and its logs are not this run's
        shutil.rmtree(output_dir, ignore_errors=True)
    argv = swift_arguments(
        params,
        model_dir=base_model.resolve(),
        train_file=(work / "train.jsonl").resolve(),
        val_file=(work / "val.jsonl").resolve(),
        output_dir=output_dir.resolve(),
        prompt_file=prompt.resolve(),
        cuda=cuda,
        resume_from=resume.resolve() if resume else None,
    )
    check_swift_arguments(argv, params.extra_args)  # a bad flag fails here, not minutes into ms-swift
    env = swift_environment(params, vision, node_rank)  # so does a missing MASTER_ADDR or a wrong NODE_RANK
    run_id_file = work / RUN_ID_FILE
    previous_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    trained = resume is not None and training_finished(resume)
    return Launch(params, vision, key, work, resume, trained, cuda, argv, env, previous_run)


def train(launch: Launch, run_id: str, *, data: Path, raw: Path) -> None:
    """ms-swift's GRPO run in the open MLflow run; each new step logged to it and shown on the console."""
    params = launch.params
    (launch.work / RUN_ID_FILE).write_text(run_id)
    if launch.trained:
        tracking.say(f"run {launch.key} finished training at {launch.resume.name}; exporting it, not training again")
        return
    for split in SPLITS:
        localize_rows(data / f"{split}.jsonl", launch.work / f"{split}.jsonl", [data, raw])
    if launch.resume:
        tracking.say(f"resuming from {launch.resume.name} of run {launch.key}")
    else:
        tracking.say(
            f"training run {launch.key} from the start ({_processes(params)}, cuda={launch.cuda})"
        )
    logged_steps = set(tracking.logged_steps(run_id, "reward"))
    inverted = params.reward_control == "invert"

    def log_new_steps() -> None:
        # Each step once, across resumes: the steps a killed run logged are not logged again.
        for record in read_log_history(launch.output_dir):
            step = step_of(record)
            if step not in logged_steps:
                tracking.log_metrics(step_metrics(record), step=step)
                logged_steps.add(step)
                true = reward_table([record], params.reward_funcs, inverted)[0]
                shown = ", ".join(f"{REWARD_LABELS[name]} {true[REWARD_LABELS[name]]:.2f}" for name in params.reward_funcs)
                note = " (true values; GRPO was given 1 - r)" if inverted else ""
                tracking.say(f"step {record['global_step/max_steps']}: reward {true['reward']:.3f} ({shown}){note}")

    run_swift(launch.argv, launch.env, launch.log_file, on_output=log_new_steps)
    log_new_steps()


def train_as_worker(launch: Launch, *, data: Path, raw: Path) -> None:
    """This machine's ranks of node 0's run: the same command on inputs pulled at the same hashes. Node 0's
    ranks log the steps, save the checkpoints and export; this machine keeps only its scratch folder."""
    for split in SPLITS:
        localize_rows(data / f"{split}.jsonl", launch.work / f"{split}.jsonl", [data, raw])
    tracking.say(
        f"node {launch.env['NODE_RANK']} of {launch.params.nnodes}: joining run {launch.key} at "
        f"{launch.env['MASTER_ADDR']}:{launch.env['MASTER_PORT']} ({_processes(launch.params)})"
    )
    run_swift(launch.argv, launch.env, launch.log_file, on_output=lambda: None)
    tracking.say(f"node {launch.env['NODE_RANK']}: run {launch.key} finished; node 0 exports the model")


def worker_arguments(folder: Path, stage: str = "train") -> list[str]:
    """A worker machine's stage arguments: those of the stage's dvc.yaml command in folder, the inputs that
    other stages write pulled from the DVC remote at the hashes dvc.lock records (node 0's, after git pull)."""
    _, arguments, inputs = stage_command(folder, stage)
    tracking.say(f"worker: dvc pull {' '.join(inputs)}")
    done = subprocess.run([sys.executable, "-m", "dvc", "pull", *inputs], cwd=folder)
    if done.returncode != 0:
        raise InputError(
            f"worker: `dvc pull {' '.join(inputs)}` failed (exit {done.returncode}, its message above): on node 0, "
            f"run the stages before {stage} and `dvc push`, then bring its dvc.lock here (git pull)"
        )
    return arguments


def worker_rank(params: TrainParams) -> int:
    """This worker machine's NODE_RANK, 1 .. train.nnodes - 1."""
    if params.nnodes == 1:
        raise TrainConfigError("train.nnodes is 1: there is no run for a worker machine to join (set train.nnodes)")
    rank = os.environ.get(NODE_RANK_ENV, "")
    if not rank.isdigit() or not 1 <= int(rank) < params.nnodes:
        raise TrainConfigError(
            f"{NODE_RANK_ENV}={rank or '(unset)'}: a worker machine is node 1 .. {params.nnodes - 1} of train.nnodes = "
            f"{params.nnodes} (node 0 runs the train stage)"
        )
    return int(rank)


def _processes(params: TrainParams) -> str:
    if params.nnodes == 1:
        return f"{params.nproc_per_node} process(es)"
    return f"{params.nproc_per_node} process(es) on each of {params.nnodes} machines"


def finish(launch: Launch, checkpoint: Path) -> None:
    """Mark the run exported: the next run with the same key starts afresh instead of resuming it."""
    (launch.work / FINISHED_FILE).write_text(checkpoint.name)


def localize_rows(source: Path, dest: Path, inputs: list[Path]) -> None:
    """Copy a processed jsonl with image paths made absolute for ms-swift; each must lie in a declared input."""
    roots = [p.resolve() for p in inputs]
    with source.open(encoding="utf-8") as f, dest.open("w", encoding="utf-8") as out:
        for number, line in enumerate(f, start=1):
            row = json.loads(line)
            images = [Path(p).resolve() for p in row["images"]]
            for image in images:
                if not any(image.is_relative_to(root) for root in roots):
                    raise ValueError(
                        f"{source} line {number}: image {image} lies outside the stage's inputs "
                        f"{[str(p) for p in inputs]}; dvc.yaml would not re-run train when it changes"
                    )
            out.write(json.dumps({**row, "images": [str(p) for p in images]}) + "\n")
