"""Stage: the benchmark TSVs into --out (synthetic MMBench/MMStar-shaped, free-form, OlympiadBench- or WeMath-shaped
ones, or the official files), each checked.

python -m stages.fetch_benchmarks --mirror-manifest data/mirrors/benchmarks.json --out data/benchmarks --metrics reports/fetch_benchmarks.json
"""

from __future__ import annotations


from satori import tracking
from satori.data import synthetic
from satori.evaluation.benchmark_files import fetch_official_tsv, validate_benchmark_tsv
from satori.core.files import atomic_dir, write_json
from satori.stage import Stage, run_main
from satori.core.transient import report_transient


READS = ("benchmarks",)


@report_transient
def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        mirror_manifest="what its mirror folder holds (stages.watch_mirrors); not read: a DVC dep, so an edit re-runs the stage",
        out="",
        metrics="",
    )
    args, params = stage.args, stage.read("benchmarks")
    with stage.run():
        rows: dict[str, int] = {}
        with atomic_dir(args.out) as out:
            for spec in params.items:
                tsv = out / f"{spec.name}.tsv"
                if spec.kind == "official":
                    fetch_official_tsv(spec.name, params.mirror, out)
                elif spec.free_form:
                    synthetic.write_benchmark_tsv(tsv, synthetic.free_form_rows(questions=spec.questions, seed=spec.seed))
                elif spec.scored_as:  # a stand-in in that benchmark's layout
                    synthetic.write_benchmark_tsv(tsv, synthetic.stand_in_rows(spec.kind, questions=spec.questions, seed=spec.seed))
                else:
                    bench_rows = synthetic.benchmark_rows(
                        questions=spec.questions,
                        seed=spec.seed,
                        circular=spec.kind == "synthetic_mmbench",
                        category_column="l2-category" if spec.kind == "synthetic_mmbench" else "l2_category",
                        task=spec.task,
                    )
                    synthetic.write_benchmark_tsv(tsv, bench_rows)
                # A broken file fails here, naming file, row and column, before any model is loaded.
                rows[spec.name] = validate_benchmark_tsv(tsv, free_form=spec.free_form, scored_as=spec.scored_as)
                tracking.say(f"{spec.name}: {rows[spec.name]} rows checked")
        write_json(args.metrics, {"rows": rows})
        tracking.log_metrics({"rows": rows})


if __name__ == "__main__":
    run_main(main)
