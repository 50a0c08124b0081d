"""Stage 3, train: GRPO with ms-swift 4.x and the SATORI rewards.

Runs the `swift rlhf` CLI in a subprocess, the way the published recipe does:
with NPROC_PER_NODE > 1 ms-swift re-launches itself under torch.distributed.run,
so one code path serves 1 CPU process and N GPUs. Per-step metrics reach this
stage's MLflow run through transformers' MLflowCallback (MLFLOW_RUN_ID); the
final checkpoint is copied, without optimizer state, to models/trained.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from stages import tracking
from stages.config import PROMPT_FILE, REPO_ROOT, TrainParams, VisionParams, load_profile
from stages.download import BASE_MODEL_DIR, atomic_dir, read_source
from stages.preprocess import PROCESSED_DIR

TRAINED_DIR = REPO_ROOT / "models" / "trained"
TRAIN_REPORT_DIR = REPO_ROOT / "reports" / "train"
METRICS_FILE = REPO_ROOT / "reports" / "train.json"
PLOTS_FILE = REPO_ROOT / "reports" / "train_rewards.csv"
REWARD_PLUGIN = REPO_ROOT / "stages" / "rewards.py"
# Trainer state that a published checkpoint does not need.
RESUME_ONLY_FILES = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"}
# ms-swift logs rewards/<ClassName>/mean; these are the classes behind the published names.
REWARD_CLASSES = {
    "external_format": "Format",
    "external_bbox_acc": "BoundingBoxAccuracy",
    "extern_vqa_acc": "VQAAccuracy",
    "external_caption_acc": "CaptionAccuracy",
}


def swift_arguments(params: TrainParams, model_dir: Path, data_dir: Path, output_dir: Path) -> list[str]:
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
        "dataset": str(data_dir / "train.jsonl"),
        "val_dataset": str(data_dir / "val.jsonl"),
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
        "logging_steps": params.logging_steps,
        "warmup_ratio": params.warmup_ratio,
        "dataloader_num_workers": params.dataloader_num_workers,
        "num_generations": params.num_generations,
        "temperature": params.temperature,
        "system": str(PROMPT_FILE),
        "log_completions": params.log_completions,
        "seed": params.seed,
        "output_dir": str(output_dir),
        "add_version": False,
        # Skips ms-swift's ModelScope "is this local model the latest" lookup (~7 s of retries offline).
        "check_model": False,
        "report_to": "mlflow",
        "run_name": "train",  # MLflowCallback renames the resumed run to this
        **params.extra_args,
    }
    argv: list[str] = []
    for key, value in args.items():
        argv.append(f"--{key}")
        values = value if isinstance(value, list) else [value]
        argv += [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    return argv


def swift_environment(params: TrainParams, vision: VisionParams, run_id: str, experiment: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        USE_HF="1",  # hub ids are Hugging Face ids, not ModelScope ones
        MIN_PIXELS=str(vision.min_pixels),
        MAX_PIXELS=str(vision.max_pixels),
        SATORI_REWARD_MODE=params.reward_mode,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        MLFLOW_TRACKING_URI=tracking.tracking_uri(),
        MLFLOW_EXPERIMENT_NAME=experiment,
        MLFLOW_RUN_ID=run_id,
    )
    if params.nproc_per_node > 1:
        env["NPROC_PER_NODE"] = str(params.nproc_per_node)
    else:
        env.pop("NPROC_PER_NODE", None)
    return env


def run_swift(argv: list[str], env: dict[str, str], log_file: Path) -> None:
    """`swift rlhf ARGV`, its output teed to log_file; raises with the log's tail on failure."""
    cmd = [sys.executable, "-m", "swift.cli.main", "rlhf", *argv]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    if code != 0:
        tail = "".join(log_file.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"swift rlhf exited with {code}; see {log_file}. Last lines:\n{tail}")


def last_checkpoint(output_dir: Path) -> Path:
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    if not checkpoints:
        raise FileNotFoundError(f"swift rlhf wrote no checkpoint-* under {output_dir}")
    return checkpoints[-1]


def read_log_history(output_dir: Path) -> list[dict[str, Any]]:
    """Per-step records of ms-swift's logging.jsonl (training steps only)."""
    path = output_dir / "logging.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if "reward" in r and "global_step/max_steps" in r]


def step_of(record: dict[str, Any]) -> int:
    return int(str(record["global_step/max_steps"]).split("/")[0])


def reward_table(history: list[dict[str, Any]], reward_funcs: list[str]) -> list[dict[str, float]]:
    rows = []
    for record in history:
        row = {"step": step_of(record), "reward": float(record["reward"])}
        for name in reward_funcs:
            row[name] = float(record[f"rewards/{REWARD_CLASSES[name]}/mean"])
        rows.append(row)
    return rows


def _user_text(prompt: str) -> str:
    """The user turn of a logged chat prompt, without the image placeholder."""
    user = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    return user.replace("<image>", "")


def seen_sizes_by_question(data_files: list[Path], vision: VisionParams) -> dict[str, tuple[int, int] | None]:
    """Question text -> the image size the model saw; None where one question goes with several sizes.

    ms-swift's completions.jsonl logs the prompt, not the image, so a completion is tied to its
    image through the question text whenever that text is unique to one image size.
    """
    sizes: dict[str, set[tuple[int, int]]] = {}
    for data_file in data_files:
        with data_file.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                question = row["messages"][0]["content"].replace("<image>", "")
                sizes.setdefault(question, set()).add(vision.seen_size(row["width"], row["height"]))
    return {q: next(iter(s)) if len(s) == 1 else None for q, s in sizes.items()}


def completion_diagnostics(completions_file: Path, sizes: dict[str, tuple[int, int] | None]) -> list[dict]:
    """summarize_completions for each step of completions.jsonl (training and evaluation rollouts together)."""
    from stages.rewards import summarize_completions

    by_step: dict[int, tuple[list[str], list]] = {}
    with completions_file.open(encoding="utf-8") as f:
        for line in f:
            table = json.loads(line)
            completions, known = by_step.setdefault(int(table["step"][0]), ([], []))
            completions += table["completion"]
            known += [sizes.get(_user_text(p)) for p in table["prompt"]]
    per_step = []
    for step, (completions, known) in sorted(by_step.items()):
        summary = summarize_completions(completions, known)
        summary["size_known_rate"] = sum(k is not None for k in known) / max(1, len(known))
        per_step.append({"step": step, **summary})
    return per_step


def main() -> None:
    name, profile = load_profile()
    params = profile.train
    params_logged = {"train": params.model_dump(), "vision": profile.vision.model_dump()}
    with tracking.stage_run("train", profile.mlflow_experiment, name, params_logged) as run:
        work_dir = REPO_ROOT / ".work" / "train"
        shutil.rmtree(work_dir, ignore_errors=True)
        output_dir = work_dir / "swift_output"
        argv = swift_arguments(params, BASE_MODEL_DIR, PROCESSED_DIR, output_dir)
        env = swift_environment(params, profile.vision, run.info.run_id, profile.mlflow_experiment)
        run_swift(argv, env, work_dir / "swift.log")

        checkpoint = last_checkpoint(output_dir)
        with atomic_dir(TRAINED_DIR) as out:
            for item in checkpoint.iterdir():
                if item.name not in RESUME_ONLY_FILES and item.is_file():
                    shutil.copy2(item, out / item.name)
            base = read_source(BASE_MODEL_DIR)
            (out / "SOURCE.json").write_text(
                json.dumps({"base_model": base, "checkpoint": checkpoint.name}, indent=2) + "\n", encoding="utf-8"
            )

        history = read_log_history(output_dir)
        table = reward_table(history, params.reward_funcs)
        shutil.rmtree(TRAIN_REPORT_DIR, ignore_errors=True)
        TRAIN_REPORT_DIR.mkdir(parents=True)
        for produced in ("completions.jsonl", "logging.jsonl"):
            if (output_dir / produced).exists():
                shutil.copy2(output_dir / produced, TRAIN_REPORT_DIR / produced)
        with PLOTS_FILE.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        final = table[-1]
        metrics = {
            "steps": final["step"],
            "final_reward": final["reward"],
            "mean_reward": sum(r["reward"] for r in table) / len(table),
            **{f"final.{k}": v for k, v in final.items() if k not in ("step", "reward")},
        }
        completions_file = TRAIN_REPORT_DIR / "completions.jsonl"
        if completions_file.exists():
            sizes = seen_sizes_by_question([PROCESSED_DIR / "train.jsonl", PROCESSED_DIR / "val.jsonl"], profile.vision)
            diagnostics = completion_diagnostics(completions_file, sizes)
            for row in diagnostics:
                tracking.log_metrics({f"diagnostics/{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
            metrics.update({f"diagnostics.{k}": v for k, v in diagnostics[-1].items() if k != "step"})
        METRICS_FILE.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics({"summary": metrics})
        tracking.log_artifact(TRAIN_REPORT_DIR, "train")
        tracking.log_artifact(work_dir / "swift.log", "train")


if __name__ == "__main__":
    main()
