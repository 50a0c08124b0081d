"""Straightforward, per-sample implementations of the SATORI reward semantics.

The yardstick for stages/rewards.py: tests check value-for-value agreement with it, and
benchmarks/rewards.py measures how much faster the real module is. It is written the obvious
way on purpose: lazy regexes, ast.literal_eval, shapely's unary_union, nltk's sentence_bleu and
a new rouge-score scorer for every sample.
"""

from __future__ import annotations

import ast
import re

from qwen_vl_utils import smart_resize

from satori.rewards.plugin import PAPER_MAX_PIXELS, PAPER_MIN_PIXELS

PUBLISHED_FORMAT = re.compile(
    r"^\s*<caption>.*?</caption>\s*<bbox>\s*\[\[.*?\]\]\s*</bbox>\s*<answer>.*?</answer>\s*$",
    re.DOTALL | re.MULTILINE,
)


def published_format(completion: str) -> float:
    return 1.0 if PUBLISHED_FORMAT.match(completion) else 0.0


def bbox_reward(completion, truth, width, height, *, mode="paper", min_pixels=None, max_pixels=None) -> float:
    """The published bbox reward (mode paper), or its corrected semantics, one sample, with shapely."""
    from shapely.geometry import box
    from shapely.ops import unary_union

    match = re.search(r"<bbox>(.*?)</bbox>", completion, re.DOTALL)
    if not match:
        return 0.0
    try:
        pred = ast.literal_eval(match.group(1))
    except (SyntaxError, ValueError):
        return 0.0
    if isinstance(pred, list) and all(not isinstance(x, list) for x in pred):
        pred = [pred]
    if not isinstance(pred, list) or any(
        not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)) for b in pred
    ):
        return 0.0
    if mode == "paper":
        min_pixels, max_pixels = PAPER_MIN_PIXELS, PAPER_MAX_PIXELS
    seen_h, seen_w = smart_resize(height, width, 28, min_pixels, max_pixels)
    sx, sy = width / seen_w, height / seen_h
    scaled = [[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for x1, y1, x2, y2 in pred]
    if mode != "paper":
        scaled = [[max(0, x1), max(0, y1), min(width, x2), min(height, y2)] for x1, y1, x2, y2 in scaled]
        scaled = [b for b in scaled if b[2] > b[0] and b[3] > b[1]]
    pred_union = unary_union([box(*b) for b in scaled])
    truth_union = unary_union([box(*b) for b in truth])
    return pred_union.intersection(truth_union).area / (pred_union.union(truth_union).area + 1e-6)


def word_tokenize(text: str) -> list[str]:
    """nltk.word_tokenize with a regex in place of punkt (not installable offline): sentences, then Treebank."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [token for sentence in re.split(r"(?<=[.!?])\s+(?=\S)", text) for token in tokenizer.tokenize(sentence)]


def caption_reward(completion: str, reference: str) -> float:
    """BLEU-4 (nltk, method1) + ROUGE-L F1 (rouge-score, new scorer) over 2, one sample."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    match = re.search(r"<caption>(.*?)</caption>", completion, re.DOTALL)
    if not match:
        return 0.0
    caption = match.group(1).strip()
    bleu = sentence_bleu(
        [word_tokenize(reference.lower())],
        word_tokenize(caption.lower()),
        smoothing_function=SmoothingFunction().method1,
    )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = scorer.score(reference, caption)["rougeL"].fmeasure
    return (bleu + rouge) / 2


# Completions a model in training might write, built to break a naive parser (size, nesting, tags).
ADVERSARIAL_COMPLETIONS = [
    "",
    "x" * 1_000_000,
    "<caption>" * 200_000,
    "<bbox>" * 150_000 + "</bbox>",
    "<caption>a</caption><bbox>" + "[" * 100_000 + "]" * 100_000 + "</bbox><answer>b</answer>",
    "<caption>a</caption><bbox>[[" + "1" * 4000 + "x]]</bbox><answer>b</answer>",
    "<caption>" + "word " * 200_000 + "</caption><bbox>[[1,2,3,4]]</bbox><answer>b</answer>",
    "<caption>a</caption>\x00<bbox>[[1,2,3,4]]</bbox><answer>\x00é漢字</answer>",
    "<caption>a</caption><bbox>[[1,2,3,4]]</bbox><answer>" + "</answer>" * 100_000,
    "<caption>" + "</caption> <bbox> [[" * 50_000 + "]] </bbox> <answer>" * 50_000,
    "<bbox>[[1e309, 0, 1, 1]]</bbox>",
    "<bbox>[[nan, 0, 1, 1]]</bbox>",
    "<bbox>[[1, 2, 3, 4], {'a': 1}]</bbox>",
    "<bbox>" + "9" * 5000 + "</bbox>",
    "<bbox>[[" + "9" * 400 + ", 0, 1, 1]]</bbox>",
]
