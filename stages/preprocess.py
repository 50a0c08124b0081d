"""Stage: raw rows into ms-swift's GRPO jsonl; every row ends in train, val or rejected (with a reason code).

    python -m stages.preprocess --raw data/raw --base-model models/base --prompt prompt.txt \
        --out data/processed --metrics reports/preprocess.json
"""

from __future__ import annotations


from satori import tracking
from satori.core.config import SPLIT_SIZE_KEYS, check_split_sizes
from satori.core.prompt import system_prompt
from satori.core.files import write_json
from satori.data.preprocessing import PreprocessError, preprocess
from satori.stage import Stage, run_main


# The token budget, and the batch sizes the splits must fill (config.SPLIT_SIZE_KEYS).
READS = ("preprocess", "vision", "train.max_length", "train.max_completion_length",
         *(f"train.{key}" for key in SPLIT_SIZE_KEYS))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        raw="the fetched dataset folder",
        base_model="its tokenizer counts prompt tokens",
        prompt="",
        out="",
        metrics="",
    )
    args = stage.args
    batch = {key: stage.read(f"train.{key}") for key in SPLIT_SIZE_KEYS}
    with stage.run():
        tracking.say(f"checking every row under {args.raw}")
        try:
            report = preprocess(
                stage.read("preprocess"),
                stage.read("vision"),
                stage.read("train.max_length") - stage.read("train.max_completion_length"),
                args.raw,
                args.base_model,
                args.out,
                system_prompt(args.prompt),
                progress=lambda rows: tracking.say(f"{rows} rows read"),
                check_splits=lambda train, val: check_split_sizes(train, val, **batch),
            )
        except OSError as err:  # not about one row (unreadable folder, full disk): the old outputs stay
            raise PreprocessError(f"preprocess stopped, {args.out} left as it was: {err}") from None
        tracking.say(
            f"{report['kept']} of {report['rows_in']} rows kept, rejected by reason: {report['rejected_by_reason']}"
        )
        for line in report["skipped_files"]:
            tracking.say(f"not read: {line}")
        write_json(args.metrics, report)
        tracking.log_metrics(report)
        tracking.log_artifact(args.out / "rejected.jsonl")


if __name__ == "__main__":
    run_main(main)
