"""Does a training run learn? First against last quarter of its steps, per reward, from the reward table."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path


def read_reward_table(path: Path) -> list[dict[str, float | None]]:
    """reports/train_rewards.csv as rows of numbers (None where a reward is not used)."""
    with path.open(encoding="utf-8") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


def quarter_summary(table: list[dict[str, float | None]]) -> dict[str, dict[str, float]]:
    """Per reward column: mean and standard deviation over the first and over the last quarter of the steps."""
    quarter = max(1, len(table) // 4)
    first, last = table[:quarter], table[-quarter:]
    summary = {}
    for column in table[0]:
        a = [r[column] for r in first if r[column] is not None]
        b = [r[column] for r in last if r[column] is not None]
        if column == "step" or not a or not b:  # a reward the run does not use
            continue
        summary[column] = {
            "first": statistics.fmean(a),
            "first_std": statistics.pstdev(a),
            "last": statistics.fmean(b),
            "last_std": statistics.pstdev(b),
        }
    return summary


def report(folder: Path) -> str:
    """The quarter table of a run folder's reward table, and its base-vs-trained accuracies."""
    import json

    lines = [f"{folder}:", f"  {'reward':<22} {'first quarter':>17} {'last quarter':>17} {'change':>8}"]
    for column, row in quarter_summary(read_reward_table(folder / "reports" / "train_rewards.csv")).items():
        lines.append(
            f"  {column:<22} {row['first']:>8.3f} ± {row['first_std']:.3f} {row['last']:>8.3f} ± {row['last_std']:.3f}"
            f" {row['last'] - row['first']:>+8.3f}"
        )
    evaluation = json.loads((folder / "reports" / "evaluate.json").read_text(encoding="utf-8"))
    for name, row in evaluation.items():
        lines.append(f"  {name}: base {100 * row['base']:.1f}%, trained {100 * row['trained']:.1f}%")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print("\n\n".join(report(Path(folder)) for folder in sys.argv[1:]))
