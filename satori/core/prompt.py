"""The SATORI prompt: the system prompt file, and the instruction the official evaluation appends to questions."""

from __future__ import annotations

from pathlib import Path

# Appended to every question by the official SATORI evaluation (an evaluation input, quoted exactly).
SATORI_INSTRUCTION = (
    " \nFirst, provide an image caption describing the overall scene inside <caption> </caption>. "
    "Then, output the list of bounding boxes in the format of [[x1,y1,x2,y2], ...] inside <bbox> </bbox>. "
    "Finally, give the final answer in <answer> </answer>."
)


def system_prompt(path: Path) -> str:
    """prompt.txt, the system prompt SATORI-3B was trained with (a training input: used verbatim)."""
    return Path(path).read_text(encoding="utf-8")
