"""Rewards per training step, from ms-swift's log: a table, its CSV (DVC's plot source) and a picture."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from satori.core.reward_registry import REWARD_LABELS, REWARD_NAMES, logged_mean
from satori.training.swift_run import step_of


def reward_table(
    history: list[dict[str, Any]], reward_funcs: list[str], inverted: bool = False
) -> list[dict[str, float | None]]:
    """step, total reward and each reward's mean per step, by its label; None for a reward this run does not use.

    inverted (the control run): GRPO was given 1 - r, so the true values are turned back: r = 1 - logged.
    """
    rows = []
    for record in history:
        total = float(record["reward"])
        row: dict[str, float | None] = {
            "step": step_of(record),
            "reward": len(reward_funcs) - total if inverted else total,
        }
        for name in REWARD_NAMES:
            value = float(record[logged_mean(name)]) if name in reward_funcs else None
            row[REWARD_LABELS[name]] = 1.0 - value if inverted and value is not None else value
        rows.append(row)
    return rows


def write_reward_table(path: Path, table: list[dict[str, float | None]]) -> None:
    """The reward table as CSV (DVC's plot source): every reward column, empty where unused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "reward", *REWARD_LABELS.values()])
        writer.writeheader()
        writer.writerows(table)


def plot_reward_curves(path: Path, table: list[dict[str, float | None]]) -> None:
    """Total and per-reward mean per step as a PNG (same bytes for the same table: no date in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in table]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for column in ("reward", *REWARD_LABELS.values()):
        values = [row[column] for row in table]
        if all(v is not None for v in values):
            axis.plot(steps, values, marker="o", markersize=3, label=column, linewidth=2 if column == "reward" else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("mean reward")
    axis.set_title("GRPO rewards per step")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)
