"""Launch: the train stage's GRPO run, from its params and inputs, resumed where a killed run left off.

`prepare` decides the run before any MLflow run opens: its key, its work folder, the checkpoint to
resume from, the command line (checked by ms-swift's own parser) and the MLflow run to continue.
`train` runs ms-swift and logs each step once, across resumes; a run whose training had finished
(its export failed, say) is not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from satori import tracking
from satori.checkpoints import FINISHED_FILE, prepare_work_dir, resumable_checkpoint, run_key, training_finished
from satori.config import SPLIT_SIZE_KEYS, SPLITS, TrainParams, VisionParams, check_split_sizes
from satori.reward_curves import reward_table
from satori.reward_registry import REWARD_CLASSES
from satori.swift_cli import check_swift_arguments, swift_arguments, swift_environment
from satori.swift_run import read_log_history, run_swift, step_metrics, step_of

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
    previous_run_id: str | None  # the killed run's MLflow run, continued

    @property
    def output_dir(self) -> Path:
        return self.work / SWIFT_OUTPUT

    @property
    def log_file(self) -> Path:
        return self.work / SWIFT_LOG


def prepare(params: TrainParams, vision: VisionParams, work_root: Path, *, data: Path, raw: Path, base_model: Path,
            prompt: Path) -> Launch:  # fmt: skip
    import torch

    # The splits against the batches, in seconds, before the model loads (preprocess checked them too).
    rows = [sum(1 for _ in (data / f"{split}.jsonl").open(encoding="utf-8")) for split in SPLITS]
    check_split_sizes(*rows, **{key: getattr(params, key) for key in SPLIT_SIZE_KEYS})
    cuda = torch.cuda.is_available()
    key = run_key(params, vision, [data, raw, base_model, prompt])
    work = prepare_work_dir(work_root, key)
    output_dir = work / SWIFT_OUTPUT
    resume = resumable_checkpoint(output_dir) if output_dir.exists() else None
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
    run_id_file = work / RUN_ID_FILE
    previous_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    trained = resume is not None and training_finished(resume)
    return Launch(params, vision, key, work, resume, trained, cuda, argv, previous_run)


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
            f"training run {launch.key} from the start ({params.nproc_per_node} process(es), cuda={launch.cuda})"
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
                shown = ", ".join(f"{REWARD_CLASSES[name]} {true[name]:.2f}" for name in params.reward_funcs)
                note = " (true values; GRPO was given 1 - r)" if inverted else ""
                tracking.say(f"step {record['global_step/max_steps']}: reward {true['reward']:.3f} ({shown}){note}")

    run_swift(launch.argv, swift_environment(params, launch.vision), launch.log_file, on_output=log_new_steps)
    log_new_steps()


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
