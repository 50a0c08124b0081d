"""A SATORI completion read as the rewards read it: its blocks, its format, its boxes, its answer.

Model output is untrusted: extraction is linear (str.find, no backtracking regex) and parsing is
bounded (length and nesting capped before anything is parsed). No ms-swift here: the galleries and
the rollout samples parse completions with it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

import numpy as np

# Model output is untrusted: blocks longer than this are not parsed (they score 0).
MAX_BLOCK_CHARS = 4096
MAX_BOXES = 100


# --- block extraction -----------------------------------------------------------------------


def first_block(text: Any, tag: str) -> str | None:
    """Text inside the first <tag>...</tag> (as re.search(r'<tag>(.*?)</tag>', DOTALL) finds it), or None.

    Two str.find calls: linear, where the lazy regex is quadratic on a long text with many
    opening tags and no closing one.
    """
    if not isinstance(text, str):
        return None
    opening, closing = f"<{tag}>", f"</{tag}>"
    start = text.find(opening)
    if start < 0:
        return None
    end = text.find(closing, start + len(opening))
    return None if end < 0 else text[start + len(opening) : end]


# --- format ---------------------------------------------------------------------------------

_TAG = r"</?(?:caption|bbox|answer)>"
_NO_TAG = rf"(?:(?!{_TAG}).)*"  # any text without a SATORI tag in it (tempered: linear time)
_STRICT_FORMAT = re.compile(
    rf"\s*<caption>{_NO_TAG}</caption>\s*<bbox>\s*\[\[{_NO_TAG}</bbox>\s*<answer>{_NO_TAG}</answer>\s*", re.DOTALL
)
_PAPER_START = re.compile(r"\s*<caption>")
_PAPER_TO_BBOX = re.compile(r"</caption>\s*<bbox>\s*\[\[")
_PAPER_TO_ANSWER = re.compile(r"\]\]\s*</bbox>\s*<answer>")
_PAPER_END = re.compile(r"</answer>\s*$", re.MULTILINE)


def strict_format(text: Any) -> bool:
    """The corrected format rule: exactly the three blocks, in order, no tag inside a block, whitespace around."""
    return isinstance(text, str) and bool(_STRICT_FORMAT.fullmatch(text))


def paper_format(text: str) -> bool:
    """The published regex, re.match(r'^\\s*<caption>.*?</caption>\\s*<bbox>\\s*\\[\\[.*?\\]\\]\\s*</bbox>
    \\s*<answer>.*?</answer>\\s*$', DOTALL | MULTILINE), decided in linear time.

    Each lazy `.*?` only has to reach some later anchor, so taking the earliest occurrence of
    each anchor leaves the most room for the next: the regex matches exactly when this greedy
    chain of searches succeeds, without the regex engine's backtracking.
    """
    start = _PAPER_START.match(text)
    if not start:
        return False
    to_bbox = _PAPER_TO_BBOX.search(text, start.end())
    if not to_bbox:
        return False
    to_answer = _PAPER_TO_ANSWER.search(text, to_bbox.end())
    return bool(to_answer and _PAPER_END.search(text, to_answer.end()))


# --- boxes ----------------------------------------------------------------------------------

# Possessive and atomic: no backtracking into a number, so a failed match stays linear. ASCII digits only.
_NUMBER = re.compile(r"([-+]?(?>\d++(?:\.\d*+)?|\.\d++)(?:[eE][-+]?\d++)?+)", re.ASCII)
_DROP_WHITESPACE = str.maketrans("", "", " \t\n\r\f\v")
# A block's shape once every number is written n and whitespace dropped, for 1..MAX_BOXES boxes.
_BOX_SHAPES = {"[" + ",".join(["[n,n,n,n]"] * k) + "]": k for k in range(1, MAX_BOXES + 1)}
_BOX_SHAPES["[n,n,n,n]"] = 1  # one flat box


def parse_boxes(block: str | None) -> list[tuple[float, float, float, float]] | None:
    """Boxes of a <bbox> block: [[x1,y1,x2,y2], ...] or one flat [x1,y1,x2,y2]; None if anything else.

    No recursive parser: the block's shape (numbers as `n`, ASCII whitespace dropped) must be one
    of the shapes above, so nothing deeper than two brackets and nothing but numbers gets through.
    A number that overflows a float (1e309) makes the whole block unusable.
    """
    if block is None or len(block) > MAX_BLOCK_CHARS:
        return None
    try:  # the common case, strict JSON, parsed in C
        return coerce_boxes(json.loads(block))
    except (ValueError, RecursionError):
        pass  # "+1", ".5", "1.", "01" are numbers here but not JSON
    parts = _NUMBER.split(block)  # separator, number, separator, number, ..., separator
    if "n".join(parts[0::2]).translate(_DROP_WHITESPACE) not in _BOX_SHAPES:
        return None
    values = list(map(float, parts[1::2]))
    if not all(map(math.isfinite, values)):
        return None
    return list(zip(*[iter(values)] * 4))


# What parse_boxes accepts and ast.literal_eval may read differently: \r \f \v as whitespace, and
# integers with leading zeros (a SyntaxError in Python). Blocks with either go to literal_eval.
_LITERAL_UNSAFE = re.compile(r"[\r\f\v]|(?<![\d.eE])0\d", re.ASCII)


def paper_parse_boxes(block: str | None) -> list[tuple[float, float, float, float]] | None:
    """The published parsing: ast.literal_eval, a flat list wrapped, a list of 4-number lists.

    Blocks that are plain box lists take parse_boxes' regex path (same values, ~5x faster);
    everything else goes through ast.literal_eval as the published code does.
    """
    if block is None or len(block) > MAX_BLOCK_CHARS:
        return None
    if not _LITERAL_UNSAFE.search(block):
        fast = parse_boxes(block)
        if fast is not None:
            return fast
    try:
        value = ast.literal_eval(block)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, list) and all(not isinstance(x, list) for x in value):
        value = [value]
    if not isinstance(value, list) or any(
        not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)) for b in value
    ):
        return None
    try:
        boxes = [tuple(float(v) for v in b) for b in value]
    except OverflowError:  # an int too large for a float
        return None
    if not boxes or not all(math.isfinite(v) for b in boxes for v in b):
        return None
    return boxes


def coerce_boxes(value: Any) -> list[tuple[float, float, float, float]] | None:
    """Boxes from a parsed value: [[x1,y1,x2,y2], ...] or one flat [x1,y1,x2,y2] of finite numbers.

    Lists or tuples of int, float or numpy numbers; bool, str, None, NaN, inf or anything nested
    deeper gives None. Used for the `bboxs` column and for <bbox> blocks that are valid JSON.
    """
    if type(value) not in (list, tuple) or not value or len(value) > MAX_BOXES:
        return None
    if is_number(value[0]):
        value = [value]
    boxes = []
    for box in value:
        if type(box) not in (list, tuple) or len(box) != 4:
            return None
        if not set(map(type, box)) <= _PLAIN_NUMBER_TYPES and not all(map(is_number, box)):
            return None
        try:
            box = tuple(map(float, box))
        except OverflowError:  # an integer beyond float range
            return None
        if not all(map(math.isfinite, box)):
            return None
        boxes.append(box)
    return boxes


# --- answers --------------------------------------------------------------------------------

_SURROUNDING = " \t\r\n.,;:!?\"'`()[]{}"
# "(B)" / "(B) text", "B." / "B)" / "B. text", or a bare "B"; never "A red circle".
_OPTION = re.compile(r"\(([A-Z])\)(?:\s.*)?|([A-Z])[.)](?:\s.*)?|([A-Z])", re.DOTALL)


def normalize_answer(text: str) -> str:
    """Case-folded, inner whitespace collapsed, surrounding punctuation, quotes and brackets removed."""
    return " ".join(text.strip(_SURROUNDING).split()).casefold()


def option_letter(text: str) -> str | None:
    """The option letter of "B", "B.", "B)", "(B)", "(B) text" or "B. text"; None otherwise."""
    match = _OPTION.fullmatch(text.strip())
    return next((g for g in match.groups() if g), None) if match else None


_PLAIN_NUMBER_TYPES = {int, float}


def is_number(value: Any) -> bool:
    """int, float or a numpy scalar of either; not bool (a column of True is no coordinate)."""
    kind = type(value)
    return kind is int or kind is float or isinstance(value, (np.integer, np.floating))
