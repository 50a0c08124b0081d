"""Stage: GRPO with ms-swift and the SATORI rewards; the final checkpoint exported, whole, to --out.

    python -m stages.train --data data/processed --raw data/raw --base-model models/base --prompt prompt.txt \
        --work .work/train --out models/trained --metrics reports/train.json --plots reports/train_rewards.csv \
        --plot-image reports/train_rewards.png --samples reports/train_samples.md

With train.nnodes > 1 this stage is node 0; every other machine, in a checkout of the same commit with
the same DVC remote, runs (its inputs pulled, nothing written but scratch, no MLflow run)

    NODE_RANK=1 MASTER_ADDR=<node 0's address> MASTER_PORT=29500 python -m stages.train --worker

A killed run resumes: run again with the same inputs, it continues from its last whole checkpoint
in the same MLflow run. A run whose training finished but whose export failed is exported on the
retry without training again. Changed params, data, base model or reward code start afresh.
"""

from __future__ import annotations

import sys
from pathlib import Path

from satori import tracking
from satori.training import grpo_launch
from satori.core.config import SPLITS
from satori.training.export import export_run
from satori.stage import Stage, run_main
from satori.training.train_report import write_train_report

READS = ("train", "vision")
WORKER_FLAG = "--worker"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    worker = argv == [WORKER_FLAG]
    if worker:  # another machine of a train.nnodes > 1 run: the stage's own arguments, its inputs pulled
        argv = grpo_launch.worker_arguments(Path.cwd())
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
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
    args, params, vision = stage.args, stage.read("train"), stage.read("vision")
    # Launch: the run keyed by what decides it, resumed from a killed run's last whole checkpoint.
    node_rank = grpo_launch.worker_rank(params) if worker else 0
    launch = grpo_launch.prepare(
        params, vision, args.work, data=args.data, raw=args.raw, base_model=args.base_model, prompt=args.prompt,
        node_rank=node_rank,
    )  # fmt: skip
    if worker:
        grpo_launch.train_as_worker(launch, data=args.data, raw=args.raw)
        return
    with stage.run(continue_run=launch.previous_run_id, run_key=launch.key) as run:
        splits = {f"processed/{split}": args.data / f"{split}.jsonl" for split in SPLITS}
        tracking.log_datasets(splits, "training")
        grpo_launch.train(launch, run.info.run_id, data=args.data, raw=args.raw)
        # Export: the last checkpoint as a whole model folder.
        checkpoint = export_run(
            launch.output_dir, args.base_model, args.raw, args.out, params.tuner_type, params.max_shard_size
        )
        # Report: curves, metrics, samples, diagnostics and galleries.
        write_train_report(
            launch.output_dir, launch.log_file, args.data, params, vision,
            metrics=args.metrics, plots=args.plots, plot_image=args.plot_image, samples=args.samples,
        )  # fmt: skip
        grpo_launch.finish(launch, checkpoint)


if __name__ == "__main__":
    run_main(main)
