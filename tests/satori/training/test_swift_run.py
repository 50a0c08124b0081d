from __future__ import annotations

import json

from satori.training import swift_run


def test_a_resumed_run_keeps_one_record_per_step(tmp_path):
    records = [
        {"reward": 1.0, "global_step/max_steps": "1/3"},
        {"reward": 2.0, "global_step/max_steps": "2/3"},  # logged, then killed before checkpoint-2
        {"reward": 2.5, "global_step/max_steps": "2/3"},  # the resumed run's step 2
        {"reward": 3.0, "global_step/max_steps": "3/3"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"reward": 4.0, "glo'  # a line cut by SIGKILL
    (tmp_path / "logging.jsonl").write_text(text)
    assert [(swift_run.step_of(r), r["reward"]) for r in swift_run.read_log_history(tmp_path)] == [
        (1, 1.0),
        (2, 2.5),
        (3, 3.0),
    ]


def test_a_step_s_metrics_name_each_reward_by_its_label_and_drop_the_clock():
    from satori.training.swift_run import step_metrics

    record = {"global_step/max_steps": "3/8", "elapsed_time": "1m", "reward": 2.5, "loss": 0.1,
              "rewards/Format/mean": 1.0, "rewards/VQAAccuracy/std": 0.5, "rewards/Other/mean": 0.2}  # fmt: skip
    assert step_metrics(record) == {"reward": 2.5, "loss": 0.1, "rewards/format/mean": 1.0, "rewards/answer/std": 0.5,
                                    "rewards/Other/mean": 0.2}  # fmt: skip
