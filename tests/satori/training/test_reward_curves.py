from __future__ import annotations

import json

from satori.training import reward_curves
from satori.training import swift_run


def test_reward_table_reads_ms_swift_logging(tmp_path):
    records = [
        {
            "loss": 0.1,
            "reward": 1.5,
            "rewards/Format/mean": 1.0,
            "rewards/VQAAccuracy/mean": 0.5,
            "global_step/max_steps": "1/2",
        },
        {"eval_loss": 0.2, "global_step/max_steps": "1/2"},
        {
            "loss": 0.1,
            "reward": 1.0,
            "rewards/Format/mean": 0.75,
            "rewards/VQAAccuracy/mean": 0.25,
            "global_step/max_steps": "2/2",
        },
    ]
    (tmp_path / "logging.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    history = swift_run.read_log_history(tmp_path)
    table = reward_curves.reward_table(history, ["external_format", "extern_vqa_acc"])
    unused = {"boxes": None, "caption": None}  # by the labels a user reads
    assert table == [
        {"step": 1, "reward": 1.5, "format": 1.0, "answer": 0.5, **unused},
        {"step": 2, "reward": 1.0, "format": 0.75, "answer": 0.25, **unused},
    ]
