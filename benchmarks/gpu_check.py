"""The GPU check: the train stage's own code path on one GPU for a few steps per rollout setting, then the
batched evaluation check, as one table.

    python -m benchmarks.gpu_check            # a GPU: Qwen2.5-VL-3B-shaped random bf16 model, the paper profile
    python -m benchmarks.gpu_check --cpu      # the same code on the embedded tiny model (the CI rehearsal)

It needs only the GPU machine's packages plus the wheels of `make gpu-bundle` (no Prefect, DVC, MLflow or
VLMEvalKit): per setting it builds the train stage's command line (satori.training.swift_cli, checked by ms-swift's
parser), runs `swift rlhf` with the project's reward plugin (satori.training.swift_run), exports the last checkpoint
whole (satori.training.export) and reads ms-swift's log. Rows: seconds per step, completion tokens/s/GPU, decode
milliseconds per token (one timed `generate` of the setting's generation batch, as ms-swift's transformers
engine generates it: all rows in one call) and its ratio to the HBM bound (streaming the weights once),
peak memory. The table goes to stdout and, when $OUT is set, to $OUT/gpu_check.md and $OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from satori.core.config import REPO_ROOT, TrainParams, VisionParams, read_params, validate_profile
from satori.core.prompt import mcq_question, system_prompt
from satori.data import synthetic
from satori.data.preprocessing import preprocess
from satori.training.checkpoints import last_checkpoint
from satori.training.export import export_model, weight_files
from satori.training.swift_cli import check_swift_arguments, swift_arguments, swift_environment
from satori.training.swift_run import read_log_history, run_swift

# The rollout settings compared. seed: the published per-GPU batch (one prompt x num_generations per step,
# generated every step). fast: four steps' prompts generated in one call (train.steps_per_generation).
SETTINGS = {"seed": {}, "fast": {"steps_per_generation": 4}}
# Vendors' peak HBM bandwidth (bytes/s) by a name in torch.cuda.get_device_name(); others print no bound.
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L40S": 0.864e12}
PROMPT = REPO_ROOT / "prompt.txt"


def profile_train(profile: str, steps: int, overrides: dict) -> tuple[TrainParams, VisionParams, object]:
    """The profile's train params on one process for `steps` steps (one checkpoint at the end, no evaluation)."""
    raw = read_params(REPO_ROOT / "params.yaml")[profile]
    raw["train"] = {
        **raw["train"], "nproc_per_node": 1, "max_steps": steps, "save_steps": steps, "eval_steps": 10**6,
        "logging_steps": 1, "dataloader_num_workers": 0, "save_total_limit": 1, **overrides,
    }  # fmt: skip
    checked = validate_profile(profile, raw)
    return checked.train, checked.vision, checked.preprocess


def build_model(folder: Path, cpu: bool) -> Path:
    model = folder / "model"
    if (model / "config.json").is_file():
        return model
    start = time.monotonic()
    if cpu:
        from satori.data.tiny_model import build_embedded_base_model

        tiny = validate_profile("tiny", read_params(REPO_ROOT / "params.yaml")["tiny"])
        # Not warmed up: the check measures speed, not answers.
        build_embedded_base_model(model, tiny.base_model.tiny, tiny.vision, system_prompt(PROMPT), warm_up=False)
    else:
        from benchmarks.eval_throughput import build_random_3b

        build_random_3b(model)
    print(f"built {'the tiny' if cpu else 'the 3B-shaped'} model in {time.monotonic() - start:.0f} s", flush=True)
    return model


def build_data(folder: Path, model: Path, vision: VisionParams, preprocess_params, train: TrainParams) -> tuple[Path, Path]:
    """Synthetic VQA-Verify-shaped rows, preprocessed by the preprocess stage's code."""
    raw, processed = folder / "raw", folder / "processed"
    if not (processed / "train.jsonl").is_file():
        synthetic.write_vqa_dataset(raw, rows=64, seed=7)
        budget = train.max_length - train.max_completion_length
        report = preprocess(preprocess_params, vision, budget, raw, model, processed, system_prompt(PROMPT))
        print(f"preprocessed: {report['kept']} of {report['rows_in']} rows kept", flush=True)
    return raw, processed


def localized(processed: Path, work: Path, val_rows: int) -> tuple[Path, Path]:
    """The rows with absolute image paths, as the train stage hands them to ms-swift; the validation split cut
    to val_rows (ms-swift validates once at the end: the check times training, not that pass)."""
    from satori.training.grpo_launch import localize_rows

    files = []
    for split in ("train", "val"):
        localize_rows(processed / f"{split}.jsonl", work / f"{split}.jsonl", [processed, processed.parent])
        files.append((work / f"{split}.jsonl").resolve())
    lines = files[1].read_text(encoding="utf-8").splitlines(keepends=True)
    files[1].write_text("".join(lines[:val_rows]), encoding="utf-8")
    return files[0], files[1]


def generation_cycle(params: TrainParams) -> int:
    """Optimizer steps per generation call."""
    micro_steps = params.steps_per_generation or params.gradient_accumulation_steps
    return max(1, micro_steps // params.gradient_accumulation_steps)


def train_setting(name: str, params: TrainParams, vision: VisionParams, model: Path, processed: Path, folder: Path,
                  cuda: bool) -> dict:  # fmt: skip
    """A few GRPO steps as the train stage runs them, the export checked whole; per-step numbers from the log."""
    work = folder / f"train_{name}"
    work.mkdir(parents=True, exist_ok=True)
    train_file, val_file = localized(processed, work, params.per_device_eval_batch_size)
    output_dir = (work / "swift_output").resolve()
    argv = swift_arguments(
        params, model_dir=model.resolve(), train_file=train_file, val_file=val_file, output_dir=output_dir,
        prompt_file=PROMPT.resolve(), cuda=cuda,
    )  # fmt: skip
    check_swift_arguments(argv, params.extra_args)
    start = time.monotonic()
    run_swift(argv, swift_environment(params, vision), work / "swift.log", on_output=lambda: None)
    wall = time.monotonic() - start
    exported = work / "exported"
    exported.mkdir(exist_ok=True)
    export_model(last_checkpoint(output_dir), model, exported, params.tuner_type, params.max_shard_size)
    shipped = weight_files(exported)  # raises unless every shard the index names is there
    steps = step_records(output_dir)
    # Timed over whole generation cycles after the first (which includes compilation and allocation): a
    # cycle is one generation call (the only step that logs rewards and completion lengths) and the steps
    # that train on its rollouts.
    cycle = generation_cycle(params)
    timed = steps[cycle:] or steps
    seconds = sum(float(r["step_time"]) for r in timed)
    generated = [float(r["completions/mean_length"]) for r in timed if "completions/mean_length" in r]
    tokens = sum(generated) * rows_per_generation(params)
    return {
        "steps": len(steps),
        "generation_steps": len([r for r in steps if "completions/mean_length" in r]),
        "wall_s": wall,
        "seconds_per_step": seconds / len(timed),
        "completion_tokens_per_s_per_gpu": tokens / seconds,
        "peak_memory_gib": max(float(r.get("memory(GiB)", 0) or 0) for r in steps) or None,
        "mean_completion_tokens": sum(generated) / max(1, len(generated)),
        "rewarded_steps": len(read_log_history(output_dir)),
        "exported": shipped,
    }


def step_records(output_dir: Path) -> list[dict]:
    """Every training step's record of ms-swift's logging.jsonl (the steps between generations included)."""
    records = {}
    for line in (output_dir / "logging.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line) if line.strip() else {}
        if "global_step/max_steps" in record and "step_time" in record:
            records[int(str(record["global_step/max_steps"]).split("/")[0])] = record
    return [records[step] for step in sorted(records)]


def rows_per_generation(params: TrainParams) -> int:
    """Completions one process generates in one call: its micro-batches of a generation cycle."""
    return params.per_device_train_batch_size * (params.steps_per_generation or params.gradient_accumulation_steps)


def first_prompt(train_file: Path) -> tuple[str, str]:
    """(image path, question) of the first row of a localized training file."""
    row = json.loads(train_file.read_text(encoding="utf-8").splitlines()[0])
    return row["images"][0], row["messages"][0]["content"].replace("<image>", "")


def decode_timing(model_dir: Path, rows: int, new_tokens: int, temperature: float, image: str, question: str,
                  vision: VisionParams) -> dict:  # fmt: skip
    """One sampled generation of `rows` completions of exactly new_tokens tokens: milliseconds per decode step."""
    import torch

    from satori.evaluation.batched_generation import BatchedGenerator

    cuda = torch.cuda.is_available()
    engine = BatchedGenerator(
        model_dir, system_prompt=system_prompt(PROMPT), append_instruction=False, min_pixels=vision.min_pixels,
        max_pixels=vision.max_pixels, max_new_tokens=new_tokens,
    )  # fmt: skip
    text, images = engine.chat([{"type": "image", "value": image}, {"type": "text", "value": question}])
    inputs = engine.processor(text=[text] * rows, images=images * rows, padding=True, return_tensors="pt")
    inputs = inputs.to(engine.device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True, temperature=temperature)
    with torch.inference_mode():
        engine.model.generate(**inputs, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.model.generate(**inputs, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    weights_bytes = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    bound_ms = None
    if cuda:
        name = torch.cuda.get_device_name()
        bandwidth = next((bw for key, bw in HBM_BYTES_PER_S.items() if key in name), None)
        bound_ms = 1000 * weights_bytes / bandwidth if bandwidth else None
    return {
        "rows": rows,
        "decode_ms_per_token": 1000 * seconds / new_tokens,
        "hbm_bound_ms": bound_ms,
        "rollout_tokens_per_s": rows * new_tokens / seconds,
    }


def eval_check(model_dir: Path, folder: Path, questions: int, batch_size: int, vision: VisionParams) -> dict:
    """Greedy answers to MMBench-shaped questions one at a time, then batch_size at a time: samples/s each."""
    import base64

    from satori.evaluation.batched_generation import BatchedGenerator

    engine = BatchedGenerator(
        model_dir, system_prompt=system_prompt(PROMPT), append_instruction=True, min_pixels=vision.min_pixels,
        max_pixels=vision.max_pixels, max_new_tokens=64,
    )  # fmt: skip
    rows = synthetic.benchmark_rows(questions=questions, seed=3, circular=False, category_column="l2-category")
    messages = []
    for row in rows:
        image = folder / f"question_{row['index']}.png"
        image.write_bytes(base64.b64decode(row["image"]))
        text = mcq_question(row["question"], [row[letter] for letter in "ABCD"])
        messages.append([{"type": "image", "value": str(image)}, {"type": "text", "value": text}])
    engine.generate(messages[:1])  # warm-up
    rates = {}
    for batch in (1, batch_size):
        start = time.perf_counter()
        for i in range(0, len(messages), batch):
            engine.generate(messages[i : i + batch])
        rates[batch] = len(messages) / (time.perf_counter() - start)
    return {"questions": questions, "samples_per_s": rates, "ratio": rates[batch_size] / rates[1]}


def table(results: dict) -> str:
    def cell(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        f"# GPU check ({results['device']}, {results['model']})",
        "",
        "| setting | generation batch | s/step | completion tok/s/GPU | decode ms/token | x HBM bound | rollout tok/s "
        "| peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results["settings"].items():
        train, decode = row["train"], row["decode"]
        ratio = decode["decode_ms_per_token"] / decode["hbm_bound_ms"] if decode["hbm_bound_ms"] else None
        lines.append(
            f"| {name} | {decode['rows']} | {train['seconds_per_step']:.2f} | "
            f"{train['completion_tokens_per_s_per_gpu']:.0f} | {decode['decode_ms_per_token']:.2f} | "
            f"{cell(ratio, '.1f')} | {decode['rollout_tokens_per_s']:.0f} | {cell(train['peak_memory_gib'], '.1f')} |"
        )
    ev = results["evaluation"]
    rates = {int(k): v for k, v in ev["samples_per_s"].items()}
    (big,) = [k for k in rates if k != 1]
    lines += ["", f"Evaluation, {ev['questions']} questions, greedy: batch 1 {rates[1]:.2f} samples/s, "
              f"batch {big} {rates[big]:.2f} samples/s ({ev['ratio']:.1f}x)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the tiny model on the CPU (the rehearsal of the GPU run)")
    parser.add_argument("--cycles", type=int, default=2, help="generation cycles trained per setting (the first untimed)")
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / ".runs" / "gpu_check")
    parser.add_argument("--questions", type=int, default=32, help="evaluation check questions")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda and not args.cpu:
        raise SystemExit("gpu_check needs a CUDA GPU; --cpu runs the same code on the tiny model")
    profile = "tiny" if args.cpu else "paper"
    args.folder.mkdir(parents=True, exist_ok=True)
    model = build_model(args.folder, args.cpu)
    base_train, vision, preprocess_params = profile_train(profile, 1, {})
    raw, processed = build_data(args.folder, model, vision, preprocess_params, base_train)
    results = {
        "device": torch.cuda.get_device_name() if cuda else "CPU",
        "model": "tiny Qwen2.5-VL, fp32" if args.cpu else "Qwen2.5-VL-3B-shaped, random bf16",
        "profile": profile,
        "settings": {},
    }
    for name in args.settings:
        overrides = SETTINGS[name]
        cycle = generation_cycle(profile_train(profile, 1, overrides)[0])
        params, _, _ = profile_train(profile, args.cycles * cycle, overrides)
        print(f"[gpu_check] {name}: {params.max_steps} GRPO steps, one generation per {cycle}", flush=True)
        train = train_setting(name, params, vision, model, processed, args.folder, cuda)
        rows = rows_per_generation(params)
        image, question = first_prompt(args.folder / f"train_{name}" / "train.jsonl")
        decode = decode_timing(model, rows, params.max_completion_length, params.temperature, image, question, vision)
        results["settings"][name] = {"train": train, "decode": decode}
    print("[gpu_check] evaluation: batch 1 against batch 16", flush=True)
    results["evaluation"] = eval_check(model, args.folder, args.questions, 16, vision)
    text = table(results)
    print("\n" + text)
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.md").write_text(text, encoding="utf-8")
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
