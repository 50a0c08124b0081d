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
import math
import numbers
import os
import re
from collections import Counter
from typing import Any

from qwen_vl_utils import smart_resize
from swift.rewards import ORM, orms

from stages.config import IMAGE_FACTOR

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


@functools.lru_cache(maxsize=65536)
def seen_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) the processor resizes an image to; None where qwen-vl-utils refuses it."""
    try:
        seen_h, seen_w = smart_resize(height, width, IMAGE_FACTOR, min_pixels, max_pixels)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    # Thin images can floor to 0 pixels on a side under max_pixels (the published code divides by it).
    return (seen_w, seen_h) if seen_w > 0 and seen_h > 0 else None


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
        return 1.0 if _STRICT_FORMAT.fullmatch(completion) else 0.0


# --- boxes ----------------------------------------------------------------------------------

# Possessive and atomic: no backtracking into a number, so a failed match stays linear.
_NUMBER_CORE = r"[-+]?(?>\d++(?:\.\d*+)?|\.\d++)(?:[eE][-+]?\d++)?+"
_NUMBER = rf"\s*+{_NUMBER_CORE}\s*+"
_BOX = rf"\[{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\]"
_FLAT_BOX = re.compile(_BOX)
_BOX_LIST = re.compile(rf"\[\s*+{_BOX}(?:\s*+,\s*+{_BOX})*+\s*+\]")
_NUMBERS = re.compile(_NUMBER_CORE)


def parse_boxes(block: str | None) -> list[tuple[float, float, float, float]] | None:
    """Boxes of a <bbox> block: [[x1,y1,x2,y2], ...] or one flat [x1,y1,x2,y2]; None if anything else.

    A regular expression with no nesting: nothing deeper than two brackets, nothing but numbers.
    Numbers that overflow a float (1e309) make the whole block unusable.
    """
    if block is None or len(block) > MAX_BLOCK_CHARS:
        return None
    stripped = block.strip()
    if not (_BOX_LIST.fullmatch(stripped) or _FLAT_BOX.fullmatch(stripped)):
        return None
    values = [float(v) for v in _NUMBERS.findall(stripped)]
    if not all(math.isfinite(v) for v in values) or len(values) > 4 * MAX_BOXES:
        return None
    return [tuple(values[i : i + 4]) for i in range(0, len(values), 4)]


def paper_parse_boxes(block: str | None) -> list[tuple[float, float, float, float]] | None:
    """The published parsing: ast.literal_eval, a flat list wrapped, a list of 4-number lists."""
    if block is None or len(block) > MAX_BLOCK_CHARS:
        return None
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


def truth_boxes(value: Any) -> list[tuple[float, float, float, float]] | None:
    """Ground-truth boxes of the `bboxs` column (one flat box counts as one box); None if malformed."""
    if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_BOXES:
        return None
    boxes = []
    for box in value:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            return None
        if not all(_is_number(v) for v in box):
            return None
        try:
            box = tuple(float(v) for v in box)
        except OverflowError:
            return None
        if not all(math.isfinite(v) for v in box):
            return None
        boxes.append(box)
    return boxes


def _interval_cover(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Disjoint, sorted union of 1-D intervals."""
    merged: list[list[float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1][1] = hi
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def _length(cover: list[tuple[float, float]]) -> float:
    return sum(hi - lo for lo, hi in cover)


def _intersection_length(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def union_areas(pred: list[tuple], truth: list[tuple]) -> tuple[float, float]:
    """(area of ∪pred ∩ ∪truth, area of ∪pred ∪ ∪truth) for axis-aligned boxes x1<=x2, y1<=y2.

    Exact: a sweep over the distinct x coordinates; within each vertical slab the covered y
    lengths of both sets are merged intervals. Zero-area boxes cover nothing.
    """
    pred = [b for b in pred if b[2] > b[0] and b[3] > b[1]]
    truth = [b for b in truth if b[2] > b[0] and b[3] > b[1]]
    if len(pred) == 1 and len(truth) == 1:  # the common case, in closed form
        (a1, b1, a2, b2), (c1, d1, c2, d2) = pred[0], truth[0]
        w, h = min(a2, c2) - max(a1, c1), min(b2, d2) - max(b1, d1)
        inter = w * h if w > 0 and h > 0 else 0.0
        return inter, (a2 - a1) * (b2 - b1) + (c2 - c1) * (d2 - d1) - inter
    xs = sorted({b[0] for b in pred + truth} | {b[2] for b in pred + truth})
    inter = union = 0.0
    for left, right in zip(xs, xs[1:]):
        width = right - left
        p = _interval_cover([(b[1], b[3]) for b in pred if b[0] <= left and b[2] >= right])
        t = _interval_cover([(b[1], b[3]) for b in truth if b[0] <= left and b[2] >= right])
        both = _intersection_length(p, t)
        inter += width * both
        union += width * (_length(p) + _length(t) - both)
    return inter, union


def _iou(inter: float, union: float) -> float:
    value = inter / (union + 1e-6)  # the published denominator
    return value if math.isfinite(value) and 0.0 <= value else 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _positive_int(value: Any) -> int | None:
    """A width or height: a positive whole number (int or float), else None."""
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
        return [self.score(c, b, w, h) for c, b, w, h in zip(completions, bboxs, width, height)]

    def score(self, completion: Any, truth: Any, width: Any, height: Any) -> float:
        block = first_block(completion, "bbox")
        pred = paper_parse_boxes(block) if self.mode == "paper" else parse_boxes(block)
        gt = truth_boxes(truth)
        w, h = _positive_int(width), _positive_int(height)
        if pred is None or gt is None or w is None or h is None:
            return 0.0
        seen = seen_size(w, h, self.min_pixels, self.max_pixels)
        if seen is None:
            return 0.0
        sx, sy = w / seen[0], h / seen[1]
        if self.mode == "paper":
            # shapely.box reorders inverted corners; so does the published reward, implicitly.
            scaled = [_ordered((x1 * sx, y1 * sy, x2 * sx, y2 * sy)) for x1, y1, x2, y2 in pred]
            gt = [_ordered(b) for b in gt]
        else:
            scaled = [
                (max(0.0, x1 * sx), max(0.0, y1 * sy), min(float(w), x2 * sx), min(float(h), y2 * sy))
                for x1, y1, x2, y2 in pred
            ]
        try:
            return min(1.0, _iou(*union_areas(scaled, gt)))
        except OverflowError:
            return 0.0


def _ordered(box: tuple) -> tuple:
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


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


def _ngram_counts(tokens: tuple[str, ...], n: int) -> Counter:
    return Counter(zip(*(tokens[i:] for i in range(n)))) if len(tokens) >= n else Counter()


def sentence_bleu4(reference: tuple[str, ...], hypothesis: tuple[str, ...]) -> float:
    """nltk's sentence_bleu([reference], hypothesis, smoothing_function=method1), in floats."""
    numerators, denominators = [], []
    for n in range(1, 5):
        hyp = _ngram_counts(hypothesis, n)
        ref = _ngram_counts(reference, n)
        numerators.append(sum(min(count, ref[gram]) for gram, count in hyp.items()))
        denominators.append(max(1, sum(hyp.values())))
    if numerators[0] == 0:
        return 0.0
    log_sum = math.fsum(
        w * math.log((num if num else _SMOOTH_EPSILON) / den)
        for w, num, den in zip(_BLEU_WEIGHTS, numerators, denominators)
    )
    hyp_len, ref_len = len(hypothesis), len(reference)
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


# --- diagnostics for reward hacking ---------------------------------------------------------


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
        formatted += isinstance(completion, str) and bool(_STRICT_FORMAT.fullmatch(completion))
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


REWARDS = {
    "external_format": Format,
    "external_bbox_acc": BoundingBoxAccuracy,
    "extern_vqa_acc": VQAAccuracy,
    "external_caption_acc": CaptionAccuracy,
}
orms.update(REWARDS)
