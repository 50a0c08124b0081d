"""Stage 4, evaluate: base and trained model on the benchmarks, through VLMEvalKit.

VLMEvalKit does the work: build_dataset, build_prompt, infer_data_job (sharding across ranks,
merging on rank 0) and dataset.evaluate with exact matching (MMBench's circular scoring
included). The SATORI adapter answers VLMEvalKit's one-at-a-time calls from batched generation.

With evaluate.nproc_per_node > 1 the stage re-launches its inference under torch.distributed.run
(gloo on CPU, NCCL on GPUs); every rank answers its shard, rank 0 scores and writes results.json,
and this process reports them. The stage works in a fresh scratch folder every time (VLMEvalKit
resumes from any prediction file it finds, which would mix models) and copies the predictions,
the raw completions and the accuracy tables into reports/evaluate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from stages import tracking
from stages.config import REPO_ROOT, BenchmarksParams, EvaluateParams, load_profile, system_prompt
from stages.download import BASE_MODEL_DIR, BENCHMARK_DIR
from stages.train import TRAINED_DIR

REPORT_DIR = REPO_ROOT / "reports" / "evaluate"
METRICS_FILE = REPO_ROOT / "reports" / "evaluate.json"
WORK_DIR = REPO_ROOT / ".work" / "evaluate"


def variants(params: EvaluateParams) -> dict[str, tuple[Path, bool]]:
    """label -> (model folder, append the SATORI instruction). The base model is also scored without it."""
    runs = {"base": (BASE_MODEL_DIR, params.satori_instruction)}
    if params.satori_instruction:
        runs["base_no_instruction"] = (BASE_MODEL_DIR, False)
    runs["trained"] = (TRAINED_DIR, params.satori_instruction)
    return runs


def stage_data_root(benchmark_dir: Path, scratch: Path) -> Path:
    """An LMUData folder of links to the benchmark TSVs; VLMEvalKit writes decoded images beside them."""
    root = scratch / "lmudata"
    root.mkdir(parents=True, exist_ok=True)
    for tsv in benchmark_dir.glob("*.tsv"):
        try:
            (root / tsv.name).symlink_to(tsv.resolve())
        except FileExistsError:  # another rank made it first
            pass
    return root


def overall_accuracy(acc_table) -> float:
    """The Overall accuracy of VLMEvalKit's acc table (MMBench's dev split row when split)."""
    return float(_main_row(acc_table)["Overall"])


def category_accuracies(acc_table) -> dict[str, float]:
    """Per-category accuracies of VLMEvalKit's acc table (every column but split and Overall)."""
    row = _main_row(acc_table)
    return {str(k): float(v) for k, v in row.items() if k not in ("split", "Overall")}


def _main_row(acc_table):
    if "split" in acc_table and len(acc_table) > 1:
        dev = acc_table[acc_table["split"].astype(str).str.contains("dev")]
        acc_table = dev if len(dev) else acc_table
    return acc_table.iloc[0]


def distributed_context() -> tuple[int, int, str]:
    """(rank, world size, device) under torch.distributed.run, with the process group initialised."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def evaluate_variant(
    label: str, model, benchmarks: BenchmarksParams, data_root: Path, rank: int, world: int
) -> dict[str, Any]:
    """Answer every benchmark with one adapter; rank 0 returns scores (other ranks an empty dict)."""
    import torch.distributed as dist

    from stages.vlmeval_compat import build_vlmeval_dataset, vlmeval_api

    api = vlmeval_api()
    model_name = f"satori-{label}"
    out_dir = WORK_DIR / label
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for spec in benchmarks.items:
        dataset = build_vlmeval_dataset(spec.name, data_root)
        # The rows VLMEvalKit's infer_data gives this rank, in its order, with its own prompts.
        shard = dataset.data.iloc[list(range(rank, len(dataset), world))]
        model.plan([(row["index"], dataset.build_prompt(row)) for _, row in shard.iterrows()])
        model.completions = []
        api.infer_data_job(model, work_dir=str(out_dir), model_name=model_name, dataset=dataset, verbose=False)
        records = model.completions
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        if rank != 0:
            continue
        records.sort(key=lambda r: int(r["index"]))
        with (out_dir / f"{model_name}_{spec.name}_completions.jsonl").open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps({**record, "index": int(record["index"])}) + "\n")
        pred_file = api.get_pred_file_path(str(out_dir), model_name, spec.name)
        acc = dataset.evaluate(pred_file, model="exact_matching", nproc=1)
        results[spec.name] = {
            "accuracy": overall_accuracy(acc),
            "categories": category_accuracies(acc),
            "answer_tag_rate": sum(r["answer"] is not None for r in records) / max(1, len(records)),
            "mean_completion_tokens": sum(r["completion_tokens"] for r in records) / max(1, len(records)),
            "predictions": len(records),
        }
    return results


def run_inference(profile_name: str | None = None) -> None:
    """Every variant on every benchmark in this process (one rank of many under torchrun)."""
    _, profile = load_profile(name=profile_name)
    params = profile.evaluate
    rank, world, device = distributed_context()
    data_root = stage_data_root(BENCHMARK_DIR, WORK_DIR)
    os.environ.setdefault("PRED_FORMAT", "tsv")  # readable prediction files (VLMEvalKit's default is xlsx)
    from stages.satori_vlm import SatoriVLM

    adapters: dict[Path, SatoriVLM] = {}  # one per model folder: the base model is loaded once for both variants
    scores = {}
    for label, (model_dir, instruction) in variants(params).items():
        if model_dir not in adapters:
            adapters[model_dir] = SatoriVLM(
                model_dir,
                system_prompt=system_prompt(),
                append_instruction=instruction,
                min_pixels=params.min_pixels,
                max_pixels=params.max_pixels,
                max_new_tokens=params.max_new_tokens,
                batch_size=params.batch_size,
                device=device if params.device == "auto" else params.device,
            )
        model = adapters[model_dir]
        model.append_instruction = instruction
        scores[label] = evaluate_variant(label, model, profile.benchmarks, data_root, rank, world)
    if rank == 0:
        (WORK_DIR / "results.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")


def launch(nproc: int) -> None:
    """run_inference here (one process) or under torch.distributed.run (nproc processes)."""
    if nproc == 1:
        run_inference()
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "stages.evaluate", "--worker"]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)


def summarize(scores: dict[str, dict], benchmarks: BenchmarksParams) -> dict[str, dict]:
    """{benchmark: {base, trained, delta, ..., categories: {category: {base, trained, delta}}}}."""
    metrics: dict[str, dict] = {}
    for spec in benchmarks.items:
        base, trained = scores["base"][spec.name], scores["trained"][spec.name]
        row: dict[str, Any] = {
            "base": base["accuracy"],
            "trained": trained["accuracy"],
            "delta": trained["accuracy"] - base["accuracy"],
        }
        if "base_no_instruction" in scores:
            row["base_no_instruction"] = scores["base_no_instruction"][spec.name]["accuracy"]
        for label, result in scores.items():
            row[f"{label}_answer_tag_rate"] = result[spec.name]["answer_tag_rate"]
            row[f"{label}_mean_completion_tokens"] = result[spec.name]["mean_completion_tokens"]
        row["categories"] = {
            category: {
                "base": base["categories"][category],
                "trained": trained["categories"][category],
                "delta": trained["categories"][category] - base["categories"][category],
            }
            for category in base["categories"]
        }
        metrics[spec.name] = row
    return metrics


def main() -> None:
    name, profile = load_profile()
    params = profile.evaluate
    logged = {"evaluate": params.model_dump(), "benchmarks": profile.benchmarks.model_dump()}
    with tracking.stage_run("evaluate", profile.mlflow_experiment, name, logged):
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        launch(params.nproc_per_node)
        scores = json.loads((WORK_DIR / "results.json").read_text(encoding="utf-8"))
        metrics = summarize(scores, profile.benchmarks)
        shutil.rmtree(REPORT_DIR, ignore_errors=True)
        REPORT_DIR.mkdir(parents=True)
        for label in variants(params):
            for produced in (WORK_DIR / label).iterdir():
                if produced.is_file() and produced.suffix in {".tsv", ".csv", ".jsonl"}:
                    shutil.copy2(produced, REPORT_DIR / f"{label}_{produced.name}")
        METRICS_FILE.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics(metrics)
        tracking.log_artifact(METRICS_FILE)
        tracking.log_artifact(REPORT_DIR, "evaluate")


if __name__ == "__main__":
    if "--worker" in sys.argv:
        run_inference()
    else:
        main()
