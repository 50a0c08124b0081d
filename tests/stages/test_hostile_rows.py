"""Kept means trainable: every row preprocessing keeps from a hostile corpus goes through real GRPO steps (its
training rows) or ms-swift's validation pass (its validation rows) of the tiny model, and the run finishes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.satori.data.test_preprocessing import BAD_ROWS, good_row, make_dataset

pytestmark = pytest.mark.slow


def images(root: Path) -> dict[str, str]:
    """Image files in the modes and formats a real dataset mixes, each a 100x80 picture: name -> path."""
    made = {}
    for name, mode in (("rgba", "RGBA"), ("palette", "P"), ("gray", "L"), ("bilevel", "1"), ("gray16", "I;16"),
                       ("cmyk", "CMYK")):  # fmt: skip
        image = Image.new("RGB", (100, 80), (200, 30, 30)).convert(mode) if mode != "I;16" else Image.new("I;16", (100, 80), 3000)
        suffix = ".jpg" if mode == "CMYK" else ".png"
        image.save(root / "images" / f"{name}{suffix}")
        made[name] = f"images/{name}{suffix}"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": viewers show 80x100, the pixels are 100x80
    Image.new("RGB", (100, 80), "blue").save(root / "images/rotated.jpg", exif=exif)
    made["rotated"] = "images/rotated.jpg"
    Image.new("RGB", (100, 80), "green").save(root / "images/webp.webp", format="WEBP")
    made["webp"] = "images/webp.webp"
    Image.new("RGB", (28, 1500), "white").save(root / "images/narrow.png")  # aspect 54, resizable
    made["narrow"] = "images/narrow.png"
    return made


def hostile_kept_rows(made: dict[str, str]) -> list[dict]:
    """Rows that are odd but trainable: each must be kept, and must train."""
    rows = [good_row(100 + i, image=path) for i, (name, path) in enumerate(made.items()) if name != "narrow"]
    rows += [
        good_row(120, image=made["narrow"], width=28, height=1500, bbox=[[0, 0, 28, 700]]),
        good_row(121, question="Was ist die Farbe? 这是什么颜色？ ما هو اللون؟ 🟥\n\n\tAnswer briefly."),
        good_row(122, question="Fill {{QUERY}} and {{SYSTEM}} and {} and %s in: what colour?"),  # template fields
        good_row(123, question="<caption>no</caption> <bbox>[[1,2,3,4]]</bbox> <answer>x</answer> What colour?"),
        good_row(124, answer=[3, "three"], question="How many red things are there?"),
        good_row(125, width=100.0, height=80.0, question="A row with float sizes: what colour?"),
        good_row(126, bbox=[[10, 10, 40, 40]] * 100, question="One hundred boxes: what colour?"),
        good_row(127, bbox=[[-1.5, -1, 101, 81]], question="A box a little outside: what colour?"),
        good_row(128, question="What colour is it? " + "Look closely. " * 40),
    ]
    return rows


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (100, 80), "yellow").save(buf, format="PNG")
    return buf.getvalue()


def test_every_kept_row_of_a_hostile_corpus_goes_through_real_grpo_steps(use_profile, tiny_model_dir, tmp_path):
    from stages import preprocess, train

    raw = make_dataset(tmp_path / "data" / "raw", [])
    made = images(raw)
    kept_kinds = hostile_kept_rows(made)
    rows = [good_row(0)] + [row for row, _ in BAD_ROWS] + kept_kinds + [good_row(i) for i in range(200, 206)]  # row 0: BAD_ROWS' duplicate is of it
    with (raw / "data.jsonl").open("wb") as f:
        for row in rows:
            line = row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode()
            f.write(line + b"\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    embedded = good_row(129, image={"bytes": _png_bytes(), "path": "embedded.png"}, question="Embedded bytes: colour?")
    pq.write_table(pa.Table.from_pylist([embedded]), raw / "part.parquet")
    kept_kinds.append(embedded)
    # One epoch, one prompt x 2 generations a step, so every training row has a step of its own (ms-swift drops
    # an epoch's last partial batch; one step of all rows would need tens of GB for the logits over the
    # vocabulary), then validation answers every val row.
    train_params = {**use_profile_train(), "max_length": 1024, "max_completion_length": 16, "max_steps": -1,
                    "num_train_epochs": 1, "eval_steps": 1000, "save_steps": 1000, "num_generations": 2,
                    "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2}  # fmt: skip
    use_profile("tiny", preprocess={"val_fraction": 0.3, "seed": 1}, train=train_params)
    paths = ["--raw", "data/raw", "--base-model", str(tiny_model_dir), "--prompt", "prompt.txt"]
    preprocess.main([*paths, "--out", "data/processed", "--metrics", "reports/preprocess.json"])
    report = json.loads(Path("reports/preprocess.json").read_text())
    assert report["rejected_by_reason"] == {
        reason: sum(r == reason for _, r in BAD_ROWS) for reason in {r for _, r in BAD_ROWS}
    }
    assert report["kept"] == len(kept_kinds) + 7  # every odd-but-trainable kind was kept
    split = {s: [json.loads(x) for x in Path(f"data/processed/{s}.jsonl").read_text().splitlines()] for s in ("train", "val")}

    train.main([
        "--data", "data/processed", "--raw", "data/raw", "--base-model", str(tiny_model_dir), "--prompt", "prompt.txt",
        "--work", ".work/train", "--out", "models/trained", "--metrics", "reports/train.json",
        "--plots", "reports/train_rewards.csv", "--plot-image", "reports/train_rewards.png",
        "--samples", "reports/train_samples.md",
    ])  # fmt: skip
    steps = json.loads(Path("reports/train.json").read_text())["steps"]
    assert steps == len(split["train"])  # the epoch, one prompt a step
    (completions,) = Path(".work/train").glob("*/swift_output/completions.jsonl")
    seen = [source for line in completions.read_text().splitlines() for source in json.loads(line)["solution"]]
    for row in split["train"]:
        assert row["solution"] in seen, row
    # ms-swift logs only some evaluation tables; its progress bar counts the batches: one val row each.
    (log,) = Path(".work/train").glob("*/swift.log")
    assert f"Val: 100%|██████████| {len(split['val'])}/{len(split['val'])}" in log.read_text()
    assert "Loading tokenizer/processor from" not in log.read_text()  # no processor with trust_remote_code=True
    assert (Path("models/trained") / "model.safetensors").is_file()


def use_profile_train() -> dict:
    from satori.core.config import REPO_ROOT, read_params

    return dict(read_params(REPO_ROOT / "params.yaml")["tiny"]["train"])
