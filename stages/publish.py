"""Stage: the Hub folder (weights, processor, model card), checked to reload, and the push when configured.

    python -m stages.publish --model models/trained --evaluation reports/evaluate.json \
        --curves reports/train_rewards.png --gallery reports/gallery --prompt prompt.txt --out publish/hub \
        --metrics reports/publish.json
"""

from __future__ import annotations

import json

from satori import tracking
from satori.core.files import atomic_dir, write_json
from satori.publishing.card import build_folder, check_reloads, code_revision, push
from satori.stage import Stage, run_main
from satori.core.transient import report_transient


READS = ("*",)


@report_transient
def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        model="",
        evaluation="",
        curves="the train stage's reward curves (PNG)",
        gallery="the evaluate stage's pictures",
        prompt="the system prompt the model was trained with, published beside it",
        out="",
        metrics="",
    )
    args, name, profile = stage.args, stage.profile_name, stage.profile
    params = profile.publish
    with stage.run():
        evaluation = json.loads(args.evaluation.read_text(encoding="utf-8"))
        with atomic_dir(args.out) as out:
            build_folder(name, profile, args.model, evaluation, out, args.curves, args.gallery, args.prompt)
            # A folder that does not load, or answers otherwise than the trained model, is never renamed
            # into place, let alone pushed.
            check_reloads(out, args.model)
        tracking.say(f"{args.out} reloads and answers as {args.model} does")
        code = code_revision()
        report = {"pushed": False, "repo_id": params.repo_id, "url": None, "code": code}
        if params.push:
            report["url"] = push(args.out, params, commit_message=f"SATORI GRPO ({name}), code {code}")
            report["pushed"] = True
        # The Hub URL, or the folder as dvc.yaml names it (the run's commit and params are on the MLflow run): no
        # machine's absolute path in the registry.
        location = report["url"] or args.out.as_posix()
        # The version is MLflow's count, not part of the report: the same run elsewhere writes the same file.
        report["registered_model"] = (params.repo_id or f"satori-{name}").replace("/", "-")
        version = tracking.register_model(report["registered_model"], location, {"satori.code": code})
        tracking.say(f"registered model {report['registered_model']} version {version}: {location}")
        write_json(args.metrics, report)
        tracking.log_metrics({"pushed": int(report["pushed"])})
        tracking.log_artifact(args.out / "README.md", "publish")
        tracking.log_artifact(args.metrics, "publish")


if __name__ == "__main__":
    run_main(main)
