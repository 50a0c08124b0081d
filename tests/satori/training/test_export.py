from __future__ import annotations

import json
from pathlib import Path

import pytest

from satori.training import export


def sharded_checkpoint(folder: Path, shards: int = 2) -> None:
    """A checkpoint as ms-swift writes it with several ranks and DeepSpeed: shards, index, resume-only files."""
    folder.mkdir(parents=True)
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    weight_map = {f"layer{i}.weight": name for i, name in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for name in names:
        (folder / name).write_bytes(name.encode())
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        (folder / name).write_text("{}")
    resume_only = ["rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                   "training_args.bin", "args.json", "latest", "zero_to_fp32.py"]  # fmt: skip
    for name in resume_only:
        (folder / name).write_text("x")
    (folder / "global_step4").mkdir()
    (folder / "global_step4/mp_rank_00_model_states.pt").write_text("x")


def test_export_ships_every_shard_and_nothing_for_resuming(tmp_path):
    sharded_checkpoint(tmp_path / "checkpoint-4")
    base = tmp_path / "base"
    base.mkdir()
    (base / "preprocessor_config.json").write_text("{}")  # processor files the checkpoint lacks come from the base
    out = tmp_path / "out"
    out.mkdir()
    shipped = export.export_model(tmp_path / "checkpoint-4", base, out, "full", "5GB")
    index = json.loads((tmp_path / "checkpoint-4/model.safetensors.index.json").read_text())
    expected = {"model.safetensors.index.json", *index["weight_map"].values()}
    expected |= {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"}
    assert set(shipped) == expected | {"preprocessor_config.json"}
    (tmp_path / "checkpoint-4/model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"names shards that are not there: \['model-00002-of-00002"):
        export.export_model(tmp_path / "checkpoint-4", base, tmp_path / "out2", "full", "5GB")


def test_export_restores_the_kv_cache_and_drops_load_time_keys(tmp_path):
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"w")
    (checkpoint / "config.json").write_text(json.dumps({"use_cache": False, "text_config": {"use_cache": False}}))
    tokenizer = {"model_max_length": 32768, "local_files_only": True, "is_local": True}
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    out = tmp_path / "out"
    out.mkdir()
    export.export_model(checkpoint, tmp_path, out, "full", "5GB")
    config = json.loads((out / "config.json").read_text())
    assert config["use_cache"] is True and config["text_config"]["use_cache"] is True
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model_max_length": 32768}
