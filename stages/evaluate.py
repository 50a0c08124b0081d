"""Stage 4, evaluate: base and trained model on the benchmarks, through VLMEvalKit.

VLMEvalKit does the work: build_dataset, infer_data_job (prompts, images,
sharding across ranks) and dataset.evaluate with exact matching (MMBench's
circular scoring included). The stage works in a fresh scratch folder every
time (VLMEvalKit resumes from any prediction file it finds, which would mix
models) and copies the predictions and accuracy tables into reports/evaluate.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from stages import tracking
from stages.config import REPO_ROOT, BenchmarksParams, EvaluateParams, load_profile, system_prompt
from stages.download import BASE_MODEL_DIR, BENCHMARK_DIR
from stages.train import TRAINED_DIR

REPORT_DIR = REPO_ROOT / "reports" / "evaluate"
METRICS_FILE = REPO_ROOT / "reports" / "evaluate.json"
WORK_DIR = REPO_ROOT / ".work" / "evaluate"
MODELS = {"base": BASE_MODEL_DIR, "trained": TRAINED_DIR}


def stage_data_root(benchmark_dir: Path, scratch: Path) -> Path:
    """An LMUData folder of links to the benchmark TSVs; VLMEvalKit writes decoded images beside them."""
    root = scratch / "lmudata"
    root.mkdir(parents=True, exist_ok=True)
    for tsv in benchmark_dir.glob("*.tsv"):
        (root / tsv.name).symlink_to(tsv.resolve())
    return root


def overall_accuracy(acc_table) -> float:
    """The Overall accuracy of VLMEvalKit's acc table (MMBench's dev split row when split)."""
    if "split" in acc_table and len(acc_table) > 1:
        dev = acc_table[acc_table["split"].astype(str).str.contains("dev")]
        acc_table = dev if len(dev) else acc_table
    return float(acc_table["Overall"].iloc[0])


def evaluate_model(
    label: str, model_dir: Path, benchmarks: BenchmarksParams, params: EvaluateParams, data_root: Path
) -> dict[str, Any]:
    from stages.satori_vlm import SatoriVLM
    from stages.vlmeval_compat import build_vlmeval_dataset, vlmeval_api

    api = vlmeval_api()

    model = SatoriVLM(
        model_dir,
        system_prompt=system_prompt(),
        append_instruction=params.satori_instruction,
        min_pixels=params.min_pixels,
        max_pixels=params.max_pixels,
        max_new_tokens=params.max_new_tokens,
        device=params.device,
    )
    model_name = f"satori-{label}"
    out_dir = WORK_DIR / label
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for spec in benchmarks.items:
        dataset = build_vlmeval_dataset(spec.name, data_root)
        api.infer_data_job(model, work_dir=str(out_dir), model_name=model_name, dataset=dataset, verbose=False)
        pred_file = api.get_pred_file_path(str(out_dir), model_name, spec.name)
        acc = dataset.evaluate(pred_file, model="exact_matching", nproc=1)
        answered = [c for c in model.completions if c["dataset"] == spec.name]
        results[spec.name] = {
            "accuracy": overall_accuracy(acc),
            "answer_tag_rate": sum(c["answer"] is not None for c in answered) / max(1, len(answered)),
            "predictions": len(answered),
        }
    with (out_dir / "completions.jsonl").open("w", encoding="utf-8") as f:
        for record in model.completions:
            f.write(json.dumps(record) + "\n")
    return results


def main() -> None:
    name, profile = load_profile()
    params = profile.evaluate
    logged = {"evaluate": params.model_dump(), "benchmarks": profile.benchmarks.model_dump()}
    with tracking.stage_run("evaluate", profile.mlflow_experiment, name, logged):
        shutil.rmtree(WORK_DIR, ignore_errors=True)
        data_root = stage_data_root(BENCHMARK_DIR, WORK_DIR)
        # Readable prediction files (VLMEvalKit's default is xlsx).
        os.environ.setdefault("PRED_FORMAT", "tsv")
        by_model = {
            label: evaluate_model(label, path, profile.benchmarks, params, data_root) for label, path in MODELS.items()
        }

        metrics: dict[str, dict[str, float]] = {}
        for spec in profile.benchmarks.items:
            base = by_model["base"][spec.name]["accuracy"]
            trained = by_model["trained"][spec.name]["accuracy"]
            metrics[spec.name] = {
                "base": base,
                "trained": trained,
                "delta": trained - base,
                "base_answer_tag_rate": by_model["base"][spec.name]["answer_tag_rate"],
                "trained_answer_tag_rate": by_model["trained"][spec.name]["answer_tag_rate"],
            }
        shutil.rmtree(REPORT_DIR, ignore_errors=True)
        REPORT_DIR.mkdir(parents=True)
        for label in MODELS:
            for produced in (WORK_DIR / label).iterdir():
                if produced.is_file() and produced.suffix in {".tsv", ".csv", ".jsonl"}:
                    shutil.copy2(produced, REPORT_DIR / f"{label}_{produced.name}")
        METRICS_FILE.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics({f"{b}.{k}": v for b, row in metrics.items() for k, v in row.items()})
        tracking.log_artifact(METRICS_FILE)
        tracking.log_artifact(REPORT_DIR, "evaluate")


if __name__ == "__main__":
    main()
