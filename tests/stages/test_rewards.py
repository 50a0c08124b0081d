from __future__ import annotations

import pytest

from stages import rewards

GOOD = "<caption>A red circle on a light gray background.</caption> <bbox>[[10,10,50,50]]</bbox> <answer>red</answer>"


def columns(n=1, **overrides):
    base = dict(
        bboxs=[[[10, 10, 50, 50]]],
        width=[224],
        height=[224],
        possible_answers=[["red", "Red"]],
        image_caption=["A red circle on a light gray background."],
    )
    base.update(overrides)
    return {k: v * n for k, v in base.items()}


def test_the_published_names_are_registered():
    from swift.rewards import orms

    for name in ("external_format", "external_bbox_acc", "extern_vqa_acc", "external_caption_acc"):
        assert orms[name] is rewards.REWARDS[name]


@pytest.mark.parametrize(
    "completion, expected",
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\n ", 1.0),
        ("<caption>x</caption><bbox>[[1,2,3,4]]</bbox><answer>y</answer>", 1.0),
        ("<bbox>[[1,2,3,4]]</bbox><caption>x</caption><answer>y</answer>", 0.0),  # order
        ("<caption>x</caption><bbox>[1,2,3,4]</bbox><answer>y</answer>", 0.0),  # content must start with [[
        ("Sure! " + GOOD, 0.0),  # text outside the blocks
        (GOOD + " done", 0.0),
        ("<caption>x</caption><bbox>[[1,2,3,4]]</bbox>", 0.0),
        ("", 0.0),
    ],
)
def test_format(completion, expected):
    assert rewards.Format()([completion]) == [expected]


def test_bbox_exact_box_scores_one_and_disjoint_zero():
    reward = rewards.BoundingBoxAccuracy()
    far = GOOD.replace("[[10,10,50,50]]", "[[100,100,150,150]]")
    assert reward([GOOD, far], **columns(2)) == [pytest.approx(1.0, abs=1e-6), 0.0]


def test_bbox_union_iou_value():
    # Predicted [0,0,20,10] against truth [10,0,30,10]: overlap 100, union 300.
    reward = rewards.BoundingBoxAccuracy()
    completion = GOOD.replace("[[10,10,50,50]]", "[[0,0,20,10]]")
    assert reward([completion], **columns(bboxs=[[[10, 0, 30, 10]]])) == [pytest.approx(100 / 300, rel=1e-6)]


def test_bbox_scales_from_the_resized_image(monkeypatch):
    # 1000x500 with MAX_PIXELS 200704 is seen as 616x308: a predicted full-image box maps back to 1000x500.
    monkeypatch.setenv("MAX_PIXELS", "200704")
    reward = rewards.BoundingBoxAccuracy()
    completion = GOOD.replace("[[10,10,50,50]]", "[[0,0,616,308]]")
    cols = columns(bboxs=[[[0, 0, 1000, 500]]], width=[1000], height=[500])
    assert reward([completion], **cols) == [pytest.approx(1.0, abs=1e-6)]


@pytest.mark.parametrize(
    "block",
    ["[[1e309,0,1,1]]", "[['a',0,1,1]]", "[[1,2,3]]", "nonsense", "[" * 5000, "[[True,0,1,1]]", "{'x': 1}"],
)
def test_bbox_never_raises_on_garbage(block):
    completion = f"<caption>x</caption><bbox>{block}</bbox><answer>y</answer>"
    assert rewards.BoundingBoxAccuracy()([completion], **columns()) == [0.0]


def test_bbox_bad_columns_score_zero():
    reward = rewards.BoundingBoxAccuracy()
    assert reward([GOOD], **columns(width=[0])) == [0.0]
    assert reward([GOOD], **columns(bboxs=[None])) == [0.0]
    assert reward([GOOD], **columns(width=["wide"])) == [0.0]


def test_vqa_accuracy_is_membership_of_the_stripped_answer():
    reward = rewards.VQAAccuracy()
    completions = [GOOD, GOOD.replace(">red<", "> Red <"), GOOD.replace(">red<", ">blue<"), "no tags"]
    assert reward(completions, **columns(4)) == [1.0, 1.0, 0.0, 0.0]


def test_caption_identical_scores_one_and_missing_zero():
    reward = rewards.CaptionAccuracy()
    assert reward([GOOD, "no caption"], **columns(2)) == [pytest.approx(1.0), 0.0]


def test_caption_matches_nltk_and_rouge_score_on_plain_words():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    reference = "A red circle and a blue square on a light gray background."
    caption = "A blue circle and a red triangle on a gray background."
    completion = f"<caption>{caption}</caption><bbox>[[1,1,2,2]]</bbox><answer>x</answer>"
    bleu = sentence_bleu(
        [reference.lower().replace(".", " .").split()],
        caption.lower().replace(".", " .").split(),
        smoothing_function=SmoothingFunction().method1,
    )
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, caption)["rougeL"].fmeasure
    got = rewards.CaptionAccuracy()([completion], **columns(image_caption=[reference]))
    assert got == [pytest.approx((bleu + rouge) / 2, abs=1e-9)]
    assert 0.2 < got[0] < 0.9
