"""Stage: raw rows into ms-swift's GRPO jsonl; every row ends in train, val or rejected (with a reason code).

    python -m stages.preprocess --raw data/raw --base-model models/base --prompt prompt.txt \
        --out data/processed --metrics reports/preprocess.json
"""

from __future__ import annotations


from satori import tracking
from satori.cli import stage_paths
from satori.config import load_profile, system_prompt
from satori.files import write_json
from satori.preprocessing import PreprocessError, preprocess


def main(argv: list[str] | None = None) -> None:
    args = stage_paths(
        __doc__,
        argv,
        raw="the fetched dataset folder",
        base_model="its tokenizer counts prompt tokens",
        prompt="",
        out="",
        metrics="",
    )
    name, profile = load_profile()
    logged = {"preprocess": profile.preprocess.model_dump(), "vision": profile.vision.model_dump()}
    with tracking.stage_run("preprocess", profile.mlflow_experiment, name, logged):
        tracking.say(f"checking every row under {args.raw}")
        try:
            report = preprocess(
                profile.preprocess,
                profile.vision,
                profile.train,
                args.raw,
                args.base_model,
                args.out,
                system_prompt(args.prompt),
                progress=lambda rows: tracking.say(f"{rows} rows read"),
            )
        except OSError as err:  # not about one row (unreadable folder, full disk): the old outputs stay
            raise PreprocessError(f"preprocess stopped, {args.out} left as it was: {err}") from None
        tracking.say(
            f"{report['kept']} of {report['rows_in']} rows kept, rejected by reason: {report['rejected_by_reason']}"
        )
        write_json(args.metrics, report)
        tracking.log_metrics(report)
        tracking.log_artifact(args.out / "rejected.jsonl")


if __name__ == "__main__":
    main()
