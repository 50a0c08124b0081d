"""Stage: score the trained model on every benchmark and compare it with the base model's scores.

    python -m stages.evaluate --model models/trained --base-scores reports/evaluate_base.json \
        --benchmarks data/benchmarks --prompt prompt.txt --work .work/evaluate \
        --out reports/evaluate --metrics reports/evaluate.json --out-gallery reports/gallery
"""

from __future__ import annotations

import json

from satori import tracking
from satori.cli import stage_paths
from satori.config import load_profile
from satori.evaluation import score_model, summarize
from satori.files import atomic_dir, write_json
from satori.gallery import draw, evaluation_samples, grid, save_png


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(
        __doc__,
        argv,
        model="",
        base_scores="the evaluate_base stage's metrics",
        benchmarks="",
        prompt="",
        work="scratch for VLMEvalKit",
        out="",
        metrics="",
        out_gallery="one picture of 16 answers per benchmark",
    )
    name, profile = load_profile()
    params = profile.evaluate
    logged = {"evaluate": params.model_dump(), "benchmarks": profile.benchmarks.model_dump()}
    with tracking.stage_run("evaluate", profile.mlflow_experiment, name, logged):
        base_scores = json.loads(args.base_scores.read_text(encoding="utf-8"))
        tracking.say(f"scoring {args.model} on {len(profile.benchmarks.items)} benchmark(s)")
        trained = score_model(
            args.model,
            {"trained": params.satori_instruction},
            args.benchmarks,
            args.prompt,
            args.work,
            args.out,
            params.nproc_per_node,
        )
        metrics = summarize({**base_scores, **trained}, profile.benchmarks)
        write_json(args.metrics, metrics)
        tracking.log_metrics(metrics)
        tracking.log_artifact(args.metrics)
        tracking.log_artifact(args.out, "evaluate")
        with atomic_dir(args.out_gallery) as gallery:
            for spec in profile.benchmarks.items:
                completions = args.out / f"trained_satori-trained_{spec.name}_completions.jsonl"
                tsv = args.benchmarks / f"{spec.name}.tsv"
                samples = evaluation_samples(completions, tsv, params.min_pixels, params.max_pixels)
                save_png(grid([draw(s) for s in samples]), gallery / f"{spec.name}.png")
        tracking.log_artifact(args.out_gallery, "gallery")


if __name__ == "__main__":
    main()
