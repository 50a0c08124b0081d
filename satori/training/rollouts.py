"""What the model wrote while training (completions.jsonl): samples side by side, reward-hacking diagnostics,
image galleries, each rollout tied to its row by the row's `solution` (where it came from)."""

from __future__ import annotations

import json
from pathlib import Path

from satori import tracking
from satori.core.config import SPLITS, VisionParams
from satori.rewards.gallery import draw, grid, training_samples
from satori.core.reward_registry import REWARD_CLASSES, REWARD_LABELS
from satori.rewards.completion import first_block, parse_boxes, strict_format


def summarize_completions(
    completions: list[str],
    seen_sizes: list[tuple[int, int] | None] | None = None,
    *,
    whole_image_threshold: float = 0.9,
) -> dict[str, float]:
    """What a batch of completions looks like, for spotting reward hacking at a glance.

    format_rate: share passing the strict format; mean_boxes: boxes parsed from the first
    <bbox> block (0 when unparseable); whole_image_box_rate: share of those boxes covering more
    than `whole_image_threshold` of the image the model saw (`seen_sizes`, (width, height) per
    completion, None where unknown; boxes of completions with unknown size are not counted);
    mean_answer_chars: length of the stripped <answer> text (0 when absent).
    """
    n = len(completions)
    if n == 0:
        return {"format_rate": 0.0, "mean_boxes": 0.0, "whole_image_box_rate": 0.0, "mean_answer_chars": 0.0}
    sizes = seen_sizes if seen_sizes is not None else [None] * n
    formatted = boxes_total = whole = sized_boxes = answer_chars = 0
    for completion, size in zip(completions, sizes):
        formatted += strict_format(completion)
        boxes = parse_boxes(first_block(completion, "bbox")) or []
        boxes_total += len(boxes)
        if size is not None and size[0] > 0 and size[1] > 0:
            image_area = size[0] * size[1]
            for x1, y1, x2, y2 in boxes:
                w = min(x2, size[0]) - max(x1, 0)
                h = min(y2, size[1]) - max(y1, 0)
                whole += w > 0 and h > 0 and w * h > whole_image_threshold * image_area
            sized_boxes += len(boxes)
        answer = first_block(completion, "answer")
        answer_chars += len(answer.strip()) if answer is not None else 0
    return {
        "format_rate": formatted / n,
        "mean_boxes": boxes_total / n,
        "whole_image_box_rate": whole / sized_boxes if sized_boxes else 0.0,
        "mean_answer_chars": answer_chars / n,
    }


def seen_sizes_by_source(data_files: list[Path], vision: VisionParams) -> dict[str, tuple[int, int]]:
    """A row's `solution` (where it came from, logged by ms-swift beside each completion) -> the image
    size the model saw."""
    sizes = {}
    for data_file in data_files:
        with data_file.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                sizes[row["solution"]] = vision.seen_size(row["width"], row["height"])
    return sizes


def first_and_last_samples(
    completions_file: Path, rows_by_source: dict[str, dict], reward_names: list[str], inverted: bool, count: int = 4
) -> str:
    """Markdown: `count` rollouts of the first and of the last training step side by side, each with its
    question's true answer and its rewards (true values, also in the inverted control run)."""
    first_of_step, _ = training_and_validation(completions_file)
    if not first_of_step:
        raise ValueError(f"{completions_file} holds no completions")
    first, last = min(first_of_step), max(first_of_step)

    def cell(step: int, i: int) -> str:
        table = first_of_step[step]
        if i >= len(table["completion"]):
            return ""
        row = rows_by_source.get(table["solution"][i])
        truth = row["possible_answers"][0] if row else "?"
        rewards = []
        for name in reward_names:
            value = float(table[REWARD_CLASSES[name]][i])  # ms-swift's completions.jsonl names it by class
            rewards.append(f"{REWARD_LABELS[name]} {1.0 - value if inverted else value:.2f}")
        # A code span, so that markdown shows the <caption>/<bbox>/<answer> tags instead of taking them for HTML.
        text = " ".join(str(table["completion"][i]).split())
        return f"truth `{truth}`: `` {text} `` ({', '.join(rewards)})".replace("|", "\\|")

    lines = [f"| # | step {first} | step {last} |", "|---|---|---|"]
    lines += [f"| {i + 1} | {cell(first, i)} | {cell(last, i)} |" for i in range(count)]
    return "\n".join(lines) + "\n"


def completion_diagnostics(completions_file: Path, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    """summarize_completions for each step of completions.jsonl (training and evaluation rollouts together)."""
    by_step: dict[int, tuple[list[str], list]] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            completions, known = by_step.setdefault(int(table["step"][0]), ([], []))
            completions += table["completion"]
            known += [sizes.get(source) for source in table["solution"]]
    per_step = []
    for step, (completions, known) in sorted(by_step.items()):
        summary = summarize_completions(completions, known)
        summary["size_known_rate"] = sum(k is not None for k in known) / max(1, len(known))
        per_step.append({"step": step, **summary})
    return per_step


def rows_by_source(data: Path) -> dict[str, dict]:
    """The processed rows by their `solution` (where each came from), as ms-swift logs it beside a completion."""
    rows = {}
    for split in SPLITS:
        for line in (data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["solution"]] = row
    return rows


def training_and_validation(completions_file: Path) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """completions.jsonl split by step: ms-swift logs a step's training rollouts first (one table), then, at an
    evaluation step, the validation set's (more tables of the same step)."""
    training: dict[int, dict] = {}
    validation: dict[int, list[dict]] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            step = int(table["step"][0])
            if step in training:
                validation.setdefault(step, []).append(table)
            else:
                training[step] = table
    return training, validation


def log_galleries(completions_file: Path, rows: dict[str, dict], vision: VisionParams) -> None:
    """Per training step (from 1), a picture of up to 16 rollouts (predicted against true boxes) in MLflow;
    the validation rollouts of each evaluation step in a gallery of their own."""
    training, validation = training_and_validation(completions_file)
    steps = sorted(training)
    shown = steps if len(steps) <= 20 else sorted({*steps[:: max(1, len(steps) // 20)], steps[-1]})
    for key, tables_by_step in (
        ("gallery/train", {step: [training[step]] for step in shown}),
        ("gallery/validation", validation),
    ):
        for step, tables in sorted(tables_by_step.items()):
            samples = training_samples(tables, rows, vision.min_pixels, vision.max_pixels)
            tracking.log_image(grid([draw(s) for s in samples]), key, step)
