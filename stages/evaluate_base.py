"""Stage: score the base model on every benchmark (with and without the SATORI instruction).

    python -m stages.evaluate_base --model models/base --benchmarks data/benchmarks --prompt prompt.txt \
        --work .work/evaluate_base --out reports/evaluate_base --metrics reports/evaluate_base.json

Its own stage, so that a new training run re-scores only the trained model.
"""

from __future__ import annotations


from satori import tracking
from satori.cli import stage_paths
from satori.config import load_profile
from satori.evaluation import base_variants, score_model
from satori.files import write_json


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(
        __doc__,
        argv,
        model="",
        benchmarks="",
        prompt="",
        work="scratch for VLMEvalKit",
        out="",
        metrics="",
    )
    name, profile = load_profile()
    params = profile.evaluate
    logged = {"evaluate": params.model_dump(), "benchmarks": profile.benchmarks.model_dump()}
    with tracking.stage_run("evaluate_base", profile.mlflow_experiment, name, logged):
        variants = base_variants(params)
        tracking.say(f"scoring {args.model} ({', '.join(variants)}) on {len(profile.benchmarks.items)} benchmark(s)")
        scores = score_model(
            args.model, variants, args.benchmarks, args.prompt, args.work, args.out, params.nproc_per_node
        )
        write_json(args.metrics, scores)
        tracking.log_metrics(scores)
        tracking.log_artifact(args.out, "evaluate_base")


if __name__ == "__main__":
    main()
