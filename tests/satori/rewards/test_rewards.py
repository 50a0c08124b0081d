from __future__ import annotations

import pytest

from benchmarks import reference_rewards
from satori.rewards import plugin as rewards


@pytest.fixture(autouse=True)
def corrected_mode(monkeypatch):
    """Each test starts from the default semantics with qwen-vl-utils' pixel limits."""
    for name in ("SATORI_REWARD_MODE", "MIN_PIXELS", "MAX_PIXELS"):
        monkeypatch.delenv(name, raising=False)


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
        registered = orms[name]
        assert issubclass(registered, rewards.REWARDS[name]) and registered.__name__ == rewards.REWARDS[name].__name__


def test_the_control_hands_grpo_one_minus_each_reward(monkeypatch):
    """train.reward_control: invert (the wiring control) turns every value r into 1 - r, and only then."""
    from swift.rewards import orms

    completions = ["<caption>A red square.</caption> <bbox>[[0,0,10,10]]</bbox> <answer>A</answer>", "junk"]
    columns = {"image_caption": ["A red square.", "A blue circle."], "possible_answers": [["A"], ["B"]],
               "bboxs": [[[0, 0, 10, 10]], [[0, 0, 5, 5]]], "width": [224, 224], "height": [224, 224]}  # fmt: skip
    for name, cls in rewards.REWARDS.items():
        plain = cls()(completions, **columns)
        monkeypatch.delenv(rewards.CONTROL_ENV, raising=False)
        assert orms[name]()(completions, **columns) == plain
        monkeypatch.setenv(rewards.CONTROL_ENV, "invert")
        assert orms[name]()(completions, **columns) == [1.0 - v for v in plain]
        monkeypatch.delenv(rewards.CONTROL_ENV)


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


# --- issue 3: the two modes and the corrected rules ------------------------------------------


def test_mode_is_read_when_the_instance_is_built(monkeypatch):
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    paper = rewards.Format()
    monkeypatch.setenv("SATORI_REWARD_MODE", "corrected")
    corrected = rewards.Format()
    trailing = GOOD + "\nSome chatter after the answer."
    assert paper([trailing]) == [1.0]  # re.MULTILINE lets the published $ match before the newline
    assert corrected([trailing]) == [0.0]
    monkeypatch.setenv("SATORI_REWARD_MODE", "exact")
    with pytest.raises(ValueError, match="SATORI_REWARD_MODE='exact': expected one of"):
        rewards.Format()


@pytest.mark.parametrize(
    "completion, paper, corrected",
    [
        ("<caption>a</caption><caption>b</caption><bbox>[[1,2,3,4]]</bbox><answer>c</answer>", 1.0, 0.0),
        ("<caption>a</caption><bbox>[[1,2,3,4]]</bbox><answer>c</answer><answer>d</answer>", 1.0, 0.0),
        ("<caption>a</caption><bbox>[[1,2,3,4]] see above</bbox><answer>c</answer>", 0.0, 1.0),
        ("<caption>a</caption><bbox> [[1,2,3,4]]</bbox><answer>c</answer>", 1.0, 1.0),
        ("<caption>a<bbox></caption><bbox>[[1,2,3,4]]</bbox><answer>c</answer>", 1.0, 0.0),
    ],
)
def test_format_modes_differ_where_documented(monkeypatch, completion, paper, corrected):
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    assert rewards.Format()([completion]) == [paper]
    monkeypatch.setenv("SATORI_REWARD_MODE", "corrected")
    assert rewards.Format()([completion]) == [corrected]


def test_paper_bbox_uses_the_published_pixel_limits(monkeypatch):
    # A 224x224 image: the processor (qwen-vl-utils defaults) keeps 224x224, the published reward
    # assumes min_pixels=200704 and maps from 448x448. A box right in the model's pixels is right
    # for corrected and off by a factor of two for paper.
    completion = GOOD.replace("[[10,10,50,50]]", "[[0,0,112,112]]")
    cols = columns(bboxs=[[[0, 0, 112, 112]]])
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [pytest.approx(1.0, abs=1e-6)]
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [pytest.approx(0.25, abs=1e-6)]


def test_corrected_bbox_follows_min_and_max_pixels(monkeypatch):
    monkeypatch.setenv("MIN_PIXELS", str(448 * 448))
    completion = GOOD.replace("[[10,10,50,50]]", "[[0,0,224,224]]")
    cols = columns(bboxs=[[[0, 0, 112, 112]]])
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [pytest.approx(1.0, abs=1e-6)]


def test_inverted_boxes_count_in_paper_and_not_in_corrected(monkeypatch):
    # 448x448 is inside both the default and the published pixel limits: no rescaling either way.
    completion = GOOD.replace("[[10,10,50,50]]", "[[50,50,10,10]]")
    cols = columns(width=[448], height=[448])
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [0.0]
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [pytest.approx(1.0, abs=1e-6)]


def test_corrected_clips_boxes_to_the_image(monkeypatch):
    huge = GOOD.replace("[[10,10,50,50]]", "[[-1e300,-1e300,1e300,1e300]]")
    whole = GOOD.replace("[[10,10,50,50]]", "[[0,0,224,224]]")
    cols = columns(2, bboxs=[[[0, 0, 224, 224]]])
    assert rewards.BoundingBoxAccuracy()([huge, whole], **cols) == [pytest.approx(1.0, abs=1e-6)] * 2
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    assert rewards.BoundingBoxAccuracy()([huge, huge], **cols) == [0.0, 0.0]  # inf area: the published code gives NaN


def test_several_boxes_union_exactly():
    # Two overlapping predicted boxes (union 175) against one truth box inside them.
    completion = GOOD.replace("[[10,10,50,50]]", "[[0,0,10,10],[5,5,15,15]]")
    cols = columns(bboxs=[[[0, 0, 10, 10]]])
    assert rewards.BoundingBoxAccuracy()([completion], **cols) == [pytest.approx(100 / (175 + 1e-6), rel=1e-12)]


@pytest.mark.parametrize(
    "answer, accepted, corrected, paper",
    [
        ("red", ["red"], 1.0, 1.0),
        ("Red", ["red"], 1.0, 0.0),
        ("red.", ["red"], 1.0, 0.0),
        ('"red"', ["red"], 1.0, 0.0),
        ("light  gray", ["light gray"], 1.0, 0.0),
        ("B.", ["B"], 1.0, 0.0),
        ("(B)", ["B"], 1.0, 0.0),
        ("B)", ["B"], 1.0, 0.0),
        ("B. square", ["B"], 1.0, 0.0),
        ("(B) square", ["B"], 1.0, 0.0),
        ("b", ["B"], 1.0, 0.0),
        ("A red circle", ["A"], 0.0, 0.0),
        ("C.", ["B"], 0.0, 0.0),
        ("blue", ["red"], 0.0, 0.0),
        ("re", "red", 0.0, 1.0),  # a malformed string column: the published `in` is a substring test
    ],
)
def test_vqa_answers(monkeypatch, answer, accepted, corrected, paper):
    completion = GOOD.replace("<answer>red</answer>", f"<answer>{answer}</answer>")
    assert rewards.VQAAccuracy()([completion], possible_answers=[accepted]) == [corrected]
    monkeypatch.setenv("SATORI_REWARD_MODE", "paper")
    assert rewards.VQAAccuracy()([completion], possible_answers=[accepted]) == [paper]


ADVERSARIAL = reference_rewards.ADVERSARIAL_COMPLETIONS


@pytest.mark.parametrize("mode_name", rewards.MODES)
def test_adversarial_completions_score_in_range(monkeypatch, mode_name):
    monkeypatch.setenv("SATORI_REWARD_MODE", mode_name)
    # A well-formed completion rides along: a reward that returned 0 for everything would pass the range check.
    completions = [*ADVERSARIAL, GOOD]
    cols = columns(len(completions))
    good_box = {  # its box equals the truth's (40 x 40, area 1600) on a 224 x 224 image
        "corrected": 1600 / (1600 + 1e-6),  # the image is seen at 224 x 224: no scaling
        "paper": reference_rewards.bbox_reward(GOOD, [[10, 10, 50, 50]], 224, 224, mode="paper"),
    }[mode_name]
    expected_good = {"external_format": 1.0, "external_bbox_acc": good_box, "extern_vqa_acc": 1.0,
                     "external_caption_acc": reference_rewards.caption_reward(GOOD, cols["image_caption"][0])}  # fmt: skip
    assert sorted(expected_good) == sorted(rewards.REWARDS)
    for name, cls in rewards.REWARDS.items():
        values = cls()(completions, **cols)
        assert len(values) == len(completions)
        assert all(0.0 <= v <= 1.0 for v in values), name
        assert values[-1] == pytest.approx(expected_good[name], rel=1e-9), name


@pytest.mark.parametrize(
    "column, value",
    [
        ("bboxs", []),
        ("bboxs", [[1, 2, 3]]),
        ("bboxs", [["a", 1, 2, 3]]),
        ("bboxs", "[[1,2,3,4]]"),
        ("width", 0),
        ("width", -3),
        ("width", float("nan")),
        ("width", 10**400),
        ("width", None),
        ("height", 1),  # aspect ratio 224:1, beyond qwen-vl-utils' limit of 200
        ("possible_answers", None),
        ("possible_answers", 7),
        ("image_caption", None),
        ("image_caption", 3.5),
    ],
)
def test_malformed_columns_score_zero_without_raising(column, value):
    cols = columns(**{column: [value]})
    scores = {name: cls()([GOOD], **cols)[0] for name, cls in rewards.REWARDS.items()}
    affected = {
        "bboxs": "external_bbox_acc",
        "width": "external_bbox_acc",
        "height": "external_bbox_acc",
        "possible_answers": "extern_vqa_acc",
        "image_caption": "external_caption_acc",
    }[column]
    assert scores[affected] == 0.0
    assert scores["external_format"] == 1.0
