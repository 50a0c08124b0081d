"""Stage: score the base model on every benchmark (with and without the SATORI instruction).

    python -m stages.evaluate_base --model models/base --benchmarks data/benchmarks --prompt prompt.txt \
        --work .work/evaluate_base --out reports/evaluate_base --metrics reports/evaluate_base.json

Its own stage, so that a new training run re-scores only the trained model.
"""

from __future__ import annotations


from satori import tracking
from satori.evaluation.benchmark_files import benchmark_tsvs, validate_benchmark_folder
from satori.evaluation.judging import check_judge_reachable, judge_records
from satori.evaluation.run import score_model
from satori.evaluation.scoring import base_variants, benchmark_rules, scoring_rules
from satori.core.files import write_json
from satori.stage import Stage, run_main


READS = ("evaluate", "benchmarks")


def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        model="",
        benchmarks="",
        prompt="",
        work="scratch for VLMEvalKit",
        out="",
        metrics="",
    )
    args, params, benchmarks = stage.args, stage.read("evaluate"), stage.read("benchmarks")
    # The benchmark files as fetch_benchmarks checked them, before a model is loaded or anything written.
    validate_benchmark_folder(args.benchmarks, benchmarks.items)
    # A judged benchmark's judge answers (its key set, its endpoint up) before a model is loaded.
    check_judge_reachable(params.judge, benchmarks.items)
    variants = base_variants(params)
    matching = benchmark_rules(benchmarks)
    judges = judge_records(params.judge, benchmarks.items)
    with stage.run(scoring=scoring_rules(params), benchmark_scoring=matching, judge=judges):
        tracking.log_datasets(benchmark_tsvs(args.benchmarks, benchmarks.items), "evaluation")
        tracking.say(f"scoring {args.model} ({', '.join(variants)}) on {len(benchmarks.items)} benchmark(s)")
        scores = score_model(args.model, variants, params, args.benchmarks, args.prompt, args.work, args.out, matching)
        write_json(args.metrics, scores)
        tracking.log_metrics(scores)
        tracking.log_artifact(args.out, "evaluate_base")


if __name__ == "__main__":
    run_main(main)
