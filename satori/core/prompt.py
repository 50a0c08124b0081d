"""How the model is asked: the system prompt file, a question laid out as VLMEvalKit lays out a multiple-choice one,
and the SATORI instruction the official evaluation appends. The model card's snippet carries mcq_question's source,
so a user asks as training and evaluation do."""

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


def mcq_question(question: str, options: list[str], hint: str | None = None) -> str:
    """A question as VLMEvalKit's ImageMCQDataset.build_prompt lays it out: its hint, the question, the options
    lettered A, B, ... and the request to pick one (no options: the question alone)."""
    text = f"Hint: {hint}\n" if hint else ""
    text += f"Question: {question}\n"
    if options:
        text += "Options:\n" + "".join(f"{chr(ord('A') + i)}. {option}\n" for i, option in enumerate(options))
        text += "Please select the correct answer from the options above. \n"
    return text
