"""A checkpoint as a model folder to use: every weight shard, config and processor files, nothing for resuming.

A LoRA checkpoint is merged into its base model, so evaluate and publish handle one kind of folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from satori import tracking
from satori.training.checkpoints import last_checkpoint
from satori.core.files import atomic_dir, read_source, write_source


# What a loadable model folder holds besides its weights (transformers' and Qwen2.5-VL's processor files).
MODEL_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)


WEIGHTS_INDEX = "model.safetensors.index.json"


SINGLE_WEIGHTS = "model.safetensors"


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def export_run(output_dir: Path, base_model: Path, data: Path, out: Path, tuner_type: str, max_shard_size: str) -> Path:
    """The last checkpoint of a run's output folder exported whole to out (all or nothing), with where it
    came from (base model, data, checkpoint); returns the checkpoint."""
    checkpoint = last_checkpoint(output_dir)
    with atomic_dir(out) as folder:
        shipped = export_model(checkpoint, base_model, folder, tuner_type, max_shard_size)
        write_source(
            folder,
            base_model=read_source(base_model),
            data=read_source(data),
            checkpoint=checkpoint.name,
            tuner_type=tuner_type,
        )
    tracking.say(f"exported {checkpoint.name} to {out}: {', '.join(shipped)}")
    return checkpoint


def weight_files(folder: Path) -> list[str]:
    """The weight files a model folder needs: every shard its index names, or model.safetensors."""
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that are not there: {missing}")
        return [WEIGHTS_INDEX, *shards]
    if (folder / SINGLE_WEIGHTS).is_file():
        return [SINGLE_WEIGHTS]
    raise FileNotFoundError(f"{folder} holds neither {SINGLE_WEIGHTS} nor {WEIGHTS_INDEX}")


def export_model(checkpoint: Path, base_model: Path, out: Path, tuner_type: str, max_shard_size: str) -> list[str]:
    """A loadable model folder in out: weights (every shard), config and processor files, nothing for resuming.

    A LoRA checkpoint is merged into the base model's weights, so evaluate and publish handle one
    kind of folder.
    """
    if tuner_type == "lora":
        _merge_lora(checkpoint, base_model, out, max_shard_size)
        source = base_model  # the adapter checkpoint need not carry the processor files
    else:
        for name in weight_files(checkpoint):
            shutil.copy2(checkpoint / name, out / name)
        source = checkpoint
    for name in MODEL_CONFIG_FILES:
        if not (out / name).exists():
            for folder in (source, base_model):
                if (folder / name).is_file():
                    shutil.copy2(folder / name, out / name)
                    break
    _for_inference(out)
    return sorted(p.name for p in out.iterdir())


# What saving a checkpoint writes about how it was loaded for training, not about the model: transformers
# records `local_files_only` (true under HF_HUB_OFFLINE=1) and `is_local`, so the exported folder would
# hash differently with the environment.
LOAD_TIME_KEYS = ("local_files_only", "is_local")


def _for_inference(folder: Path) -> None:
    """The exported config as a model to use: the KV cache back on (training turns it off for gradient
    checkpointing, which would slow every generation of the published model), no load-time keys."""
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        data = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        for key in LOAD_TIME_KEYS:
            data.pop(key, None)
        tokenizer_config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    config = folder / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        for section in (data, data.get("text_config") or {}):
            if "use_cache" in section:
                section["use_cache"] = True
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _merge_lora(checkpoint: Path, base_model: Path, out: Path, max_shard_size: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    missing = [name for name in ADAPTER_FILES if not (checkpoint / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{checkpoint} is not a LoRA checkpoint: {missing} missing")
    dtype = json.loads((base_model / "config.json").read_text(encoding="utf-8")).get("torch_dtype") or "float32"
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_model, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    merged.save_pretrained(out, max_shard_size=max_shard_size)
