from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from satori.core.config import REPO_ROOT, FieldMap, PreprocessParams, VisionParams, load_profile
from satori.data.preprocessing import PreprocessError, is_validation, preprocess

VISION = VisionParams(min_pixels=3136, max_pixels=50176)
SYSTEM = (REPO_ROOT / "prompt.txt").read_text()


def token_budget(**overrides) -> int:
    """The prompt-token budget of the tiny profile's train params, with overrides."""
    _, profile = load_profile(REPO_ROOT / "params.yaml", name="tiny")
    train = profile.train.model_copy(update=overrides)
    return train.max_length - train.max_completion_length


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
    Image.new("RGB", (1000, 4), "white").save(root / "images/thin.png")
    Image.new("RGB", (28, 5000), "white").save(root / "images/tall.png")  # aspect 178: resized to 0 pixels wide
    Image.new("RGB", (10, 10), "white").save(root.parent / "outside.png")
    (root / "images/broken.png").write_bytes(b"not a png")
    whole = png_bytes(noise=True)
    (root / "images/truncated.png").write_bytes(whole[: len(whole) // 2])  # a valid header, pixel data cut
    (root / "images/bomb.png").write_bytes(png_header_only(20000, 20000))  # 400 megapixels declared
    os.mkfifo(root / "images/pipe.png")
    (root / "images/huge.png").write_bytes(b"")
    os.truncate(root / "images/huge.png", (64 << 20) + 1)  # sparse: over preprocess.max_image_bytes, no disk used
    with (root / "data.jsonl").open("wb") as f:
        for row in rows:
            line = row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
            f.write(line + b"\n")
    return root


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression bomb's header) with one tiny IDAT chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def run(tmp_path, rows, **train_overrides):
    make_dataset(tmp_path / "raw", rows)
    params = PreprocessParams(val_fraction=0.0, seed=0)
    out = Path("processed")  # relative, as dvc.yaml gives it; the working directory is tmp_path
    report = preprocess(params, VISION, token_budget(**train_overrides), Path("raw"), tiny_model(), out, SYSTEM)
    read = lambda name: [json.loads(x) for x in (out / name).read_text().splitlines()]  # noqa: E731
    return report, read("train.jsonl"), read("rejected.jsonl")


_TINY = {}


def tiny_model():
    return _TINY["dir"]


@pytest.fixture(autouse=True)
def _model(tiny_model_dir, tmp_path, monkeypatch):
    _TINY["dir"] = tiny_model_dir
    monkeypatch.chdir(tmp_path)


def test_good_row_becomes_an_ms_swift_grpo_row(tmp_path):
    report, train, rejected = run(tmp_path, [good_row(0)])
    assert (report["rows_in"], report["kept"], report["rejected"]) == (1, 1, 0)
    row = train[0]
    assert row["messages"] == [{"role": "user", "content": "<image>What color is shape 0?"}]
    assert row["images"] == ["raw/images/a.png"]  # relative to the stage's folder: no checkout path in the output
    assert (row["bboxs"], row["width"], row["height"]) == ([[10, 10, 40, 40]], 100, 80)
    assert row["possible_answers"] == ["red"] and row["image_caption"] == "A red square."
    assert rejected == []


def png_bytes(size=(100, 80), noise=False) -> bytes:
    import io
    import random

    buf = io.BytesIO()
    image = Image.new("RGB", size, "green")
    if noise:  # incompressible, so that cutting the file cuts pixel data
        rng = random.Random(0)
        image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    image.save(buf, format="PNG")
    return buf.getvalue()


BAD_ROWS = [
    (good_row(1, image="images/missing.png"), "image_missing"),
    (good_row(2, image=None), "image_missing"),
    (good_row(3, image="../outside.png"), "image_outside_dataset"),
    (good_row(4, image="images/broken.png"), "image_undecodable"),
    (good_row(5, image="images"), "image_not_a_file"),  # a folder, not a file
    (good_row(6, width="100"), "size_invalid"),
    (good_row(7, width=200), "size_mismatch"),
    (good_row(8, image="images/thin.png", width=1000, height=4, bbox=[[0, 0, 10, 4]]), "image_aspect_ratio"),
    (good_row(9, bbox=[[10, 10, 40]]), "bbox_malformed"),
    (good_row(10, bbox=[[10, float("nan"), 40, 40]]), "bbox_malformed"),
    (good_row(11, bbox=[["10", "10", "40", "40"]]), "bbox_malformed"),
    (good_row(12, bbox=[]), "bbox_malformed"),
    (good_row(13, bbox=[[True, 10, 40, 40]]), "bbox_malformed"),
    (good_row(14, bbox=[[40, 10, 10, 40]]), "bbox_inverted"),
    (good_row(15, bbox=[[10, 10, 10, 40]]), "bbox_zero_area"),
    (good_row(16, bbox=[[10, 10, 140, 40]]), "bbox_outside"),
    (good_row(17, question="  "), "empty_question"),
    (good_row(18, question=42), "empty_question"),
    (good_row(19, answer=[]), "no_answer"),
    (good_row(20, answer=["", "  ", True]), "no_answer"),  # True is no answer (3 is: see its own test)
    (good_row(21, caption=""), "empty_caption"),
    (good_row(0), "duplicate"),
    ({k: v for k, v in good_row(22).items() if k != "bbox"}, "missing_field"),
    ("{not json", "unparseable_row"),
    ("[1, 2]", "unparseable_row"),
    (good_row(23, question="Which " + "very " * 1500 + "red shape?"), "too_many_tokens"),
    # Each of these crashed the stage before (the exception it raised in a comment).
    (good_row(24, image="images/bomb.png", width=20000, height=20000), "image_too_large"),  # DecompressionBombError
    (good_row(25, image="images/truncated.png"), "image_truncated"),  # OSError at training: image file is truncated
    ("[" * 100_000 + "]" * 100_000, "unparseable_row"),  # RecursionError
    ('{"id": "r26", "width": ' + "9" * 5000 + "}", "unparseable_row"),  # ValueError: Exceeds the limit (4300 digits)
    (good_row(27, bbox=[[10, 10, 40, 40]] * 101), "too_many_boxes"),
    (good_row(28, bbox=[[10, 10, 40, 40]] * 1_000_000), "row_too_large"),  # a 16 MB row
    (json.dumps(good_row(29, caption="A red square.")).replace("square", "squ\\u00e9re").encode().replace(b"\\u00e9", b"\xff"), "invalid_utf8"),
    # Kept before, then fatal in training ("Image features and image tokens do not match", "height and width
    # must be > 0") or a malformed prompt: the model tokenizer's special tokens and ms-swift's media tags.
    (good_row(30, question="What is <|image_pad|> here?"), "special_token"),
    (good_row(31, caption="A red <|vision_start|><|vision_end|> square."), "special_token"),
    (good_row(32, answer=["red<|im_end|>"]), "special_token"),
    (good_row(33, question="<video>What color is it?"), "media_tag"),
    (good_row(34, question="Compare <image> with the square."), "media_tag"),
    (good_row(35, image="images/tall.png", width=28, height=5000, bbox=[[0, 0, 28, 100]]), "image_aspect_ratio"),
    # Read otherwise by ms-swift (trained on another file, or fetched), or not a bounded regular file.
    (good_row(36, image="images/a.png "), "image_path_unread"),
    (good_row(37, image="http://example.org/a.png"), "image_path_unread"),
    (good_row(38, image="images/" + "a" * 2001 + ".png"), "image_path_unread"),
    (good_row(39, image="images/pipe.png"), "image_not_a_file"),  # a FIFO: a read would never end
    (good_row(40, image="images/huge.png"), "image_file_too_large"),  # checked before a byte is read
]


def test_bad_rows_are_set_aside_with_their_reason_and_nothing_is_lost(tmp_path):
    """Malformed rows of every kind among good ones: each rejected with its reason, good rows intact."""
    from satori.data.row_checks import REASONS

    good = [good_row(0), good_row(50, width=None, height=None), good_row(51, answer="red")]
    rows = good[:1] + [row for row, _ in BAD_ROWS] + good[1:]
    report, train, rejected = run(tmp_path, rows)
    assert report["rows_in"] == len(rows) == len(BAD_ROWS) + 3
    assert report["kept"] + report["rejected"] == report["rows_in"]
    assert [r["reason"] for r in rejected] == [reason for _, reason in BAD_ROWS]
    assert {reason for _, reason in BAD_ROWS} == set(REASONS) - {"row_error"}  # row_error: its own test
    assert [r["line"] for r in rejected] == list(range(2, 2 + len(BAD_ROWS)))
    assert rejected[0]["row"] == BAD_ROWS[0][0]  # the original row is kept
    image = "raw/images/a.png"
    expected = [
        {
            "messages": [{"role": "user", "content": f"<image>What color is shape {i}?"}],
            "images": [image],
            "bboxs": [[10, 10, 40, 40]],
            "width": 100,
            "height": 80,
            "possible_answers": ["red"],
            "image_caption": "A red square.",
            "solution": f"data.jsonl:{line}",  # where the row came from
        }
        for i, line in ((0, 1), (50, len(rows) - 1), (51, len(rows)))
    ]
    assert train == expected
    assert report["rejected_by_reason"]["bbox_malformed"] == 5


def test_parquet_with_embedded_image_bytes_and_json_tables(tmp_path, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = make_dataset(tmp_path / "raw", [])
    (raw / "data.jsonl").unlink()
    rows = [
        good_row(0, image={"bytes": png_bytes(), "path": "x.png"}),
        good_row(1, image={"bytes": b"garbage", "path": "y.png"}),
    ]
    pq.write_table(pa.Table.from_pylist(rows), raw / "part-0.parquet")
    (raw / "more.json").write_text(json.dumps({"data": [good_row(2)]}))
    (raw / "SOURCE.json").write_text(json.dumps({"repo_id": "x"}))  # provenance, not a table
    out = Path("processed")
    report = preprocess(
        PreprocessParams(val_fraction=0.0, seed=0), VISION, token_budget(), Path("raw"), tiny_model_dir, out, SYSTEM
    )
    assert (report["rows_in"], report["kept"], report["rejected_by_reason"]) == (3, 2, {"image_undecodable": 1})
    rejected = json.loads((out / "rejected.jsonl").read_text())
    digest = hashlib.sha256(b"garbage").hexdigest()
    assert rejected["row"]["image"] == {"bytes": {"bytes": 7, "sha256": digest}, "path": "y.png"}
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    # Paths relative to the stage's folder, so the output hashes the same in any checkout.
    assert sorted(row["images"][0].split("/")[0] for row in train) == ["processed", "raw"]
    embedded = next(Path(row["images"][0]) for row in train if row["images"][0].startswith("processed/"))
    assert embedded.parent == Path("processed/images") and embedded.suffix == ".png"
    assert embedded.read_bytes() == png_bytes()
    assert Image.open(embedded).size == (100, 80)


def test_a_mapped_field_no_row_has_lists_the_columns(tmp_path):
    rows = [{**good_row(i, bbox=None), "boxes": [[1, 1, 5, 5]]} for i in range(3)]
    for row in rows:
        row.pop("bbox")
    with pytest.raises(PreprocessError) as err:
        run(tmp_path, rows)
    message = str(err.value)
    assert "preprocess.fields.boxes = 'bbox': no row of the 3 read has that column" in message
    assert "'boxes'" in message and "'caption'" in message


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
    with pytest.raises(PreprocessError, match=r"no training rows survived.*bbox_inverted: 1"):
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
    report = preprocess(params, VISION, token_budget(), raw, tiny_model(), tmp_path / "out", SYSTEM)
    assert report["kept"] == 1
