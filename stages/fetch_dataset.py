"""Stage: fetch the training dataset into --out (synthetic rows in the tiny profile, VQA-Verify from the Hub otherwise).

python -m stages.fetch_dataset --mirror-manifest data/mirrors/dataset.json --out data/raw --metrics reports/fetch_dataset.json
"""

from __future__ import annotations


from satori import tracking
from satori.data import synthetic
from satori.core.files import atomic_dir, file_manifest, write_json, write_source
from satori.core.hub import hub_snapshot
from satori.stage import Stage, run_main
from satori.core.transient import report_transient


READS = ("download",)


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
    args, params = stage.args, stage.read("download")
    with stage.run():
        # A Hub download resumes from the partial folder an interrupted attempt left.
        key = f"{params.hub.repo_id}@{params.hub.revision}" if params.hub else ""
        with atomic_dir(args.out, resume=params.source == "hub", resume_key=key) as out:
            if params.source == "synthetic":
                data = params.synthetic
                tracking.say(f"writing {data.rows} synthetic VQA-Verify-shaped rows ({data.task} task)")
                synthetic.write_vqa_dataset(out, rows=data.rows, seed=data.seed, task=data.task)
                write_source(out, repo_id="synthetic", revision=f"seed-{params.synthetic.seed}", commit=None)
            else:
                hub = params.hub
                source = hub_snapshot(
                    hub.repo_id, hub.revision, "dataset", out, hub.local_mirror, "download.hub.revision"
                )
                write_source(out, **source)
        files = file_manifest(args.out)
        metrics = {"files": len(files), "bytes": sum(files.values())}
        write_json(args.metrics, metrics)
        tracking.log_metrics(metrics)


if __name__ == "__main__":
    run_main(main)
