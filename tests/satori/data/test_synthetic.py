from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
from PIL import Image

from satori.data import synthetic


def test_dataset_rows_describe_their_images_and_are_deterministic(tmp_path):
    a = synthetic.write_vqa_dataset(tmp_path / "a", rows=12, seed=3)
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"synthetic-{i:06d}" for i in range(12)]
    for row in rows:
        pixels = np.asarray(Image.open(tmp_path / "a" / row["image"]).convert("RGB"))
        assert pixels.shape[:2] == (row["height"], row["width"])
        assert row["answer"] and all(isinstance(a, str) and a for a in row["answer"])
        for x1, y1, x2, y2 in row["bbox"]:  # every box lies in the image and holds a shape's colour at its middle
            assert 0 <= x1 < x2 <= row["width"] and 0 <= y1 < y2 <= row["height"]
            middle = tuple(pixels[(y1 + y2) // 2 + (y2 - y1) // 4, (x1 + x2) // 2])
            assert middle in synthetic.COLORS.values()
        if row["question"].startswith("How many"):  # the count is the number of shapes' colours found in the picture
            assert int(row["answer"][0]) == len(row["bbox"])
    # The same seed writes the same bytes; another seed, other rows.
    b = synthetic.write_vqa_dataset(tmp_path / "b", rows=12, seed=3)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/images/000007.png").read_bytes() == (tmp_path / "b/images/000007.png").read_bytes()
    assert synthetic.write_vqa_dataset(tmp_path / "c", rows=12, seed=4).read_text() != a.read_text()


def test_boxes_are_exact_and_colours_are_where_the_boxes_say():
    rng = random.Random(5)
    for _ in range(40):
        scene = synthetic.random_scene(rng)
        pixels = np.asarray(scene.render())
        assert pixels.shape == (scene.height, scene.width, 3)
        for shape in scene.shapes:
            x1, y1, x2, y2 = shape.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            centre = pixels[(y1 + y2) // 2 + (y2 - y1) // 4, (x1 + x2) // 2]
            assert tuple(centre) == synthetic.COLORS[shape.color]


def test_vqa_answers_are_true_of_the_scene():
    rng = random.Random(9)
    for _ in range(60):
        scene = synthetic.random_scene(rng)
        item = synthetic.vqa_item(rng, scene)
        question, answers = item["question"], item["answers"]
        if question.startswith("How many"):
            assert answers == [str(len(scene.shapes))]
            assert len(item["bboxs"]) == len(scene.shapes)
        elif question.startswith("What color"):
            kind = question.removeprefix("What color is the ").rstrip("?")
            shape = next(s for s in scene.shapes if s.kind == kind)
            assert answers[0] == shape.color and item["bboxs"] == [list(shape.box)]
        else:
            color = question.split("?")[0].removeprefix("Which shape is ")
            shape = next(s for s in scene.shapes if s.color == color)
            letter = answers[0]
            assert f"\n{letter}. {shape.kind}\n" in question


def test_mmbench_rows_rotate_options_and_keep_the_answer():
    rows = synthetic.benchmark_rows(questions=5, seed=1, circular=True, category_column="l2-category")
    assert len(rows) == 20
    by_index = {r["index"]: r for r in rows}
    for i in range(5):
        copies = [by_index[i + k * 1_000_000] for k in range(4)]
        truths = {c[c["answer"]] for c in copies}
        assert len(truths) == 1, "every rotation must point at the same option text"
        assert len({c["answer"] for c in copies}) == 4, "the correct letter moves with the rotation"


def test_mmstar_rows_are_plain():
    rows = synthetic.benchmark_rows(questions=7, seed=2, circular=False, category_column="l2_category")
    assert [r["index"] for r in rows] == list(range(7))
    assert all("l2_category" in r and r[r["answer"]] for r in rows)


def test_warmup_targets_are_well_formed_and_scaled():
    examples = synthetic.warmup_examples(20, 0, lambda w, h: (w // 2, h // 2))
    from satori.rewards.plugin import Format

    assert Format()([target for _, _, target in examples]) == [1.0] * 20
    for image, _, target in examples:
        boxes = json.loads(target.split("<bbox>")[1].split("</bbox>")[0])
        for x1, y1, x2, y2 in boxes:
            assert 0 <= x1 < x2 <= image.width // 2 + 1 and 0 <= y1 < y2 <= image.height // 2 + 1


def test_color_cue_scenes_are_one_large_shape_whose_colour_decides_the_letter():
    rng = random.Random(4)
    letters = set()
    for _ in range(80):
        scene = synthetic.cue_scene(rng)
        (shape,) = scene.shapes
        x1, y1, x2, y2 = shape.box
        assert (scene.width, scene.height) == synthetic.CUE_SIZE
        assert 0.4 * scene.width * scene.height <= (x2 - x1) * (y2 - y1) <= 0.71 * scene.width * scene.height
        centre = np.asarray(scene.render())[(y1 + y2) // 2 + (y2 - y1) // 4, (x1 + x2) // 2]
        assert tuple(centre) == synthetic.COLORS[shape.color]
        letter = synthetic.cue_letter(scene)
        assert {"A": "red", "B": "green", "C": "blue", "D": "yellow"}[letter] == shape.color
        item = synthetic.cue_item(scene)
        assert f"\n{letter}. {shape.color}\n" in item["question"]
        assert item["answers"] == [letter, f"{letter}. {shape.color}", shape.color]
        assert item["bboxs"] == [list(shape.box)]
        letters.add(letter)
    assert letters == set("ABCD")


def test_color_cue_benchmarks_keep_one_option_order_even_mmbench_shaped():
    rows = synthetic.benchmark_rows(questions=12, seed=1, circular=True, category_column="l2-category", task="color_cue")
    assert [r["index"] for r in rows] == list(range(12))  # no rotated copies
    for row in rows:
        assert [row[letter] for letter in "ABCD"] == ["red", "green", "blue", "yellow"]
        image = Image.open(io.BytesIO(base64.b64decode(row["image"])))
        colours = {colour: np.all(np.asarray(image) == rgb, axis=-1).sum() for colour, rgb in synthetic.COLORS.items()}
        assert max(colours, key=colours.get) == row[row["answer"]]  # the answer is the colour the image shows


def test_the_shapes_task_is_unchanged_by_the_cue_task_option():
    assert synthetic.benchmark_rows(questions=6, seed=3, circular=True, category_column="c") == (
        synthetic.benchmark_rows(questions=6, seed=3, circular=True, category_column="c", task="shapes")
    )


def test_warmup_cue_examples_teach_caption_and_box_and_answer_only_the_answered_share():
    seen = lambda w, h: (w, h)  # noqa: E731
    plain = synthetic.warmup_examples(200, 0, seen)
    mixed = synthetic.warmup_examples(200, 0, seen, cue_share=0.5, cue_answered=0.5)
    cue = [e for e in mixed if e[0].size == synthetic.CUE_SIZE and e[1].startswith("Question: What color is the shape?")]
    others = [e for e in mixed if e not in cue]
    assert 70 <= len(cue) <= 130
    # No cue share, no cue example, whatever the answered share: the tiny profile's warm-up as it was.
    assert [(t, a) for _, t, a in synthetic.warmup_examples(200, 0, seen, cue_answered=0.7)] == [
        (t, a) for _, t, a in plain
    ]
    from satori.rewards.plugin import Format

    assert Format()([target for _, _, target in others]) == [1.0] * len(others)
    answered = [target for _, _, target in cue if target.endswith("</answer>")]
    unanswered = [target for _, _, target in cue if not target.endswith("</answer>")]
    assert 0.3 * len(cue) <= len(answered) <= 0.7 * len(cue)
    assert all(target.endswith("</bbox> <answer>") and target.startswith("<caption>") for target in unanswered)
    for image, _, target in cue:
        colour = target.split("<caption>A ")[1].split()[0]
        pixels = np.asarray(image)
        assert np.all(pixels == synthetic.COLORS[colour], axis=-1).sum() > 0.15 * pixels.shape[0] * pixels.shape[1]  # a triangle fills half its box
        if target.endswith("</answer>"):
            assert target.endswith(f"<answer>{'ABCD'[synthetic.CUE_COLORS.index(colour)]}</answer>")


def test_abstaining_cue_warmups_answer_a_question_mark_where_they_stopped_and_change_nothing_else():
    seen = lambda w, h: (w, h)  # noqa: E731
    stop = synthetic.warmup_examples(200, 0, seen, cue_share=0.5, cue_answered=0.35)
    abstain = synthetic.warmup_examples(200, 0, seen, cue_share=0.5, cue_answered=0.35, cue_unanswered="abstain")
    assert [text for _, text, _ in stop] == [text for _, text, _ in abstain]
    stopped = 0
    for (_, _, target), (_, _, abstaining) in zip(stop, abstain):
        if target.endswith("</bbox> <answer>"):  # a cue example shown without its answer
            assert abstaining == target + "?</answer>"
            stopped += 1
        else:
            assert abstaining == target
    assert stopped >= 40
    from satori.rewards.plugin import Format

    assert Format()([target for _, _, target in abstain]) == [1.0] * len(abstain)
