"""Stage: score the trained model on every benchmark and compare it with the base model's scores.

    python -m stages.evaluate --model models/trained --base-scores reports/evaluate_base.json \
        --benchmarks data/benchmarks --prompt prompt.txt --work .work/evaluate \
        --out reports/evaluate --metrics reports/evaluate.json --out-gallery reports/gallery
"""

from __future__ import annotations

import json

from satori import tracking
from satori.evaluation.benchmark_files import benchmark_tsvs, validate_benchmark_folder
from satori.evaluation.judging import check_judge_reachable, judge_records
from satori.evaluation.run import reported_completions, score_model, summarize
from satori.evaluation.scoring import PAPER_RESULTS, benchmark_rules, scoring_rules
from satori.core.files import atomic_dir, read_source, write_json
from satori.rewards.gallery import draw, evaluation_samples, grid, save_png
from satori.stage import Stage, run_main


READS = ("evaluate", "benchmarks")


def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        model="",
        base_scores="the evaluate_base stage's metrics",
        benchmarks="",
        prompt="",
        work="scratch for VLMEvalKit",
        out="",
        metrics="",
        out_gallery="one picture of 16 answers per benchmark",
    )
    args, params, benchmarks = stage.args, stage.read("evaluate"), stage.read("benchmarks")
    # The benchmark files as fetch_benchmarks checked them, before a model is loaded or anything written.
    validate_benchmark_folder(args.benchmarks, benchmarks.items)
    # A judged benchmark's judge answers (its key set, its endpoint up) before a model is loaded.
    check_judge_reachable(params.judge, benchmarks.items)
    matching = benchmark_rules(benchmarks)
    judges = judge_records(params.judge, benchmarks.items)
    with stage.run(scoring=scoring_rules(params), benchmark_scoring=matching, judge=judges):
        tracking.log_datasets(benchmark_tsvs(args.benchmarks, benchmarks.items), "evaluation")
        base_scores = json.loads(args.base_scores.read_text(encoding="utf-8"))
        tracking.say(f"scoring {args.model} on {len(benchmarks.items)} benchmark(s)")
        variant = {"trained": params.satori_instruction}
        trained = score_model(args.model, variant, params, args.benchmarks, args.prompt, args.work, args.out, matching)
        # The paper's numbers beside ours where it reports this base model (the trained model's provenance names it).
        paper = PAPER_RESULTS.get(read_source(args.model).get("base_model", {}).get("repo_id"), {})
        metrics = summarize({**base_scores, **trained}, benchmarks, paper)
        write_json(args.metrics, metrics)
        tracking.log_metrics(metrics)
        tracking.log_artifact(args.metrics)
        tracking.log_artifact(args.out, "evaluate")
        with atomic_dir(args.out_gallery) as gallery:
            for spec in benchmarks.items:
                completions = reported_completions(args.out, "trained", spec.name)
                tsv = args.benchmarks / f"{spec.name}.tsv"
                samples = evaluation_samples(completions, tsv, params.min_pixels, params.max_pixels)
                save_png(grid([draw(s) for s in samples]), gallery / f"{spec.name}.png")
        tracking.log_artifact(args.out_gallery, "gallery")


if __name__ == "__main__":
    run_main(main)
