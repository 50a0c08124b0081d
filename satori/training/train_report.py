"""Report: what a finished GRPO run shows a person and DVC: reward curves (CSV and PNG), the summary
metrics, rollouts of the first and last step side by side, diagnostics and galleries per step in MLflow,
and ms-swift's own logs as MLflow artifacts (timings and run paths stay out of DVC's outputs)."""

from __future__ import annotations

from pathlib import Path

from satori import tracking
from satori.training import rollouts
from satori.core.config import TrainParams, VisionParams
from satori.core.files import write_json
from satori.training.reward_curves import plot_reward_curves, reward_table, write_reward_table
from satori.training.swift_run import COMPLETIONS_FILE, LOGGING_FILE, read_log_history

NO_ROLLOUTS = "No rollouts were logged (train.log_completions is off).\n"


def summary_metrics(table: list[dict[str, float | None]]) -> dict[str, float]:
    """Steps, the last and the mean total reward, and each used reward's last value."""
    final = table[-1]
    return {
        "steps": final["step"],
        "final_reward": final["reward"],
        "mean_reward": sum(r["reward"] for r in table) / len(table),
        **{f"final.{k}": v for k, v in final.items() if k not in ("step", "reward") and v is not None},
    }


def write_train_report(output_dir: Path, log_file: Path, data: Path, params: TrainParams, vision: VisionParams, *,
                       metrics: Path, plots: Path, plot_image: Path, samples: Path) -> None:  # fmt: skip
    inverted = params.reward_control == "invert"
    table = reward_table(read_log_history(output_dir), params.reward_funcs, inverted)
    write_reward_table(plots, table)
    plot_reward_curves(plot_image, table)
    tracking.log_artifact(plot_image, "train")
    summary = summary_metrics(table)
    completions_file = output_dir / COMPLETIONS_FILE
    text = NO_ROLLOUTS
    if completions_file.exists():
        sizes = rollouts.seen_sizes_by_source([data / "train.jsonl", data / "val.jsonl"], vision)
        diagnostics = rollouts.completion_diagnostics(completions_file, sizes)
        for row in diagnostics:
            tracking.log_metrics({f"diagnostics/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
        summary.update({f"diagnostics.{k}": v for k, v in diagnostics[-1].items() if k != "step"})
        rows = rollouts.rows_by_source(data)
        rollouts.log_galleries(completions_file, rows, vision)
        text = rollouts.first_and_last_samples(completions_file, rows, params.reward_funcs, inverted)
    samples.parent.mkdir(parents=True, exist_ok=True)
    samples.write_text(text, encoding="utf-8")
    tracking.log_artifact(samples, "train")
    write_json(metrics, summary)
    tracking.log_metrics({"summary": summary})
    for produced in (COMPLETIONS_FILE, LOGGING_FILE):
        if (output_dir / produced).exists():
            tracking.log_artifact(output_dir / produced, "train")
    tracking.log_artifact(log_file, "train")
