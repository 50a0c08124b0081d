"""Stage: GRPO with ms-swift and the SATORI rewards; the final checkpoint exported, whole, to --out.

    python -m stages.train --data data/processed --raw data/raw --base-model models/base --prompt prompt.txt \
        --work .work/train --out models/trained --metrics reports/train.json --plots reports/train_rewards.csv \
        --plot-image reports/train_rewards.png --samples reports/train_samples.md

A killed run resumes: run again with the same inputs, it continues from its last whole checkpoint
in the same MLflow run. Changed params, data, base model or reward code start afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from satori import tracking
from satori.cli import stage_paths
from satori.config import load_profile
from satori.files import atomic_dir, read_source, write_json, write_source
from satori.gallery import draw, grid, training_samples
from satori.training import (
    FINISHED_FILE,
    REWARD_CLASSES,
    check_swift_arguments,
    completion_diagnostics,
    export_model,
    first_and_last_samples,
    plot_reward_curves,
    last_checkpoint,
    prepare_work_dir,
    read_log_history,
    resumable_checkpoint,
    reward_table,
    run_key,
    run_swift,
    seen_sizes_by_source,
    step_metrics,
    step_of,
    swift_arguments,
    swift_environment,
    write_reward_table,
)

RUN_ID_FILE = "mlflow_run_id"  # in the work folder: a resumed run continues the killed run's MLflow history


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


def rows_by_source(data: Path) -> dict[str, dict]:
    """The processed rows by their `solution` (where each came from), as ms-swift logs it beside a completion."""
    rows = {}
    for split in ("train", "val"):
        for line in (data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["solution"]] = row
    return rows


def log_galleries(completions_file: Path, rows: dict[str, dict], vision) -> None:
    """Per training step, a picture of up to 16 rollouts (predicted against true boxes) in MLflow."""
    by_step: dict[int, list[dict]] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            by_step.setdefault(int(table["step"][0]), []).append(table)
    steps = sorted(by_step)
    shown = steps if len(steps) <= 20 else sorted({*steps[:: max(1, len(steps) // 20)], steps[-1]})
    for step in shown:
        samples = training_samples(by_step[step], rows, vision.min_pixels, vision.max_pixels)
        tracking.log_image(grid([draw(s) for s in samples]), "gallery/train", step)


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(
        __doc__,
        argv,
        data="the preprocessed train.jsonl / val.jsonl folder",
        raw="the fetched dataset (the rows' images lie there)",
        base_model="",
        prompt="",
        work="scratch: checkpoints to resume from",
        out="",
        metrics="",
        plots="rewards per step (CSV)",
        plot_image="the same as a picture (PNG)",
        samples="rollouts of the first and the last step side by side (markdown)",
    )
    name, profile = load_profile()
    params, vision = profile.train, profile.vision

    import torch

    cuda = torch.cuda.is_available()
    inputs = [args.data, args.raw, args.base_model, args.prompt]
    key = run_key(params, vision, inputs)
    work = prepare_work_dir(args.work, key)
    output_dir = work / "swift_output"
    resume = resumable_checkpoint(output_dir) if output_dir.exists() else None
    if resume is None:  # killed before its first checkpoint: nothing to resume, and its logs are not this run's
        shutil.rmtree(output_dir, ignore_errors=True)
    argv_swift = swift_arguments(
        params,
        model_dir=args.base_model.resolve(),
        train_file=(work / "train.jsonl").resolve(),
        val_file=(work / "val.jsonl").resolve(),
        output_dir=output_dir.resolve(),
        prompt_file=args.prompt.resolve(),
        cuda=cuda,
        resume_from=resume.resolve() if resume else None,
    )
    check_swift_arguments(argv_swift, params.extra_args)  # a bad flag fails here, not minutes into ms-swift

    run_id_file = work / RUN_ID_FILE
    previous_run = run_id_file.read_text().strip() if resume and run_id_file.exists() else None
    logged = {"train": params.model_dump(), "vision": vision.model_dump(), "run_key": key}
    with tracking.stage_run("train", profile.mlflow_experiment, name, logged, continue_run=previous_run) as run:
        run_id_file.write_text(run.info.run_id)
        for split in ("train", "val"):
            localize_rows(args.data / f"{split}.jsonl", work / f"{split}.jsonl", [args.data, args.raw])
        if resume:
            tracking.say(f"resuming from {resume.name} of run {key}")
        else:
            tracking.say(f"training run {key} from the start ({params.nproc_per_node} process(es), cuda={cuda})")

        logged_steps = set(tracking.logged_steps(run.info.run_id, "reward"))
        inverted = params.reward_control == "invert"

        def log_new_steps() -> None:
            # Each step once, across resumes: the steps a killed run logged are not logged again.
            for record in read_log_history(output_dir):
                step = step_of(record)
                if step not in logged_steps:
                    tracking.log_metrics(step_metrics(record), step=step)
                    logged_steps.add(step)
                    true = reward_table([record], params.reward_funcs, inverted)[0]
                    shown = ", ".join(f"{REWARD_CLASSES[name]} {true[name]:.2f}" for name in params.reward_funcs)
                    note = " (true values; GRPO was given 1 - r)" if inverted else ""
                    tracking.say(f"step {record['global_step/max_steps']}: reward {true['reward']:.3f} ({shown}){note}")

        run_swift(argv_swift, swift_environment(params, vision), work / "swift.log", on_output=log_new_steps)
        log_new_steps()

        checkpoint = last_checkpoint(output_dir)
        with atomic_dir(args.out) as out:
            shipped = export_model(checkpoint, args.base_model, out, params.tuner_type, params.max_shard_size)
            write_source(
                out,
                base_model=read_source(args.base_model),
                data=read_source(args.raw),
                checkpoint=checkpoint.name,
                tuner_type=params.tuner_type,
            )
        tracking.say(f"exported {checkpoint.name} to {args.out}: {', '.join(shipped)}")

        table = reward_table(read_log_history(output_dir), params.reward_funcs, params.reward_control == "invert")
        write_reward_table(args.plots, table)
        plot_reward_curves(args.plot_image, table)
        tracking.log_artifact(args.plot_image, "train")
        final = table[-1]
        metrics = {
            "steps": final["step"],
            "final_reward": final["reward"],
            "mean_reward": sum(r["reward"] for r in table) / len(table),
            **{f"final.{k}": v for k, v in final.items() if k not in ("step", "reward") and v is not None},
        }
        completions_file = output_dir / "completions.jsonl"
        samples = "No rollouts were logged (train.log_completions is off).\n"
        if completions_file.exists():
            sizes = seen_sizes_by_source([args.data / "train.jsonl", args.data / "val.jsonl"], vision)
            diagnostics = completion_diagnostics(completions_file, sizes)
            for row in diagnostics:
                tracking.log_metrics({f"diagnostics/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
            metrics.update({f"diagnostics.{k}": v for k, v in diagnostics[-1].items() if k != "step"})
            rows = rows_by_source(args.data)
            log_galleries(completions_file, rows, vision)
            samples = first_and_last_samples(completions_file, rows, params.reward_funcs, inverted)
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(samples, encoding="utf-8")
        tracking.log_artifact(args.samples, "train")
        write_json(args.metrics, metrics)
        tracking.log_metrics({"summary": metrics})
        # Logs with timings and run-specific paths go to MLflow only: DVC outputs hash the same anywhere.
        for produced in ("completions.jsonl", "logging.jsonl"):
            if (output_dir / produced).exists():
                tracking.log_artifact(output_dir / produced, "train")
        tracking.log_artifact(work / "swift.log", "train")
        (work / FINISHED_FILE).write_text(checkpoint.name)


if __name__ == "__main__":
    main()
