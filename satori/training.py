"""GRPO with ms-swift 4.x and the SATORI rewards (the work of the train stage).

The `swift rlhf` CLI runs in a subprocess, the way the published recipe does: with
NPROC_PER_NODE > 1 ms-swift re-launches itself under torch.distributed.run, so one code path
serves one CPU process and N GPUs (gloo on CPU, NCCL on GPUs). The work folder is keyed by
everything that decides the run, so a killed run resumes from its last whole checkpoint and a
changed run starts fresh. The exported model holds the weights and processor files only.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from satori.config import TrainParams, VisionParams

REWARD_PLUGIN = Path(__file__).with_name("rewards.py")
# ms-swift logs rewards/<ClassName>/mean; these are the classes behind the published names.
REWARD_CLASSES = {
    "external_format": "Format",
    "external_bbox_acc": "BoundingBoxAccuracy",
    "extern_vqa_acc": "VQAAccuracy",
    "external_caption_acc": "CaptionAccuracy",
}
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
# A checkpoint is whole once the trainer has written its state (HF Trainer writes it after the weights).
CHECKPOINT_DONE_FILE = "trainer_state.json"


class TrainConfigError(ValueError):
    """The train params would fail inside ms-swift; the message names the key."""


def swift_arguments(
    params: TrainParams,
    *,
    model_dir: Path,
    train_file: Path,
    val_file: Path,
    output_dir: Path,
    prompt_file: Path,
    cuda: bool,
    resume_from: Path | None = None,
) -> list[str]:
    """The `swift rlhf` command line for these params (the published command's flags, ms-swift 4 names)."""
    args: dict[str, Any] = {
        "rlhf_type": "grpo",
        "model": str(model_dir),
        # A local folder carries no hub id, so name the architecture and template.
        "model_type": "qwen2_5_vl",
        "template": "qwen2_5_vl",
        "external_plugins": str(REWARD_PLUGIN),
        "reward_funcs": params.reward_funcs,
        "use_vllm": False,
        "tuner_type": params.tuner_type,
        "target_modules": params.target_modules,
        "torch_dtype": params.torch_dtype,
        "dataset": str(train_file),
        "val_dataset": str(val_file),
        "split_dataset_ratio": 0,
        "max_length": params.max_length,
        "max_completion_length": params.max_completion_length,
        "num_train_epochs": params.num_train_epochs,
        "max_steps": params.max_steps,
        "per_device_train_batch_size": params.per_device_train_batch_size,
        "per_device_eval_batch_size": params.per_device_eval_batch_size,
        "learning_rate": params.learning_rate,
        "gradient_accumulation_steps": params.gradient_accumulation_steps,
        "eval_strategy": "steps",
        "eval_steps": params.eval_steps,
        "save_strategy": "steps",
        "save_steps": params.save_steps,
        "save_total_limit": params.save_total_limit,
        "save_only_model": False,  # resuming needs the optimizer, scheduler and RNG states
        "max_shard_size": params.max_shard_size,
        "logging_steps": params.logging_steps,
        "warmup_ratio": params.warmup_ratio,
        "dataloader_num_workers": params.dataloader_num_workers,
        "num_generations": params.num_generations,
        "temperature": params.temperature,
        "system": str(prompt_file),
        "log_completions": params.log_completions,
        "seed": params.seed,
        "output_dir": str(output_dir),
        "add_version": False,
        # Skips ms-swift's ModelScope "is this local model the latest" lookup (~7 s of retries offline).
        "check_model": False,
        # The stage logs ms-swift's logging.jsonl to MLflow itself, once per step across resumes,
        # without the ~350 auto-logged trainer parameters of transformers' MLflowCallback.
        "report_to": "none",
    }
    if params.nproc_per_node > 1 and not cuda:
        # Without these, ms-swift 4.6 starts N CPU processes that each train their own copy.
        args.update(use_cpu=True, ddp_backend="gloo")
    if resume_from is not None:
        args["resume_from_checkpoint"] = str(resume_from)
    args.update(params.extra_args)
    argv: list[str] = []
    for key, value in args.items():
        argv.append(f"--{key}")
        values = value if isinstance(value, list) else [value]
        argv += [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return argv


def swift_argument_parser():
    """ms-swift's own parser of `swift rlhf` arguments (argparse, built from RLHFArguments; no model loaded)."""
    from swift.arguments import RLHFArguments
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    with _patch_get_type_hints():
        return HfArgumentParser([RLHFArguments])


def swift_argument_names() -> set[str]:
    from swift.arguments import RLHFArguments

    return {f.name for f in dataclasses.fields(RLHFArguments)}


def check_swift_arguments(argv: list[str], extra_args: dict[str, Any]) -> None:
    """Parse argv with ms-swift's own argument classes; an unknown flag or a bad value fails here, in seconds."""
    unknown = sorted(set(extra_args) - swift_argument_names())
    if unknown:
        raise TrainConfigError(
            f"train.extra_args: {', '.join(unknown)} {'is not an' if len(unknown) == 1 else 'are not'} ms-swift "
            f"argument name(s) (swift rlhf would stop with remaining_argv)"
        )
    parser = swift_argument_parser()
    try:
        _, remaining = parser.parse_known_args(argv)
    except SystemExit:
        raise TrainConfigError(f"ms-swift refused the train arguments (see the message above): {argv}") from None
    if remaining:
        raise TrainConfigError(f"ms-swift does not know these train arguments: {remaining}")


def swift_environment(params: TrainParams, vision: VisionParams) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        USE_HF="1",  # hub ids are Hugging Face ids, not ModelScope ones
        MIN_PIXELS=str(vision.min_pixels),
        MAX_PIXELS=str(vision.max_pixels),
        SATORI_REWARD_MODE=params.reward_mode,
        SATORI_REWARD_CONTROL=params.reward_control,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REWARD_PLUGIN.parent.parent), env.get("PYTHONPATH")])),
    )
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):  # the stage logs; ms-swift must not open runs
        env.pop(key, None)
    if params.nproc_per_node > 1:
        env["NPROC_PER_NODE"] = str(params.nproc_per_node)
        env.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))  # two rehearsals at once need two ports
    else:
        env.pop("NPROC_PER_NODE", None)
    return env


# Lines of ms-swift's output the console shows; everything goes to the log file.
_CONSOLE_MARKERS = ("{'loss'", "{'reward'", "Train:", "Val:", "Error", "error:", "Traceback", "last_model_checkpoint")


def run_swift(argv: list[str], env: dict[str, str], log_file: Path, on_output: Callable[[], None]) -> None:
    """`swift rlhf ARGV`, its output in log_file (appended: a resumed run keeps the killed one's log).

    The console gets progress and per-step lines only; on_output is called after each line.
    """
    cmd = [sys.executable, "-m", "swift.cli.main", "rlhf", *argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                log.write(line)
                if any(marker in line for marker in _CONSOLE_MARKERS):
                    sys.stdout.write(line)
                    sys.stdout.flush()
                on_output()
            code = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        tail = "".join(log_file.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"swift rlhf exited with {code}; see {log_file}. Last lines:\n{tail}")


def files_digest(paths: list[Path]) -> str:
    """sha256 over the relative names and contents of every file under paths (folders walked in order)."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def run_key(params: TrainParams, vision: VisionParams, inputs: list[Path]) -> str:
    """What decides a training run: the params, the inputs' contents and the reward code. A change starts fresh."""
    decided = {
        "train": params.model_dump(),
        "vision": vision.model_dump(),
        "inputs": files_digest([*inputs, REWARD_PLUGIN, Path(__file__)]),
    }
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:16]


FINISHED_FILE = "finished"  # in a work folder whose run was exported: nothing left to resume


def prepare_work_dir(work_root: Path, key: str) -> Path:
    """work_root/<key>, kept if it holds an unfinished run (to resume); every other folder is removed.

    A finished run is not resumed (ms-swift would train past max_steps): run again, it starts afresh
    and, being deterministic, reproduces the same model.
    """
    work_root.mkdir(parents=True, exist_ok=True)
    for other in work_root.iterdir():
        if other.name != key or (other / FINISHED_FILE).exists():
            shutil.rmtree(other) if other.is_dir() else other.unlink()
    work = work_root / key
    work.mkdir(exist_ok=True)
    return work


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def resumable_checkpoint(output_dir: Path) -> Path | None:
    """The newest whole checkpoint; a half-written one (killed while saving) is removed."""
    for checkpoint in reversed(checkpoints(output_dir)):
        if (checkpoint / CHECKPOINT_DONE_FILE).is_file():
            return checkpoint
        shutil.rmtree(checkpoint)
    return None


def last_checkpoint(output_dir: Path) -> Path:
    found = checkpoints(output_dir)
    if not found:
        raise FileNotFoundError(f"swift rlhf wrote no checkpoint-* under {output_dir}")
    return found[-1]


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


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """Per-step training records of ms-swift's logging.jsonl, one per step (a resumed step: its last record)."""
    path = output_dir / "logging.jsonl"
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a killed run may be cut
            continue
        if "reward" in record and "global_step/max_steps" in record:
            by_step[step_of(record)] = record
    return [by_step[step] for step in sorted(by_step)]


def step_of(record: dict[str, Any]) -> int:
    return int(str(record["global_step/max_steps"]).split("/")[0])


def step_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one logging.jsonl record that are about the model, not the clock."""
    skip = ("global_step/max_steps", "elapsed_time", "remaining_time", "memory(GiB)", "train_speed(iter/s)")
    return {k: float(v) for k, v in record.items() if k not in skip and isinstance(v, (int, float))}


def reward_table(
    history: list[dict[str, Any]], reward_funcs: list[str], inverted: bool = False
) -> list[dict[str, float | None]]:
    """step, total reward and each reward's mean per step; None for a reward this run does not use.

    inverted (the control run): GRPO was given 1 - r, so the true values are turned back: r = 1 - logged.
    """
    rows = []
    for record in history:
        total = float(record["reward"])
        row: dict[str, float | None] = {
            "step": step_of(record),
            "reward": len(reward_funcs) - total if inverted else total,
        }
        for name, cls in REWARD_CLASSES.items():
            value = float(record[f"rewards/{cls}/mean"]) if name in reward_funcs else None
            row[name] = 1.0 - value if inverted and value is not None else value
        rows.append(row)
    return rows


def write_reward_table(path: Path, table: list[dict[str, float | None]]) -> None:
    """The reward table as CSV (DVC's plot source): every reward column, empty where unused."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "reward", *REWARD_CLASSES])
        writer.writeheader()
        writer.writerows(table)


def plot_reward_curves(path: Path, table: list[dict[str, float | None]]) -> None:
    """Total and per-reward mean per step as a PNG (same bytes for the same table: no date in the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in table]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    for column in ("reward", *REWARD_CLASSES):
        values = [row[column] for row in table]
        if all(v is not None for v in values):
            axis.plot(steps, values, marker="o", markersize=3, label=column, linewidth=2 if column == "reward" else 1)
    axis.set_xlabel("step")
    axis.set_ylabel("mean reward")
    axis.set_title("GRPO rewards per step")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)


def seen_sizes_by_source(data_files: list[Path], vision: VisionParams) -> dict[str, tuple[int, int]]:
    """A row's `solution` (where it came from, logged by ms-swift beside each completion) -> the image
    size the model saw."""
    sizes = {}
    for data_file in data_files:
        with data_file.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                sizes[row["solution"]] = vision.seen_size(row["width"], row["height"])
    return sizes


def first_and_last_samples(
    completions_file: Path, rows_by_source: dict[str, dict], reward_names: list[str], inverted: bool, count: int = 4
) -> str:
    """Markdown: `count` rollouts of the first and of the last training step side by side, each with its
    question's true answer and its rewards (true values, also in the inverted control run)."""
    first_of_step: dict[int, dict] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            first_of_step.setdefault(int(table["step"][0]), table)  # later tables of a step: evaluation rollouts
    if not first_of_step:
        raise ValueError(f"{completions_file} holds no completions")
    first, last = min(first_of_step), max(first_of_step)

    def cell(step: int, i: int) -> str:
        table = first_of_step[step]
        if i >= len(table["completion"]):
            return ""
        row = rows_by_source.get(table["solution"][i])
        truth = row["possible_answers"][0] if row else "?"
        rewards = []
        for name in reward_names:
            cls = REWARD_CLASSES[name]
            value = float(table[cls][i])
            rewards.append(f"{cls} {1.0 - value if inverted else value:.2f}")
        # A code span, so that markdown shows the <caption>/<bbox>/<answer> tags instead of taking them for HTML.
        text = " ".join(str(table["completion"][i]).split())
        return f"truth `{truth}`: `` {text} `` ({', '.join(rewards)})".replace("|", "\\|")

    lines = [f"| # | step {first} | step {last} |", "|---|---|---|"]
    lines += [f"| {i + 1} | {cell(first, i)} | {cell(last, i)} |" for i in range(count)]
    return "\n".join(lines) + "\n"


def completion_diagnostics(completions_file: Path, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    """summarize_completions for each step of completions.jsonl (training and evaluation rollouts together)."""
    from satori.rewards import summarize_completions

    by_step: dict[int, tuple[list[str], list]] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            completions, known = by_step.setdefault(int(table["step"][0]), ([], []))
            completions += table["completion"]
            known += [sizes.get(source) for source in table["solution"]]
    per_step = []
    for step, (completions, known) in sorted(by_step.items()):
        summary = summarize_completions(completions, known)
        summary["size_known_rate"] = sum(k is not None for k in known) / max(1, len(known))
        per_step.append({"step": step, **summary})
    return per_step
