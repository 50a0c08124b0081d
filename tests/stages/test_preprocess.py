from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from stages.config import FieldMap, PreprocessParams, TrainParams, VisionParams, load_profile
from stages.preprocess import is_validation, preprocess

VISION = VisionParams(min_pixels=3136, max_pixels=50176)


def train_params(**overrides) -> TrainParams:
    _, profile = load_profile(name="tiny")
    return profile.train.model_copy(update=overrides)


def good_row(i: int, **overrides) -> dict:
    row = {
        "id": f"r{i}",
        "image": "images/a.png",
        "question": f"What color is shape {i}?",
        "answer": ["red"],
        "caption": "A red square.",
        "bbox": [[10, 10, 40, 40]],
        "width": 100,
        "height": 80,
    }
    row.update(overrides)
    return row


def make_dataset(root: Path, rows: list) -> Path:
    (root / "images").mkdir(parents=True)
    Image.new("RGB", (100, 80), "white").save(root / "images/a.png")
    (root / "images/broken.png").write_bytes(b"not a png")
    with (root / "data.jsonl").open("w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return root


def run(tmp_path, rows, **train_overrides):
    raw = make_dataset(tmp_path / "raw", rows)
    params = PreprocessParams(val_fraction=0.0, seed=0)
    out = tmp_path / "processed"
    report = preprocess(params, VISION, train_params(**train_overrides), raw, tiny_model(), out)
    read = lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()]  # noqa: E731
    return report, read("train.jsonl"), read("rejected.jsonl")


_TINY = {}


def tiny_model():
    return _TINY["dir"]


@pytest.fixture(autouse=True)
def _model(tiny_model_dir):
    _TINY["dir"] = tiny_model_dir


def test_good_row_becomes_an_ms_swift_grpo_row(tmp_path):
    report, train, rejected = run(tmp_path, [good_row(0)])
    assert (report["rows_in"], report["kept"], report["rejected"]) == (1, 1, 0)
    row = train[0]
    assert row["messages"] == [{"role": "user", "content": "<image>What color is shape 0?"}]
    assert row["images"] == [str((tmp_path / "raw/images/a.png").resolve())]
    assert (row["bboxs"], row["width"], row["height"]) == ([[10, 10, 40, 40]], 100, 80)
    assert row["possible_answers"] == ["red"] and row["image_caption"] == "A red square."
    assert rejected == []


BAD_ROWS = [
    (good_row(1, image="images/missing.png"), "image_missing"),
    (good_row(2, image="images/broken.png"), "image_undecodable"),
    (good_row(3, width=200), "size_mismatch"),
    (good_row(4, bbox=[[10, 10, 40]]), "bbox_malformed"),
    (good_row(5, bbox=[[40, 10, 10, 40]]), "bbox_inverted"),
    (good_row(6, bbox=[[10, 10, 10, 40]]), "bbox_zero_area"),
    (good_row(7, bbox=[[10, 10, 140, 40]]), "bbox_outside"),
    (good_row(8, question="  "), "empty_question"),
    (good_row(9, answer=[]), "no_answer"),
    (good_row(10, caption=""), "empty_caption"),
    (good_row(0), "duplicate"),
    ({k: v for k, v in good_row(11).items() if k != "bbox"}, "missing_field"),
    ("{not json", "unparseable_row"),
]


def test_bad_rows_are_set_aside_with_their_reason_and_nothing_is_lost(tmp_path):
    rows = [good_row(0)] + [row for row, _ in BAD_ROWS] + [good_row(99)]
    report, train, rejected = run(tmp_path, rows)
    assert report["rows_in"] == len(rows)
    assert report["kept"] + report["rejected"] == report["rows_in"]
    assert [r["reason"] for r in rejected] == [reason for _, reason in BAD_ROWS]
    assert [r["line"] for r in rejected] == list(range(2, 2 + len(BAD_ROWS)))
    assert rejected[0]["row"] == BAD_ROWS[0][0]  # the original row is kept
    assert [r["messages"][0]["content"] for r in train] == [
        "<image>What color is shape 0?",
        "<image>What color is shape 99?",
    ]


def test_boxes_slightly_outside_are_clipped_and_counted(tmp_path):
    report, train, _ = run(tmp_path, [good_row(0, bbox=[[-1, 10, 101, 40]])])
    assert report["clipped"] == 1
    assert train[0]["bboxs"] == [[0, 10, 100, 40]]


def test_rows_that_overflow_the_token_budget_are_rejected(tmp_path):
    long_question = "Which " + "very " * 1500 + "red shape?"
    rows = [good_row(0), good_row(1, question=long_question)]
    report, train, rejected = run(tmp_path, rows, max_length=1024, max_completion_length=64)
    assert report["kept"] == 1 and len(train) == 1
    assert rejected[0]["reason"] == "too_many_tokens"
    assert "> budget 960" in rejected[0]["detail"]


def test_no_surviving_row_is_an_error_that_says_why(tmp_path):
    with pytest.raises(ValueError, match=r"no training rows survived.*bbox_inverted: 1"):
        run(tmp_path, [good_row(5, bbox=[[40, 10, 10, 40]])])
    assert not (tmp_path / "processed").exists()


def test_split_is_deterministic_and_close_to_the_fraction():
    keys = [f"data.jsonl:{i}" for i in range(2000)]
    picks = [is_validation(k, seed=3, fraction=0.1) for k in keys]
    assert picks == [is_validation(k, seed=3, fraction=0.1) for k in keys]
    assert 150 < sum(picks) < 250
    assert picks != [is_validation(k, seed=4, fraction=0.1) for k in keys]


def test_custom_field_names(tmp_path):
    row = good_row(0)
    row["img"] = row.pop("image")
    raw = make_dataset(tmp_path / "raw", [row])
    params = PreprocessParams(val_fraction=0.0, seed=0, fields=FieldMap(image="img"))
    report = preprocess(params, VISION, train_params(), raw, tiny_model(), tmp_path / "out")
    assert report["kept"] == 1
