"""Hub-layout mirrors of the dataset and the base model, made locally, for the rehearsal of the paper path.

The paper profile reads VQA-Verify and Qwen2.5-VL-3B from the Hub, or from a `local_mirror`
folder laid out as `snapshot_download(local_dir=...)` leaves it. This writes such folders from
the embedded default's seeds: the dataset as sharded Parquet with the images embedded as
Hugging Face `Image` features, the model as a tiny Qwen2.5-VL, each with huggingface_hub's
`.cache` metadata, at a fixed pinned commit. `make rehearse` runs the paper code path on them.

    python -m satori.data.mirrors --out .rehearsal
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
from pathlib import Path

from satori.data import synthetic
from satori.core.config import REPO_ROOT, VisionParams
from satori.core.prompt import system_prompt
from satori.core.files import atomic_dir

# The commits the rehearsal profiles pin (params.yaml); any 40-hex string works for a local mirror.
DATASET_COMMIT = hashlib.sha1(b"satori rehearsal dataset").hexdigest()
MODEL_COMMIT = hashlib.sha1(b"satori rehearsal base model").hexdigest()


def _hub_metadata(dest: Path, files: list[str], commit: str) -> None:
    """What snapshot_download(local_dir=...) leaves beside the files: per-file metadata with a timestamp."""
    for name in files:
        meta = dest / ".cache/huggingface/download" / f"{name}.metadata"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(f"{commit}\n{hashlib.sha1(name.encode()).hexdigest()}\n1764460800.0\n")


def write_dataset_snapshot(dest: Path, *, rows: int, seed: int, shards: int = 2) -> None:
    """VQA-Verify-shaped rows as data/train-0000k-of-0000n.parquet, images embedded as {"bytes", "path"}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    staging = dest / ".staging"
    synthetic.write_vqa_dataset(staging, rows=rows, seed=seed)
    table_rows = []
    for line in (staging / "data.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        image = staging / row["image"]
        row["image"] = {"bytes": image.read_bytes(), "path": Path(row["image"]).name}
        table_rows.append(row)
    random.Random(seed).shuffle(table_rows)
    (dest / "data").mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(shards):
        name = f"data/train-{k:05d}-of-{shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(table_rows[k::shards]), dest / name)
        names.append(name)
    (dest / "README.md").write_text("---\nlicense: apache-2.0\n---\n# VQA-Verify (rehearsal mirror)\n")
    names.append("README.md")
    _hub_metadata(dest, names, DATASET_COMMIT)
    shutil.rmtree(staging)


def write_model_snapshot(dest: Path, *, prompt: str, seed: int = 0) -> None:
    """A tiny Qwen2.5-VL (Qwen's token ids and processor files) where the 3B model's snapshot would be."""
    from satori.data.tiny_model import build_tiny_model

    build_tiny_model(
        dest,
        seed=seed,
        hidden_size=32,
        num_layers=2,
        bpe_vocab_size=1000,
        min_pixels=3136,
        max_pixels=50176,
        corpus=synthetic.tokenizer_corpus(prompt),
        system_prompt=prompt,
        # Warmed up a little, so that rewards differ within a group and GRPO's updates are not all zero.
        warmup_examples=synthetic.warmup_examples(256, seed, VisionParams(min_pixels=3136, max_pixels=50176).seen_size),
        warmup_steps=60,
    )
    _hub_metadata(dest, sorted(p.name for p in dest.iterdir() if p.is_file()), MODEL_COMMIT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args(argv)
    prompt = system_prompt(REPO_ROOT / "prompt.txt")
    dataset, model = args.out / "VQA-Verify", args.out / "Qwen2.5-VL-3B-Instruct"
    if not dataset.is_dir():
        with atomic_dir(dataset) as out:
            write_dataset_snapshot(out, rows=args.rows, seed=7)
    if not model.is_dir():
        with atomic_dir(model) as out:
            write_model_snapshot(out, prompt=prompt)
    print(f"mirrors in {args.out}: {dataset.name} @ {DATASET_COMMIT}, {model.name} @ {MODEL_COMMIT}", flush=True)


if __name__ == "__main__":
    main()
