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

import ast
import functools
import json
import math
import os
import re
from collections import Counter
from typing import Any

import numpy as np
from swift.rewards import ORM, orms

from satori.resize import seen_size
from satori.reward_registry import REWARD_CLASSES

# qwen-vl-utils' own processor defaults, used when MIN_PIXELS / MAX_PIXELS are unset.
DEFAULT_MIN_PIXELS = 4 * 28 * 28
DEFAULT_MAX_PIXELS = 16384 * 28 * 28
# What the published bbox reward hard-codes, whatever the training processor used.
PAPER_MIN_PIXELS = 200704
PAPER_MAX_PIXELS = 401408
# Model output is untrusted: blocks longer than this are not parsed (they score 0).
MAX_BLOCK_CHARS = 4096
MAX_BOXES = 100
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
    if _is_number(value[0]):
        value = [value]
    boxes = []
    for box in value:
        if type(box) not in (list, tuple) or len(box) != 4:
            return None
        if not set(map(type, box)) <= _PLAIN_NUMBER_TYPES and not all(map(_is_number, box)):
            return None
        try:
            box = tuple(map(float, box))
        except OverflowError:  # an integer beyond float range
            return None
        if not all(map(math.isfinite, box)):
            return None
        boxes.append(box)
    return boxes


def union_areas_batch(
    pairs: list[tuple[list[tuple], list[tuple]]],
    *,
    scales: list[tuple[float, float]] | None = None,
    clip_to: list[tuple[float, float]] | None = None,
    order_corners: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(area of ∪P ∩ ∪T, area of ∪P ∪ ∪T) for each (P, T) pair of axis-aligned box lists.

    Exact coordinate compression, vectorized over the batch: the distinct x and y coordinates of a
    pair cut the plane into cells; a cell is covered by a set when its centre lies in one of the
    set's boxes; the areas are sums of covered cells. Pairs with the same box counts are computed
    together. A box with x2 <= x1 or y2 <= y1 covers no cell.

    Applied to P first, per pair: `scales` (sx, sy) multiply its coordinates, `clip_to` (w, h)
    clips them to the image; `order_corners` sorts the corners of P and T boxes (shapely's view).
    """
    inter = np.zeros(len(pairs))
    union = np.zeros(len(pairs))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (pred, truth) in enumerate(pairs):
        groups.setdefault((len(pred), len(truth)), []).append(i)
    for (n_pred, n_truth), rows in groups.items():
        pred = np.array([v for i in rows for box in pairs[i][0] for v in box], dtype=np.float64)
        truth = np.array([v for i in rows for box in pairs[i][1] for v in box], dtype=np.float64)
        pred, truth = pred.reshape(len(rows), n_pred, 4), truth.reshape(len(rows), n_truth, 4)
        if scales is not None:
            pred = pred * np.array([scales[i] for i in rows])[:, None, [0, 1, 0, 1]]
        if clip_to is not None:
            limits = np.array([clip_to[i] for i in rows])[:, None, [0, 1, 0, 1]]
            pred = np.clip(pred, 0.0, limits)
        boxes = np.concatenate([pred, truth], axis=1)  # (B, K, 4)
        if order_corners:
            boxes = np.concatenate(
                [np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], axis=2
            )
        xs = np.sort(np.concatenate([boxes[:, :, 0], boxes[:, :, 2]], axis=1), axis=1)  # (B, 2K)
        ys = np.sort(np.concatenate([boxes[:, :, 1], boxes[:, :, 3]], axis=1), axis=1)
        cx, cy = (xs[:, :-1] + xs[:, 1:]) / 2, (ys[:, :-1] + ys[:, 1:]) / 2
        in_x = (boxes[:, :, 0, None] <= cx[:, None, :]) & (cx[:, None, :] < boxes[:, :, 2, None])  # (B, K, X)
        in_y = (boxes[:, :, 1, None] <= cy[:, None, :]) & (cy[:, None, :] < boxes[:, :, 3, None])  # (B, K, Y)
        # A cell (x, y) is covered by a set when some box of it spans both: a boolean matrix product.
        in_x, in_y = in_x.astype(np.float32), in_y.astype(np.float32)
        by_pred = np.matmul(in_x[:, :n_pred].transpose(0, 2, 1), in_y[:, :n_pred]) > 0  # (B, X, Y)
        by_truth = np.matmul(in_x[:, n_pred:].transpose(0, 2, 1), in_y[:, n_pred:]) > 0
        cell = np.diff(xs, axis=1)[:, :, None] * np.diff(ys, axis=1)[:, None, :]
        inter[rows] = (cell * (by_pred & by_truth)).sum(axis=(1, 2))
        union[rows] = (cell * (by_pred | by_truth)).sum(axis=(1, 2))
    return inter, union


def union_areas(pred: list[tuple], truth: list[tuple]) -> tuple[float, float]:
    """union_areas_batch for one pair."""
    inter, union = union_areas_batch([(pred, truth)])
    return float(inter[0]), float(union[0])


def _iou(inter: float, union: float) -> float:
    value = inter / (union + 1e-6)  # the published denominator
    return value if math.isfinite(value) and 0.0 <= value else 0.0


_PLAIN_NUMBER_TYPES = {int, float}


def _is_number(value: Any) -> bool:
    """int, float or a numpy scalar of either; not bool (a column of True is no coordinate)."""
    kind = type(value)
    return kind is int or kind is float or isinstance(value, (np.integer, np.floating))


def _positive_int(value: Any) -> int | None:
    """A width or height: a positive whole number (int or float), else None."""
    if type(value) is int:
        return value if value > 0 else None
    if not _is_number(value):
        return None
    try:
        if not math.isfinite(value) or value <= 0 or value != int(value):
            return None
    except OverflowError:  # an int beyond float range
        return None
    return int(value)


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
            w, h = _positive_int(w), _positive_int(h)
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
                scores[i] = min(1.0, _iou(a, u))
        return scores

    def score(self, completion: Any, truth: Any, width: Any, height: Any) -> float:
        return self([completion], [truth], [width], [height])[0]


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


# --- captions -------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
# Words separated by spaces, a comma right after a word, one final mark: "a red circle, a square."
_PLAIN_SENTENCE = re.compile(r"[a-z]+(?:,? +[a-z]+)*[.!?]?")
_PLAIN_TOKEN = re.compile(r"[a-z]+|[,.!?]")
_ROUGE_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_BLEU_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_SMOOTH_EPSILON = 0.1  # nltk SmoothingFunction().method1's epsilon


@functools.lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@functools.lru_cache(maxsize=1)
def _porter():
    from nltk.stem import porter

    return porter.PorterStemmer()  # what rouge-score's DefaultTokenizer(use_stemmer=True) uses


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _porter().stem(word) if len(word) > 3 else word


@functools.lru_cache(maxsize=65536)
def bleu_tokens(text: str) -> tuple[str, ...]:
    """nltk.word_tokenize(text) without punkt: sentences split at . ! ? + whitespace, then Treebank.

    Plain sentences (lower-case words, spaces, commas, one final mark) take a regex fast path
    that gives the Treebank tokenizer's exact output (checked by a property test).
    """
    tokens: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if _PLAIN_SENTENCE.fullmatch(sentence):
            tokens += _PLAIN_TOKEN.findall(sentence)
        else:
            tokens += _treebank().tokenize(sentence)
    return tuple(tokens)


@functools.lru_cache(maxsize=65536)
def rouge_tokens(text: str) -> tuple[str, ...]:
    """rouge-score's tokenize(text, PorterStemmer): lower-case, non-alphanumerics out, words > 3 stemmed."""
    words = _ROUGE_NON_ALNUM.sub(" ", text.lower()).split()
    return tuple(_stem(w) for w in words)


def _all_ngrams(tokens: tuple[str, ...]) -> Counter:
    """Counts of every 1- to 4-gram, in one Counter (a key's length is its order)."""
    return Counter(gram for n in range(1, 5) for gram in zip(*(tokens[i:] for i in range(n))))


@functools.lru_cache(maxsize=65536)
def _reference_ngrams(tokens: tuple[str, ...]) -> Counter:
    return _all_ngrams(tokens)


def sentence_bleu4(reference: tuple[str, ...], hypothesis: tuple[str, ...]) -> float:
    """nltk's sentence_bleu([reference], hypothesis, smoothing_function=method1), in floats."""
    ref = _reference_ngrams(reference)
    hyp = _all_ngrams(hypothesis)
    matched = [0, 0, 0, 0, 0]
    for gram in hyp.keys() & ref.keys():  # C-level intersection; clipped counts only where both have it
        count, available = hyp[gram], ref[gram]
        matched[len(gram)] += count if count < available else available
    if matched[1] == 0:
        return 0.0
    hyp_len, ref_len = len(hypothesis), len(reference)
    log_sum = 0.0
    for n, weight in enumerate(_BLEU_WEIGHTS, start=1):
        total = max(1, hyp_len - n + 1)
        log_sum += weight * math.log((matched[n] if matched[n] else _SMOOTH_EPSILON) / total)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_sum)


def lcs_length(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix): O(len(b)) integer ops."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for token in b:
        match = row & masks.get(token, 0)
        row = ((row + match) | (row - match)) & full
    return len(a) - bin(row).count("1")


def rouge_l_f1(reference: tuple[str, ...], prediction: tuple[str, ...]) -> float:
    """rouge-score's ROUGE-L F-measure (target = reference)."""
    if not reference or not prediction:
        return 0.0
    lcs = lcs_length(reference, prediction)
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


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


# The classes of the registry (satori/reward_registry.py), found by the class names it gives.
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
