"""Property tests (hypothesis): no input breaks a reward, and the fast paths equal the obvious code."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from benchmarks import reference_rewards
from satori.rewards import completion, geometry, text_overlap
from satori.rewards import plugin as rewards

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

FRAGMENTS = st.sampled_from(
    [
        "<caption>", "</caption>", "<bbox>", "</bbox>", "<answer>", "</answer>", "[[", "]]", "[", "]", ",", " ",
        "\n", "\t", "a", "red", "B", "1", "10", "-3", "2.5", "1e309", "nan", "True", "'x'", "{", "}", "\x00", "é",
    ]
)  # fmt: skip
TAGGY_TEXT = st.lists(FRAGMENTS, max_size=40).map("".join)
ANY_TEXT = st.one_of(TAGGY_TEXT, st.text(max_size=300))
JUNK = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.one_of(st.integers(), st.floats(), st.text(max_size=3)), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
COORD = st.integers(min_value=-50, max_value=700)
BOX = st.tuples(COORD, COORD, COORD, COORD).map(list)


@pytest.fixture(params=rewards.MODES)
def mode(request, monkeypatch):
    monkeypatch.setenv("SATORI_REWARD_MODE", request.param)
    return request.param


def _in_unit_interval(values, n):
    assert len(values) == n
    assert all(isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= 1.0 for v in values), values


@SETTINGS
@given(completions=st.lists(ANY_TEXT, min_size=1, max_size=4), data=st.data())
def test_no_completion_or_column_breaks_a_reward(mode, completions, data):
    n = len(completions)
    columns = {
        "bboxs": data.draw(st.lists(st.one_of(st.lists(BOX, min_size=1, max_size=3), JUNK), min_size=n, max_size=n)),
        "width": data.draw(st.lists(st.one_of(st.integers(-5, 5000), JUNK), min_size=n, max_size=n)),
        "height": data.draw(st.lists(st.one_of(st.integers(-5, 5000), JUNK), min_size=n, max_size=n)),
        "possible_answers": data.draw(st.lists(st.one_of(st.lists(st.text(max_size=5)), JUNK), min_size=n, max_size=n)),
        "image_caption": data.draw(st.lists(st.one_of(st.text(max_size=40), JUNK), min_size=n, max_size=n)),
    }
    for cls in rewards.REWARDS.values():
        _in_unit_interval(cls()(completions, **columns), n)


@SETTINGS
@given(text=TAGGY_TEXT)
def test_paper_format_is_the_published_regex(text):
    assert completion.paper_format(text) == bool(reference_rewards.PUBLISHED_FORMAT.match(text))


@SETTINGS
@given(text=TAGGY_TEXT, tag=st.sampled_from(["caption", "bbox", "answer"]))
def test_first_block_is_the_lazy_regex(text, tag):
    match = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    assert completion.first_block(text, tag) == (match.group(1) if match else None)


@SETTINGS
@given(pred=st.lists(BOX, min_size=1, max_size=6), truth=st.lists(BOX, min_size=1, max_size=6))
def test_union_areas_equal_shapely(pred, truth):
    from shapely.geometry import box
    from shapely.ops import unary_union

    order = lambda b: (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))  # noqa: E731
    pred, truth = [order(b) for b in pred], [order(b) for b in truth]
    p = unary_union([box(*b) for b in pred])
    t = unary_union([box(*b) for b in truth])
    inter, union = geometry.union_areas(pred, truth)
    assert inter == pytest.approx(p.intersection(t).area, abs=1e-6)
    assert union == pytest.approx(p.union(t).area, abs=1e-6)


@SETTINGS
@given(
    pred=st.lists(BOX, min_size=1, max_size=5),
    truth=st.lists(BOX.filter(lambda b: b[2] > b[0] and b[3] > b[1]), min_size=1, max_size=4),
    width=st.integers(20, 2000),
    height=st.integers(20, 2000),
    spaces=st.booleans(),
    flat=st.booleans(),
)
def test_bbox_equals_the_straightforward_version(monkeypatch, pred, truth, width, height, spaces, flat):
    assume(max(width, height) / min(width, height) < 200)
    sep = ", " if spaces else ","
    boxes = pred[:1] if flat else pred
    listed = "[" + sep.join("[" + sep.join(str(v) for v in b) + "]" for b in boxes) + "]"
    if flat:
        listed = listed[1:-1]
    completion = f"<caption>c</caption> <bbox>{listed}</bbox> <answer>a</answer>"
    for mode in rewards.MODES:
        monkeypatch.setenv("SATORI_REWARD_MODE", mode)
        monkeypatch.setenv("MIN_PIXELS", "3136")
        monkeypatch.setenv("MAX_PIXELS", "50176")
        got = rewards.BoundingBoxAccuracy()([completion], [truth], [width], [height])[0]
        try:
            want = reference_rewards.bbox_reward(
                completion, truth, width, height, mode=mode, min_pixels=3136, max_pixels=50176
            )
        except ZeroDivisionError:  # a side resized to 0 pixels: the published code crashes, ours says 0
            want = 0.0
        assert got == pytest.approx(min(1.0, want), abs=1e-9), mode


def _dp_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


WORDS = st.lists(
    st.sampled_from(["a", "red", "blue", "circle", "square", "on", "the", "gray", "background"]), max_size=25
)


@SETTINGS
@given(a=WORDS, b=WORDS)
def test_bit_parallel_lcs_equals_dynamic_programming(a, b):
    assert text_overlap.lcs_length(tuple(a), tuple(b)) == _dp_lcs(a, b)


@SETTINGS
@given(reference=WORDS, hypothesis=WORDS)
def test_bleu_equals_nltk(reference, hypothesis):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    assume(reference)
    want = sentence_bleu([reference], hypothesis, smoothing_function=SmoothingFunction().method1)
    assert text_overlap.sentence_bleu4(tuple(reference), tuple(hypothesis)) == pytest.approx(want, abs=1e-12)


@SETTINGS
@given(sentence=st.from_regex(r"[a-z ,]{0,40}[a-z][.!?]?", fullmatch=True))
def test_plain_sentence_fast_path_equals_the_treebank_tokenizer(sentence):
    from nltk.tokenize import NLTKWordTokenizer

    assert list(text_overlap.bleu_tokens(sentence)) == NLTKWordTokenizer().tokenize(sentence)


CAPTION_WORDS = st.lists(
    st.sampled_from(
        ["A", "red", "circle", "squares", "and", "an", "orange", "triangle", "on", "gray", "backgrounds", "running"]
    ),
    min_size=1,
    max_size=14,
).map(" ".join)


@SETTINGS
@given(reference=CAPTION_WORDS, caption=CAPTION_WORDS, period=st.booleans())
def test_caption_equals_nltk_and_rouge_score(reference, caption, period):
    reference += "." if period else ""
    completion = f"<caption> {caption} </caption><bbox>[[1,1,2,2]]</bbox><answer>x</answer>"
    got = rewards.CaptionAccuracy()([completion], [reference])[0]
    assert got == pytest.approx(reference_rewards.caption_reward(completion, reference), abs=1e-9)
