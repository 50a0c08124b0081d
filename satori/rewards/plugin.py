"""SATORI reward functions, registered in ms-swift's reward registry on import.

ms-swift builds each class as `Class(args=...)` and calls
`instance(completions, **columns)`, every dataset column arriving as a list
aligned with `completions`. Each reward returns one float in [0, 1] per
completion and never raises, hangs or returns a non-finite value, whatever
the model wrote and whatever the columns hold.

Two semantics, chosen by SATORI_REWARD_MODE when an instance is built:

- `paper` reproduces the published plugin (justairr/SATORI-R1 plugin.py)
  value for value, including its fixed min_pixels=200704 / max_pixels=401408.
  Where the published code would crash or return NaN, it returns 0.
- `corrected` (the default) uses the processor's real pixel limits
  (MIN_PIXELS / MAX_PIXELS) and the stricter rules documented on each class.

The differences between the two, and why, are listed in DIFFERENCES below.
Block extraction is linear (str.find, no backtracking regex), parsing is
bounded (length and nesting are capped before anything is parsed), box
unions are exact areas (coordinate compression, no polygons) and the caption
metrics run on cached tokens with a bit-parallel LCS.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from swift.rewards import ORM, orms

from satori.core.resize import seen_size
from satori.core.reward_registry import REWARD_CLASSES
from satori.rewards.completion import (
    MAX_BLOCK_CHARS,
    coerce_boxes,
    first_block,
    normalize_answer,
    option_letter,
    paper_format,
    paper_parse_boxes,
    parse_boxes,
    strict_format,
)
from satori.rewards.geometry import iou, positive_int, union_areas_batch
from satori.rewards.text_overlap import bleu_tokens, rouge_l_f1, rouge_tokens, sentence_bleu4

# qwen-vl-utils' own processor defaults, used when MIN_PIXELS / MAX_PIXELS are unset.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
# What the published bbox reward hard-codes, whatever the training processor used.
PAPER_MIN_PIXELS = 200704
PAPER_MAX_PIXELS = 401408
MODES = ("corrected", "paper")

DIFFERENCES = """\
Where `corrected` differs from `paper` (the published plugin), and why:
1. bbox pixel limits: paper maps boxes back with min_pixels=200704, max_pixels=401408 whatever
   the processor used; corrected uses MIN_PIXELS/MAX_PIXELS, the values the model was trained
   with. For images under ~200k pixels the published factor is wrong (the model saw a smaller
   image than the reward assumes).
2. bbox parsing: paper accepts any Python literal that ast.literal_eval reads (True counts as 1,
   1e309 is inf); corrected accepts only JSON-style numbers in [[x1,y1,x2,y2], ...] or one flat
   [x1,y1,x2,y2], at most two levels deep.
3. inverted boxes (x2 < x1 or y2 < y1): paper silently reorders the corners (shapely.box does);
   corrected scores such a box as covering nothing, so a model is not paid for malformed output.
4. boxes outside the image: paper keeps the overhang, which only enlarges the union; corrected
   clips predicted boxes to the image, which keeps areas finite for absurd coordinates and gives
   the same value for every box that lies inside the image.
5. answers: paper requires the stripped answer to equal an accepted answer exactly; corrected
   also ignores case, surrounding punctuation and quotes, repeated inner whitespace, and reads an
   option letter written as "B", "B.", "B)", "(B)" or "B. <option text>" as "B".
6. format: paper's regex lets a block swallow other tags (<caption>a</caption><caption>b...) and,
   through re.MULTILINE, accepts any text after a newline that follows </answer>; it also wants
   the <bbox> content to end in "]]". corrected requires exactly three blocks with no tag inside
   another and nothing but whitespace around them, the <bbox> content starting with "[[".
7. both modes: blocks over MAX_BLOCK_CHARS characters score 0 (the published code would parse
   them, slowly, or crash); where the published code raises (width 0, aspect ratio over 200,
   ragged ground truth, deep nesting) or returns NaN (inf coordinates), the reward is 0.
8. both modes: captions are tokenized without nltk's punkt download: sentences split at . ! ?
   followed by whitespace, then nltk's Treebank word tokenizer (as nltk.word_tokenize does after
   punkt). On captions without abbreviations the values agree with nltk and rouge-score to 1e-9;
   punkt's abbreviation rules ("Dr.", "e.g.") are not reproduced.
"""


# --- configuration --------------------------------------------------------------------------


def reward_mode() -> str:
    mode = os.environ.get("SATORI_REWARD_MODE", "corrected")
    if mode not in MODES:
        raise ValueError(f"SATORI_REWARD_MODE={mode!r}: expected one of {MODES}")
    return mode


def pixel_limits(mode: str) -> tuple[int, int]:
    """The pixel limits the bbox reward assumes the processor used."""
    if mode == "paper":
        return PAPER_MIN_PIXELS, PAPER_MAX_PIXELS
    return (
        int(os.environ.get("MIN_PIXELS", DEFAULT_MIN_PIXELS)),
        int(os.environ.get("MAX_PIXELS", DEFAULT_MAX_PIXELS)),
    )


class Format(ORM):
    """1 when the completion is a <caption> block, a <bbox> block starting with [[, an <answer> block.

    corrected: exactly those three blocks, in that order, no SATORI tag inside a block, only
    whitespace around them. paper: the published regex (see DIFFERENCES, item 6).
    """

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.mode = reward_mode()

    def __call__(self, completions: list[str], **kwargs) -> list[float]:
        return [self.score(c) for c in completions]

    def score(self, completion: Any) -> float:
        if not isinstance(completion, str):
            return 0.0
        if self.mode == "paper":
            return 1.0 if paper_format(completion) else 0.0
        return 1.0 if strict_format(completion) else 0.0


class BoundingBoxAccuracy(ORM):
    """IoU of the union of predicted boxes (mapped back to original pixels) with the union of the truth.

    The model writes boxes in pixels of the image it saw (resized by smart_resize with the
    processor's pixel limits); they are scaled by original/seen size before the comparison.
    """

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.mode = reward_mode()
        self.min_pixels, self.max_pixels = pixel_limits(self.mode)

    def __call__(self, completions, bboxs, width, height, **kwargs) -> list[float]:
        scores = [0.0] * len(completions)
        rows, pairs, scales, sizes = [], [], [], []
        parse_block = paper_parse_boxes if self.mode == "paper" else parse_boxes
        # ms-swift repeats a prompt's columns for each of its generations: parse each `bboxs` once.
        truths: dict[int, list | None] = {}
        for i, (completion, truth, w, h) in enumerate(zip(completions, bboxs, width, height)):
            pred = parse_block(first_block(completion, "bbox"))
            if pred is None:
                continue
            gt = truths[id(truth)] if id(truth) in truths else truths.setdefault(id(truth), coerce_boxes(truth))
            w, h = positive_int(w), positive_int(h)
            if gt is None or w is None or h is None:
                continue
            seen = seen_size(w, h, self.min_pixels, self.max_pixels)
            if seen is None:  # the processor refuses the image (aspect ratio, a side resized to 0)
                continue
            rows.append(i)
            pairs.append((pred, gt))
            scales.append((w / seen[0], h / seen[1]))
            sizes.append((float(w), float(h)))
        if rows:
            # paper: corners reordered, as shapely.box does; corrected: predicted boxes clipped to the
            # image (inverted boxes cover nothing either way in corrected).
            paper = self.mode == "paper"
            with np.errstate(all="ignore"):  # inf - inf from absurd paper-mode boxes: NaN, scored 0
                inter, union = union_areas_batch(
                    pairs, scales=scales, clip_to=None if paper else sizes, order_corners=paper
                )
            for i, a, u in zip(rows, inter.tolist(), union.tolist()):
                scores[i] = min(1.0, iou(a, u))
        return scores

    def score(self, completion: Any, truth: Any, width: Any, height: Any) -> float:
        return self([completion], [truth], [width], [height])[0]


class VQAAccuracy(ORM):
    """1 when the first <answer> block is one of `possible_answers`.

    paper: the stripped text must be in the list exactly. corrected: compared after
    normalize_answer, and an option letter ("B.", "(B)", "B. square") matches an accepted
    single-letter answer "B".
    """

    def __init__(self, args=None, **kwargs):
        super().__init__(args, **kwargs)
        self.mode = reward_mode()

    def __call__(self, completions, possible_answers, **kwargs) -> list[float]:
        return [self.score(c, a) for c, a in zip(completions, possible_answers)]

    def score(self, completion: Any, accepted: Any) -> float:
        answer = first_block(completion, "answer")
        if answer is None or len(answer) > MAX_BLOCK_CHARS:
            return 0.0
        answer = answer.strip()
        if self.mode == "paper":
            # The published `answer in possible_answers`: a list membership (a substring test if the
            # column is a plain string, as the published code would do).
            if isinstance(accepted, (list, tuple)):
                return 1.0 if answer in accepted else 0.0
            return 1.0 if isinstance(accepted, str) and answer in accepted else 0.0
        if isinstance(accepted, str):
            accepted = [accepted]
        if not isinstance(accepted, (list, tuple)):
            return 0.0
        accepted = [a for a in accepted if isinstance(a, str)]
        normalized = {normalize_answer(a) for a in accepted}
        if normalize_answer(answer) in normalized:
            return 1.0
        letter = option_letter(answer)
        letters = {a.strip() for a in accepted if len(a.strip()) == 1 and a.strip().isupper()}
        return 1.0 if letter is not None and letter in letters else 0.0


class CaptionAccuracy(ORM):
    """(smoothed sentence BLEU-4 on lower-cased word tokens + ROUGE-L F1 with stemming) / 2.

    The same in both modes (the published metric, tokenized without downloads: DIFFERENCES 8).
    """

    def __call__(self, completions, image_caption, **kwargs) -> list[float]:
        return [self.score(c, ref) for c, ref in zip(completions, image_caption)]

    def score(self, completion: Any, reference: Any) -> float:
        caption = first_block(completion, "caption")
        if caption is None or not isinstance(reference, str) or len(caption) > MAX_BLOCK_CHARS:
            return 0.0
        if len(reference) > MAX_BLOCK_CHARS:
            return 0.0
        caption = caption.strip()
        bleu = sentence_bleu4(bleu_tokens(reference.lower()), bleu_tokens(caption.lower()))
        rouge = rouge_l_f1(rouge_tokens(reference), rouge_tokens(caption))
        value = (bleu + rouge) / 2
        return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


# The classes of the registry (satori/core/reward_registry.py), found by the class names it gives.
REWARDS = {name: globals()[class_name] for name, class_name in REWARD_CLASSES.items()}

# The wiring control (train.reward_control: invert): every reward r is handed to GRPO as 1 - r. A run
# that learns what the rewards ask must then move the true rewards down, not up.
CONTROL_ENV = "SATORI_REWARD_CONTROL"


def with_control(cls: type[ORM]) -> type[ORM]:
    """cls, its values inverted when SATORI_REWARD_CONTROL=invert; same class name (ms-swift logs by it)."""

    def __call__(self, completions, **kwargs) -> list[float]:
        values = cls.__call__(self, completions, **kwargs)
        return [1.0 - v for v in values] if os.environ.get(CONTROL_ENV) == "invert" else values

    return type(cls.__name__, (cls,), {"__call__": __call__, "__doc__": cls.__doc__})


orms.update({name: with_control(cls) for name, cls in REWARDS.items()})
