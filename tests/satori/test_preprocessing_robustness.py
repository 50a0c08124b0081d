"""Whatever a row holds, preprocess sets it aside or keeps it: it never crashes on one row (issue: bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from satori import preprocessing
from satori.preprocessing import PreprocessError, preprocess
from tests.satori.test_preprocessing import SYSTEM, VISION, good_row, make_dataset, train_params

PARAMS = preprocessing.PreprocessParams(val_fraction=0.0, seed=0)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def test_a_bom_on_the_first_line_keeps_the_row(in_tmp, tiny_model_dir):
    raw = make_dataset(in_tmp / "raw", [])
    (raw / "data.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(good_row(0)).encode() + b"\n")
    report = preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["kept"], report["rejected"]) == (1, 0)


def test_a_bad_byte_in_a_json_file_rejects_only_its_row(in_tmp, tiny_model_dir):
    raw = make_dataset(in_tmp / "raw", [])
    (raw / "data.jsonl").unlink()
    good, bad = json.dumps(good_row(0)).encode(), json.dumps(good_row(1, caption="A red square X.")).encode()
    (raw / "rows.json").write_bytes(b"[" + good + b", " + bad.replace(b" X.", b" \xff.") + b"]")
    report = preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["kept"], report["rejected_by_reason"]) == (1, {"invalid_utf8": 1})
    (rejected,) = read(Path("out"), "rejected.jsonl")
    assert (rejected["line"], rejected["row"]["caption"]) == (2, "A red square \\udcff.")


def test_an_unexpected_exception_in_one_row_is_a_row_error(in_tmp, tiny_model_dir, monkeypatch):
    make_dataset(in_tmp / "raw", [good_row(0), good_row(1)])
    real = preprocessing.RowChecker._boxes

    def boxes(self, value, width, height):
        if value == [[10, 10, 40, 40]] and self.seen:  # the second row
            raise ZeroDivisionError("a bug in a check")
        return real(self, value, width, height)

    monkeypatch.setattr(preprocessing.RowChecker, "_boxes", boxes)
    report = preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["kept"], report["rejected_by_reason"]) == (1, {"row_error": 1})
    assert read(Path("out"), "rejected.jsonl")[0]["detail"] == "ZeroDivisionError: a bug in a check"


def test_a_failure_not_about_one_row_stops_and_keeps_the_previous_output(in_tmp, tiny_model_dir, monkeypatch):
    import errno

    make_dataset(in_tmp / "raw", [good_row(0)])
    preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    before = (in_tmp / "out/train.jsonl").read_bytes()

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "read_bytes", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    monkeypatch.undo()
    assert (in_tmp / "out/train.jsonl").read_bytes() == before
    with pytest.raises(PreprocessError, match="the dataset folder nowhere does not exist"):
        preprocess(PARAMS, VISION, train_params(), Path("nowhere"), tiny_model_dir, Path("out"), SYSTEM)


# Any JSON value, with a bias toward the shapes of real rows.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
image_values = st.sampled_from(["images/a.png", "images/broken.png", "images/truncated.png", "images/bomb.png"]) | st.binary(max_size=64) | json_values
fuzzed_rows = st.fixed_dictionaries(
    {},
    optional={
        "image": image_values,
        "question": st.text(max_size=40) | json_values,
        "answer": st.lists(st.text(max_size=5), max_size=3) | json_values,
        "caption": st.text(max_size=40) | json_values,
        "bbox": st.lists(st.lists(st.integers(-10, 200) | st.floats(), min_size=3, max_size=5), max_size=4) | json_values,
        "width": st.integers(-5, 200) | json_values,
        "height": st.integers(-5, 200) | json_values,
    },
) | json_values


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(fuzzed_rows, min_size=1, max_size=8), garbage=st.lists(st.binary(max_size=40), max_size=3))
def test_fuzzed_rows_are_all_accounted_for_and_every_kept_row_loads(rows, garbage, tmp_path_factory, tiny_model_dir):
    import os

    from transformers import AutoProcessor

    root = tmp_path_factory.mktemp("fuzz")
    os.chdir(root)
    raw = make_dataset(root / "raw", [])
    with (raw / "data.jsonl").open("wb") as f:
        for row in rows:
            f.write(json.dumps(row, default=lambda b: b.hex()).encode() + b"\n")
        for line in garbage:
            f.write(line.replace(b"\n", b" ") + b"\n")
    lines = (raw / "data.jsonl").read_bytes().splitlines()
    rows_in = sum(1 for line in lines if line.strip())
    try:
        report = preprocess(PARAMS, VISION, train_params(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    except PreprocessError as err:  # only when no row survived: a run-level error, nothing written
        assert "no training rows survived" in str(err) or "no row of the" in str(err)
        assert not (root / "out").exists()
        return
    assert report["kept"] + report["rejected"] == report["rows_in"] == rows_in
    kept = read(Path("out"), "train.jsonl") + read(Path("out"), "val.jsonl")
    assert len(kept) == report["kept"] and len(read(Path("out"), "rejected.jsonl")) == report["rejected"]
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    for row in kept:  # as the training data path reads it: the image opens fully and the processor takes it
        with Image.open(row["images"][0]) as image:
            image = image.convert("RGB")
        processor.image_processor(images=[image], return_tensors="pt")
