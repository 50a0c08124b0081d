"""The caption reward's text metrics: smoothed sentence BLEU-4 (nltk's) and ROUGE-L F1 with stemming
(rouge-score's), on cached tokens with a bit-parallel LCS and without downloads.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter


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
