"""Whatever a row holds, preprocess sets it aside or keeps it: it never crashes on one row (issue: bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from satori.data import preprocessing
from satori.data.preprocessing import PreprocessError, preprocess
from tests.satori.data.test_preprocessing import SYSTEM, VISION, good_row, make_dataset, token_budget

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
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["kept"], report["rejected"]) == (1, 0)


def test_a_bad_byte_in_a_json_file_rejects_only_its_row(in_tmp, tiny_model_dir):
    raw = make_dataset(in_tmp / "raw", [])
    (raw / "data.jsonl").unlink()
    good, bad = json.dumps(good_row(0)).encode(), json.dumps(good_row(1, caption="A red square X.")).encode()
    (raw / "rows.json").write_bytes(b"[" + good + b", " + bad.replace(b" X.", b" \xff.") + b"]")
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
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
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["kept"], report["rejected_by_reason"]) == (1, {"row_error": 1})
    assert read(Path("out"), "rejected.jsonl")[0]["detail"] == "ZeroDivisionError: a bug in a check"


def test_a_failure_not_about_one_row_stops_and_keeps_the_previous_output(in_tmp, tiny_model_dir, monkeypatch):
    import errno

    make_dataset(in_tmp / "raw", [good_row(0)])
    preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    before = (in_tmp / "out/train.jsonl").read_bytes()

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "read_bytes", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    monkeypatch.undo()
    assert (in_tmp / "out/train.jsonl").read_bytes() == before
    with pytest.raises(PreprocessError, match="the dataset folder nowhere does not exist"):
        preprocess(PARAMS, VISION, token_budget(), Path("nowhere"), tiny_model_dir, Path("out"), SYSTEM)


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
        report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
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


def test_integer_answers_and_integral_float_sizes_are_read_as_their_values(in_tmp, tiny_model_dir):
    make_dataset(Path("raw"), [good_row(0, answer=[3, 4.0, "three"]), good_row(1, width=100.0, height=80.0)])
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert report["rejected_by_reason"] == {}
    first, second = read(Path("out"), "train.jsonl")
    assert first["possible_answers"] == ["3", "4", "three"]
    assert (second["width"], second["height"]) == (100, 80) and isinstance(second["width"], int)


def test_a_json_object_of_splits_is_read_as_its_rows(in_tmp, tiny_model_dir):
    make_dataset(Path("raw"), [])
    splits = {"train": [good_row(0), good_row(1)], "test": [good_row(2)]}
    Path("raw/splits.json").write_text(json.dumps(splits))
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["rows_in"], report["kept"]) == (3, 3)
    questions = [row["messages"][0]["content"] for row in read(Path("out"), "train.jsonl")]
    assert questions == [f"<image>{good_row(i)['question']}" for i in range(3)]


def test_a_corrupt_parquet_row_group_rejects_its_rows_and_keeps_the_others(in_tmp, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    make_dataset(Path("raw"), [])
    rows = [good_row(i) for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), "raw/part.parquet", row_group_size=4, compression="NONE")
    metadata = pq.ParquetFile("raw/part.parquet").metadata
    second = metadata.row_group(1).column(0)  # corrupt the data pages of the second group's first column
    data = bytearray(Path("raw/part.parquet").read_bytes())
    start = second.data_page_offset
    data[start : start + second.total_compressed_size] = b"\xff" * second.total_compressed_size
    Path("raw/part.parquet").write_bytes(bytes(data))
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["rows_in"], report["kept"], report["rejected_by_reason"]) == (8, 4, {"unparseable_row": 4})
    rejected = read(Path("out"), "rejected.jsonl")
    assert [r["line"] for r in rejected] == [5, 6, 7, 8] and "row group 1 of 2 unreadable" in rejected[0]["detail"]
    assert [r["solution"] for r in read(Path("out"), "train.jsonl")] == [f"part.parquet:{i}" for i in (1, 2, 3, 4)]


def test_a_sparse_64_gib_line_is_refused_in_seconds_with_bounded_memory(in_tmp, tiny_model_dir):
    import resource
    import time

    make_dataset(Path("raw"), [good_row(0)])
    with open("raw/data.jsonl", "r+b") as f:  # after the good row: 64 GiB of holes, then one more good row
        f.seek(64 << 30)
        f.write(b"\n" + json.dumps(good_row(1)).encode() + b"\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert time.monotonic() - start < 60
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: under 512 MiB more
    assert (report["rows_in"], report["kept"], report["rejected_by_reason"]) == (3, 2, {"row_too_large": 1})
    (rejected,) = read(Path("out"), "rejected.jsonl")
    assert rejected["line"] == 2 and f"a line of {(64 << 30) - len(json.dumps(good_row(0))) - 1} bytes" in rejected["detail"]


def test_a_json_table_over_its_cap_is_refused_naming_the_key(in_tmp, tiny_model_dir):
    make_dataset(Path("raw"), [])
    Path("raw/big.json").write_text(json.dumps([good_row(i) for i in range(50)]))
    Path("raw/data.jsonl").write_text(json.dumps(good_row(99)) + "\n")  # one row survives: the report is written
    params = preprocessing.PreprocessParams(val_fraction=0.0, seed=0, max_json_bytes=2048)
    report = preprocess(params, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["rows_in"], report["kept"], report["rejected_by_reason"]) == (2, 1, {"row_too_large": 1})
    rejected = next(r for r in read(Path("out"), "rejected.jsonl") if r["file"] == "big.json")
    assert "preprocess.max_json_bytes 2048" in rejected["detail"] and "write it as JSONL" in rejected["detail"]


def test_a_token_budget_that_rejects_most_rows_names_the_keys(in_tmp, tiny_model_dir):
    make_dataset(Path("raw"), [good_row(i) for i in range(4)])
    with pytest.raises(PreprocessError, match=r"4 of 4 rows need more prompt tokens .* train.max_length - "
                                              r"train.max_completion_length = 20 leaves"):  # fmt: skip
        preprocess(PARAMS, VISION, 20, Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert not Path("out").exists()


def test_splits_too_small_for_the_batches_fail_before_anything_is_written(in_tmp, tiny_model_dir):
    from satori.core.config import check_split_sizes
    from satori.core.errors import ParamsError

    make_dataset(Path("raw"), [good_row(i) for i in range(6)])
    params = preprocessing.PreprocessParams(val_fraction=0.5, seed=0)
    batch = dict(per_device_train_batch_size=4, per_device_eval_batch_size=4, nproc_per_node=1,
                 nnodes=1, gradient_accumulation_steps=1, num_generations=4, steps_per_generation=None)  # fmt: skip
    with pytest.raises(ParamsError) as caught:
        preprocess(params, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM,
                   check_splits=lambda train, val: check_split_sizes(train, val, **batch))  # fmt: skip
    val_rows = sum(preprocessing.is_validation(f"data.jsonl:r{i}", 0, 0.5) for i in range(6))
    assert str(caught.value) == (
        f"the validation split has {val_rows} rows, fewer than one evaluation batch, train.per_device_eval_batch_size"
        " x train.nproc_per_node = 4 x 1 = 4: lower those or raise preprocess.val_fraction"
    )
    assert not Path("out").exists()
    with pytest.raises(ParamsError, match=r"the train split has 3 rows, fewer than the 4 distinct prompts one "
                                          r"generation takes, .* = 4 x 2 x 2 / 4"):  # fmt: skip
        check_split_sizes(3, 8, **{**batch, "nproc_per_node": 2, "steps_per_generation": 2, "per_device_eval_batch_size": 1})
    # Two machines of two processes: four ranks share one evaluation batch of per-device 2 each.
    with pytest.raises(ParamsError, match=r"evaluation batch, train.per_device_eval_batch_size x train.nproc_per_node "
                                          r"x train.nnodes = 2 x 2 x 2 = 8"):  # fmt: skip
        check_split_sizes(16, 7, **{**batch, "nproc_per_node": 2, "nnodes": 2, "per_device_eval_batch_size": 2})


def test_the_same_error_in_many_rows_is_a_bug_that_stops_the_stage_with_its_traceback(in_tmp, tiny_model_dir, monkeypatch):
    """A stale caller or a broken check raises in every row: never quarantined as bad data."""
    make_dataset(in_tmp / "raw", [good_row(i) for i in range(8)])

    def broken(self, value, width, height):
        raise TypeError("'>' not supported between instances of 'int' and 'TrainParams'")

    monkeypatch.setattr(preprocessing.RowChecker, "_boxes", broken)
    with pytest.raises(RuntimeError, match=r"8 of 8 rows raised the same TypeError: '>' not supported") as err:
        preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert isinstance(err.value.__cause__, TypeError)  # the traceback of the error itself
    assert not Path("out").exists()  # nothing written


def test_a_table_linked_from_outside_the_dataset_or_not_a_regular_file_is_never_read(in_tmp, tiny_model_dir):
    import os

    make_dataset(in_tmp / "raw", [good_row(0)])
    secret = in_tmp / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (in_tmp / "raw/users.jsonl").symlink_to(secret)
    with pytest.raises(PreprocessError, match=r"table raw/users\.jsonl: a link to .*secret\.txt, outside the dataset"):
        preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert not Path("out").exists()  # its lines are in no record
    (in_tmp / "raw/users.jsonl").unlink()
    os.mkfifo(in_tmp / "raw/pipe.jsonl")  # a read of it would wait forever
    with pytest.raises(PreprocessError, match=r"table raw/pipe\.jsonl: not a regular file"):
        preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)


def test_an_image_path_ms_swift_would_read_otherwise_or_a_file_that_is_not_a_bounded_regular_file_is_rejected(
    in_tmp, tiny_model_dir
):
    """ms-swift strips a path, fetches http..., reads over 2,000 characters as base64: the row is kept only when
    training reads the very file preprocessing checked. Image reads are bounded: a FIFO is never opened."""
    make_dataset(in_tmp / "raw", [])  # with images/pipe.png (a FIFO) and images/huge.png (64 MiB + 1, sparse)
    cases = {
        "images/a.png ": "image_path_unread",
        " images/a.png": "image_path_unread",
        "images/" + "a" * 2001 + ".png": "image_path_unread",
        "http://example.org/a.png": "image_path_unread",
        "httpimages/a.png": "image_path_unread",
        "images/pipe.png": "image_not_a_file",
        "images": "image_not_a_file",
        "images/huge.png": "image_file_too_large",
    }
    rows = [good_row(i, image=path) for i, path in enumerate(cases)] + [good_row(len(cases))]
    (in_tmp / "raw/data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert report["kept"] == 1
    rejected = {r["row"]["image"]: r["reason"] for r in read(Path("out"), "rejected.jsonl")}
    assert rejected == cases


def test_parquet_reads_only_the_mapped_columns_so_a_bad_cell_elsewhere_rejects_nothing(in_tmp, tiny_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    make_dataset(in_tmp / "raw", [])
    (in_tmp / "raw/data.jsonl").unlink()
    rows = [good_row(i) for i in range(4)]
    table = pa.Table.from_pylist(rows).append_column(
        "uploaded", pa.array([0, 0, 10**12, 0], type=pa.timestamp("s"))  # year 33658: Python cannot hold it
    )
    pq.write_table(table, "raw/part.parquet", row_group_size=4)
    with pytest.raises((ValueError, OverflowError), match="out of range"):
        pq.ParquetFile("raw/part.parquet").read_row_group(0).to_pylist()  # read whole, the group would fail
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert (report["rows_in"], report["kept"]) == (4, 4)


def test_compressed_and_unmatched_tables_are_read_or_reported_never_undercounted(in_tmp, tiny_model_dir):
    import gzip

    make_dataset(in_tmp / "raw", [good_row(0)])
    lines = "".join(json.dumps(good_row(i)) + "\n" for i in range(1, 21)).encode()
    (in_tmp / "raw/packed.jsonl").write_bytes(gzip.compress(lines))  # gzip under a .jsonl name: its 20 rows
    (in_tmp / "raw/more.jsonl.gz").write_bytes(gzip.compress(lines))
    (in_tmp / "raw/LOUD.JSONL").write_bytes(lines)
    (in_tmp / "raw/stream.ndjson").write_bytes(lines)
    report = preprocess(PARAMS, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out"), SYSTEM)
    assert report["rows_in"] == 21 and report["rejected_by_reason"].get("invalid_utf8", 0) == 0
    assert report["skipped_files"] == [
        f"{name} ({(in_tmp / 'raw' / name).stat().st_size} bytes): looks like a table, but preprocess.tables does "
        "not match it (add its pattern)"
        for name in ("LOUD.JSONL", "more.jsonl.gz", "stream.ndjson")
    ]
    widened = PARAMS.model_copy(update={"tables": ["**/*.jsonl", "**/*.jsonl.gz", "**/*.JSONL", "**/*.ndjson"]})
    report = preprocess(widened, VISION, token_budget(), Path("raw"), tiny_model_dir, Path("out2"), SYSTEM)
    assert report["rows_in"] == 81 and report["skipped_files"] == []
