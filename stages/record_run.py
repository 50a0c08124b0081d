"""Stage: the pipeline run's summary, last in every run however it was launched (the flow, `dvc repro`,
`dvc exp run`, a Prefect deployment): the few numbers DVC compares, and the MLflow parent brought up to date.

    python -m stages.record_run --evaluation reports/evaluate.json --train-summary reports/train.json \
        --curves reports/train_rewards.csv --published reports/publish.json --metrics reports/metrics.json

reports/metrics.json holds the trained model's accuracy per benchmark and the final and mean training
reward, under short keys, so that `dvc metrics show` and `dvc exp show --only-changed` fit a screen (the
stages' full reports stay in their own files and in MLflow). The MLflow parent gets the same summary, the
reward curves, which stages ran and a child for each stage DVC reused (see tracking.record_pipeline_run).
"""

from __future__ import annotations

import json
from pathlib import Path

from satori import tracking
from satori.core.files import write_json
from satori.core.lineage import stage_outputs
from satori.stage import Stage, run_main

READS = ("mlflow_experiment",)


def summary_metrics(evaluation: dict, train_summary: dict) -> dict:
    """The numbers a comparison of runs starts from: the trained model's accuracy per benchmark, and the reward.
    Short keys, so that `dvc metrics show` fits 120 columns; the base model's accuracy is in reports/evaluate.json."""
    metrics = {name: row["trained"] for name, row in evaluation.items()}
    metrics["reward"] = {"final": train_summary["final_reward"], "mean": train_summary["mean_reward"]}
    return metrics


def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        evaluation="the evaluate stage's metrics",
        train_summary="the train stage's metrics",
        curves="the train stage's reward curves (CSV)",
        published="the publish stage's report (this stage comes after it)",
        metrics="",
    )
    args = stage.args
    evaluation = json.loads(args.evaluation.read_text(encoding="utf-8"))
    train_summary = json.loads(args.train_summary.read_text(encoding="utf-8"))
    metrics = summary_metrics(evaluation, train_summary)
    write_json(args.metrics, metrics)
    # The stages DVC runs are those of the checkout it runs in (the working directory).
    outputs = stage_outputs(Path("."))
    tracked = [name for name in outputs if name not in tracking.NO_RUN_STAGES]
    summary = {**evaluation, "train": train_summary}
    parent = tracking.record_pipeline_run(
        stage.read("mlflow_experiment"), stage.profile_name, tracked, outputs, summary, args.curves
    )
    if parent is None:
        tracking.say("no pipeline run to record (a stage run by hand): wrote the metrics only")
    else:
        tracking.say(f"recorded the pipeline run: {tracking.run_link(parent)}")


if __name__ == "__main__":
    run_main(main)
