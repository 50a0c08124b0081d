"""Stage: fetch the base model into --out (the tiny Qwen2.5-VL built from a seed, or a Hub snapshot).

python -m stages.fetch_base_model --mirror-manifest data/mirrors/base_model.json --prompt prompt.txt --out models/base
"""

from __future__ import annotations


from satori import tracking
from satori.core.prompt import system_prompt
from satori.core.files import atomic_dir, write_source
from satori.core.hub import hub_snapshot
from satori.stage import Stage, run_main
from satori.data.tiny_model import build_embedded_base_model
from satori.core.transient import report_transient


READS = ("base_model", "vision")


@report_transient
def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        mirror_manifest="what its mirror folder holds (stages.watch_mirrors); not read: a DVC dep, so an edit re-runs the stage",
        prompt="the system prompt the tiny model is warmed up with",
        out="",
    )
    args, params, vision = stage.args, stage.read("base_model"), stage.read("vision")
    with stage.run():
        key = f"{params.repo_id}@{params.revision}"
        with atomic_dir(args.out, resume=params.source == "hub", resume_key=key) as out:
            if params.source == "tiny":
                tiny = params.tiny
                tracking.say(f"building the tiny Qwen2.5-VL (seed {tiny.seed}, {tiny.warmup_steps} warm-up steps)")
                losses = build_embedded_base_model(out, tiny, vision, system_prompt(args.prompt), progress=tracking.say)
                tracking.log_metrics({"tiny_model.warmup_final_loss": losses[-1]} if losses else {})
                write_source(out, repo_id="tiny-qwen2.5-vl", revision=f"seed-{tiny.seed}", commit=None)
            else:
                source = hub_snapshot(
                    params.repo_id, params.revision, "model", out, params.local_mirror, "base_model.revision"
                )
                write_source(out, **source)


if __name__ == "__main__":
    run_main(main)
