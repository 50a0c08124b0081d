"""SATORI reward functions, registered in ms-swift's reward registry on import.

ms-swift builds each class as `Class(args=...)` and calls
`instance(completions, **columns)`, every dataset column arriving as a list
aligned with `completions`. Each reward returns one float in [0, 1] per
completion and never raises on model output.

Semantics follow the published SATORI plugin (justairr/SATORI-R1, plugin.py),
with its defects fixed: ms-swift 4 import path, `smart_resize` called with the
processor's real pixel limits, and captions tokenized without nltk downloads.
"""

from __future__ import annotations

import ast
import math
import os
import re
from typing import Any

from qwen_vl_utils import smart_resize
from swift.rewards import ORM, orms

from stages.config import IMAGE_FACTOR

# qwen-vl-utils' own processor defaults, used when the train stage sets nothing.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
# Model output is untrusted: cap what any parser sees.
MAX_BLOCK_CHARS = 4096
MAX_BOXES = 64

_FORMAT = re.compile(
    r"\s*<caption>.*?</caption>\s*<bbox>\s*\[\[.*?</bbox>\s*<answer>.*?</answer>\s*",
    re.DOTALL,
)


def first_block(text: Any, tag: str) -> str | None:
    """Text inside the first <tag>...</tag>, or None when there is none."""
    if not isinstance(text, str):
        return None
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return match.group(1) if match else None


def pixel_limits() -> tuple[int, int]:
    """MIN_PIXELS / MAX_PIXELS as ms-swift and qwen-vl-utils read them."""
    return (
        int(os.environ.get("MIN_PIXELS", DEFAULT_MIN_PIXELS)),
        int(os.environ.get("MAX_PIXELS", DEFAULT_MAX_PIXELS)),
    )


def parse_boxes(block: str | None) -> list[list[float]] | None:
    """[[x1,y1,x2,y2], ...] (or one flat box) from a <bbox> block; None if unusable."""
    if block is None or len(block) > MAX_BLOCK_CHARS:
        return None
    try:
        value = ast.literal_eval(block.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return coerce_boxes(value)


def coerce_boxes(value: Any) -> list[list[float]] | None:
    """A list of 4-number boxes (a single flat box counts as one box); None if anything else."""
    if isinstance(value, (list, tuple)) and value and all(not isinstance(v, (list, tuple)) for v in value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_BOXES:
        return None
    boxes = []
    for box in value:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
            return None
        boxes.append([float(v) for v in box])
    return boxes


def union_iou(pred: list[list[float]], truth: list[list[float]]) -> float:
    """Area of (∪pred ∩ ∪truth) over area of (∪pred ∪ ∪truth) + 1e-6, as the published reward."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    pred_union = unary_union([box(*b) for b in pred])
    truth_union = unary_union([box(*b) for b in truth])
    inter = pred_union.intersection(truth_union).area
    union = pred_union.union(truth_union).area
    return float(inter / (union + 1e-6))


class Format(ORM):
    """1 when the whole completion is <caption>, <bbox>[[...]</bbox>, <answer>, in order."""

    def __call__(self, completions: list[str], **kwargs) -> list[float]:
        return [1.0 if isinstance(c, str) and _FORMAT.fullmatch(c) else 0.0 for c in completions]


class BoundingBoxAccuracy(ORM):
    """IoU of the union of predicted boxes (mapped back to original pixels) with the truth's union."""

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.min_pixels, self.max_pixels = pixel_limits()

    def __call__(self, completions, bboxs, width, height, **kwargs) -> list[float]:
        return [self.score(c, b, w, h) for c, b, w, h in zip(completions, bboxs, width, height)]

    def score(self, completion: str, truth: Any, width: Any, height: Any) -> float:
        pred = parse_boxes(first_block(completion, "bbox"))
        truth_boxes = coerce_boxes(truth)
        try:
            w, h = int(width), int(height)
        except (TypeError, ValueError, OverflowError):
            return 0.0
        if pred is None or truth_boxes is None or w <= 0 or h <= 0:
            return 0.0
        try:
            seen_h, seen_w = smart_resize(h, w, IMAGE_FACTOR, self.min_pixels, self.max_pixels)
        except ValueError:  # absurd aspect ratio
            return 0.0
        sx, sy = w / seen_w, h / seen_h
        scaled = [[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for x1, y1, x2, y2 in pred]
        return min(1.0, max(0.0, union_iou(scaled, truth_boxes)))


class VQAAccuracy(ORM):
    """1 when the stripped first <answer> block is one of `possible_answers`."""

    def __call__(self, completions, possible_answers, **kwargs) -> list[float]:
        scores = []
        for completion, accepted in zip(completions, possible_answers):
            answer = first_block(completion, "answer")
            ok = answer is not None and isinstance(accepted, (list, tuple)) and answer.strip() in accepted
            scores.append(1.0 if ok else 0.0)
        return scores


class CaptionAccuracy(ORM):
    """(smoothed sentence BLEU-4 + ROUGE-L F1 with stemming) / 2 against `image_caption`."""

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        from nltk.tokenize import NLTKWordTokenizer
        from nltk.translate.bleu_score import SmoothingFunction
        from rouge_score import rouge_scorer

        # nltk.word_tokenize needs the punkt_tab download; its word splitter alone does not.
        self._tokenize = NLTKWordTokenizer().tokenize
        self._smooth = SmoothingFunction().method1
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def __call__(self, completions, image_caption, **kwargs) -> list[float]:
        return [self.score(c, ref) for c, ref in zip(completions, image_caption)]

    def score(self, completion: str, reference: Any) -> float:
        from nltk.translate.bleu_score import sentence_bleu

        caption = first_block(completion, "caption")
        if caption is None or not isinstance(reference, str) or len(caption) > MAX_BLOCK_CHARS:
            return 0.0
        caption = caption.strip()
        hyp = self._tokenize(caption.lower())
        ref = self._tokenize(reference.lower())
        bleu = sentence_bleu([ref], hyp, smoothing_function=self._smooth) if hyp and ref else 0.0
        rouge = self._rouge.score(reference, caption)["rougeL"].fmeasure
        return min(1.0, max(0.0, (bleu + rouge) / 2))


REWARDS = {
    "external_format": Format,
    "external_bbox_acc": BoundingBoxAccuracy,
    "extern_vqa_acc": VQAAccuracy,
    "external_caption_acc": CaptionAccuracy,
}
orms.update(REWARDS)
