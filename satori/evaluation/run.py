"""Scoring a model on the benchmarks through VLMEvalKit (the work of the evaluate stages).

VLMEvalKit does the work: build_dataset, build_prompt, infer_data_job (sharding across ranks,
merging on rank 0) and dataset.evaluate with exact matching (MMBench's circular scoring
included). The SATORI adapter answers VLMEvalKit's one-at-a-time calls from batched generation.

With evaluate.nproc_per_node > 1 the inference re-launches under torch.distributed.run
(gloo on CPU, NCCL on GPUs); every rank answers its shard, rank 0 scores and writes results.json,
and the stage reports them. Each run works in a fresh scratch folder (VLMEvalKit resumes from any
prediction file it finds, which would mix models); the predictions, the raw completions and the
accuracy tables are then copied into the stage's report folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from satori.core.config import BenchmarksParams, EvaluateParams, JudgeParams, load_profile
from satori.core.prompt import system_prompt
from satori.core.files import write_json
from satori.evaluation.scoring import scoring_rule


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
    """The row a benchmark reports: MMMU's validation split (as its papers report it), else MMBench's dev split."""
    if "split" in acc_table and len(acc_table) > 1:
        splits = acc_table["split"].astype(str)
        for chosen in (acc_table[splits == "validation"], acc_table[splits.str.contains("dev")]):
            if len(chosen):
                return chosen.iloc[0]
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


def vlmeval_model_name(label: str) -> str:
    """The model name VLMEvalKit files a variant's predictions under."""
    return f"satori-{label}"


def completions_name(label: str, benchmark: str) -> str:
    """The raw completions of a variant on a benchmark: the file's name in the work folder."""
    return f"{vlmeval_model_name(label)}_{benchmark}_completions.jsonl"


def reported_completions(report_dir: Path, label: str, benchmark: str) -> Path:
    """Where score_model copies those completions in its report folder."""
    return report_dir / f"{label}_{completions_name(label, benchmark)}"


def evaluate_variant(
    label: str,
    model,
    benchmarks: BenchmarksParams,
    data_root: Path,
    work_dir: Path,
    rank: int,
    world: int,
    to_judge: list[tuple],
) -> dict[str, Any]:
    """Answer every benchmark with one adapter; rank 0 returns scores (other ranks an empty dict). A judged
    benchmark is scored later (judge_pending): on rank 0 its (label, spec, dataset, predictions) go to to_judge."""
    import torch.distributed as dist

    from satori.evaluation.vlmeval_compat import build_vlmeval_dataset, vlmeval_api

    api = vlmeval_api()
    model_name = vlmeval_model_name(label)
    out_dir = work_dir / label
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for spec in benchmarks.items:
        dataset = build_vlmeval_dataset(spec.name, data_root, spec.scored_as)
        if rank == 0:
            print(f"[satori] {label} on {spec.name}: {len(dataset)} questions, {world} process(es)", flush=True)
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
        for record in records:  # the decoded images' names, not the scratch folder they lie in
            record["images"] = [Path(p).name for p in record["images"]]
        with (out_dir / completions_name(label, spec.name)).open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps({**record, "index": int(record["index"])}) + "\n")
        pred_file = api.get_pred_file_path(str(out_dir), model_name, spec.name)
        if spec.judged:
            to_judge.append((label, spec, dataset, pred_file))
            accuracy, categories = None, {}
        else:
            accuracy, categories = offline_scores(spec, dataset, pred_file)
        results[spec.name] = {
            "accuracy": accuracy,
            "answer_shares": answer_shares(records),
            "categories": categories,
            "answer_tag_rate": sum(r["answer"] is not None for r in records) / max(1, len(records)),
            "mean_completion_tokens": sum(r["completion_tokens"] for r in records) / max(1, len(records)),
            "predictions": len(records),
        }
    return results


def judge_pending(scores: dict[str, dict], to_judge: list[tuple], judge: JudgeParams) -> None:
    """The judged benchmarks' numbers into scores, by VLMEvalKit's judged evaluate() and evaluate.judge: each with
    its parts, its judge-free score, the agreement and the judge (satori.evaluation.judging.judged_scores)."""
    from satori.evaluation.judging import judged_scores

    for label, spec, dataset, pred_file in to_judge:
        print(f"[satori] {label} on {spec.name}: asking the judge {judge.model} at {judge.url_host}", flush=True)
        accuracy, parts, judged = judged_scores(dataset, pred_file, spec.scored_as, judge)
        scores[label][spec.name].update(judged, accuracy=accuracy, categories=parts)


def offline_scores(spec, dataset, pred_file: str) -> tuple[float, dict[str, float]]:
    """A benchmark's number (a fraction) and its parts by VLMEvalKit's own evaluate() without a judge (each rule in
    words: satori.evaluation.scoring.benchmark_rule); a free-form benchmark of the project's own (CustomVQADataset)
    has none: VLMEvalKit's VQA rule."""
    if spec.free_form:
        acc = free_form_accuracy(pred_file)
    elif spec.scored_as == "OlympiadBench":  # no olympiad_use_api_judger: the rule-based MathJudger
        from satori.evaluation.vlmeval_compat import use_latex2sympy_in_mathjudger

        use_latex2sympy_in_mathjudger()
        row = {str(k): float(v) / 100 for k, v in dataset.evaluate(pred_file).iloc[0].items()}  # percentages
        return row.pop("AVG"), row
    elif spec.scored_as == "WeMath":
        from satori.evaluation.vlmeval_compat import wemath_scoring

        with wemath_scoring():
            return wemath_scores(dataset.evaluate(pred_file, model="exact_matching"))
    else:
        acc = dataset.evaluate(pred_file, model="exact_matching", nproc=1)
    return overall_accuracy(acc), category_accuracies(acc)


def wemath_scores(table) -> tuple[float, dict[str, float]]:
    """WeMath's table (percentages as text, `25.00%` or `25.00% (3)`): its strict score, and every other number."""
    row = {str(k): re.match(r"\s*(-?\d+(?:\.\d+)?)%", str(v)) for k, v in table.iloc[0].items()}
    numbers = {k: float(m[1]) / 100 for k, m in row.items() if m}
    return numbers.pop("Score (Strict)"), numbers


def free_form_accuracy(pred_file: str):
    """A free-form prediction table scored by VLMEvalKit's VQA 'accuracy' rule (satori.evaluation.scoring.FREE_FORM_RULE): an
    acc table as VLMEvalKit's MCQ scoring returns one (one row: Overall and each category, fractions), also
    written beside the predictions as <pred>_acc.csv."""
    import pandas as pd

    from satori.evaluation.vlmeval_compat import vlmeval_api

    api = vlmeval_api()
    data = api.load(pred_file)
    hit = [
        max(api.vqa_process_line({"answer": str(answer), "prediction": str(prediction)}, method="accuracy")["match"])
        for answer, prediction in zip(data["answer"], data["prediction"])
    ]
    data["hit"] = hit
    row = {"Overall": float(data["hit"].mean())}
    if "category" in data:
        row.update({str(k): float(v) for k, v in data.groupby("category")["hit"].mean().items()})
    acc = pd.DataFrame([row])
    acc.to_csv(Path(pred_file).with_name(Path(pred_file).stem + "_acc.csv"), index=False)
    return acc


def answer_shares(records: list[dict]) -> dict[str, float]:
    """Share of the answers that are each option letter, any other text, or none (no <answer> block): a model
    that answers one letter to most questions shows here, whatever its accuracy."""
    counts = Counter(
        "none" if r["answer"] is None else r["answer"] if re.fullmatch(r"[A-Z]", r["answer"]) else "other"
        for r in records
    )
    return {key: counts[key] / len(records) for key in sorted(counts)} if records else {}


def run_inference(spec_file: Path) -> None:
    """Every variant of one model on every benchmark in this process (one rank of many under torchrun).

    spec_file (JSON): model, variants {label: append instruction}, benchmarks folder, prompt file,
    work folder; the profile's params come from params.yaml as in the stage.
    """
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    _, profile = load_profile()
    params = profile.evaluate
    work_dir = Path(spec["work"])
    rank, world, device = distributed_context()
    data_root = stage_data_root(Path(spec["benchmarks"]), work_dir)
    os.environ.setdefault("PRED_FORMAT", "tsv")  # readable prediction files (VLMEvalKit's default is xlsx)
    from satori.evaluation.vlm_adapter import SatoriVLM

    # One adapter for every variant: the model is loaded once.
    model = SatoriVLM(
        Path(spec["model"]),
        system_prompt=system_prompt(Path(spec["prompt"])),
        append_instruction=True,
        min_pixels=params.min_pixels,
        max_pixels=params.max_pixels,
        max_new_tokens=params.max_new_tokens,
        batch_size=params.batch_size,
        answer_extraction=params.answer_extraction,
        device=device if params.device == "auto" else params.device,
    )
    scores, to_judge = {}, []
    for label, instruction in spec["variants"].items():
        model.generator.append_instruction = instruction  # the variant: with or without the instruction
        scores[label] = evaluate_variant(label, model, profile.benchmarks, data_root, work_dir, rank, world, to_judge)
    if world > 1:
        import torch.distributed as dist

        # Every rank waits for rank 0's scoring, then the group is torn down: a rank that exits while
        # gloo's threads still run aborts ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        # The judge is asked once every rank has answered and the group is gone: a judge takes as long as its
        # endpoint needs, and ranks waiting in a collective meanwhile would time out (NCCL's default: 10 minutes).
        judge_pending(scores, to_judge, params.judge)
        write_json(work_dir / "results.json", scores)


def score_model(
    model: Path,
    variants: dict[str, bool],
    params: EvaluateParams,
    benchmarks: Path,
    prompt: Path,
    work_dir: Path,
    report_dir: Path,
    matching: dict[str, str],
) -> dict[str, dict]:
    """Score `model` under each variant (label -> append instruction) in one process or under torchrun.

    Returns {label: {benchmark: {accuracy, categories, answer_tag_rate, ...}}}; VLMEvalKit's
    prediction and accuracy tables and the raw completions are copied to report_dir, with
    scoring.json: how each label's numbers were made (scoring_rule) and, from `matching`
    (satori.evaluation.scoring.benchmark_rules), how each benchmark's answers were matched.
    """
    nproc = params.nproc_per_node
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    spec_file = work_dir / "spec.json"
    spec = {"model": str(model), "variants": variants, "benchmarks": str(benchmarks), "prompt": str(prompt)}
    write_json(spec_file, {**spec, "work": str(work_dir)})
    if nproc == 1:
        run_inference(spec_file)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        subprocess.run([*cmd, "-m", "satori.evaluation.run", str(spec_file)], check=True)
    scores = json.loads((work_dir / "results.json").read_text(encoding="utf-8"))
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    for label in variants:
        for produced in sorted((work_dir / label).iterdir()):
            # VLMEvalKit's tables, the judge's verdicts among them; not its .pkl caches of the judge's replies
            if produced.is_file() and produced.suffix in {".tsv", ".csv", ".jsonl"}:
                shutil.copy2(produced, report_dir / f"{label}_{produced.name}")  # see reported_completions
    rules = {label: scoring_rule(instructed, params.answer_extraction) for label, instructed in variants.items()}
    write_json(report_dir / "scoring.json", {"labels": rules, "benchmarks": matching})
    return scores


def summarize(scores: dict[str, dict], benchmarks: BenchmarksParams, paper: dict | None = None) -> dict[str, dict]:
    """{benchmark: {base, trained, delta, ..., categories: {category: {base, trained, delta}}, paper}}.

    scores: {label: {benchmark: result}} with labels base, trained and optionally base_no_instruction; paper: the
    paper's {benchmark: {base, trained}} (%) for this base model (satori.evaluation.scoring.PAPER_RESULTS), each
    benchmark's beside its row.
    """
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
        if spec.judged:  # beside the judge's number, a rule's, and how often the two agree (issue 32)
            for label, result in scores.items():
                row[f"{label}_judge_free"] = result[spec.name]["judge_free_accuracy"]
                row[f"{label}_judge_agreement"] = result[spec.name]["judge_agreement"]
                row[f"{label}_judge_failures"] = result[spec.name]["judge_failures"]
            row["judge"] = trained["judge"]
        for label, result in scores.items():
            row[f"{label}_answer_shares"] = result[spec.name]["answer_shares"]
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
        published = (paper or {}).get(spec.scored_as or spec.name)  # a stand-in: the row of the benchmark it stands for
        if published:
            row["paper"] = published
        metrics[spec.name] = row
    return metrics


if __name__ == "__main__":  # a torch.distributed.run worker: python -m satori.evaluation.run SPEC
    run_inference(Path(sys.argv[1]))
