from __future__ import annotations

import json

import yaml

from satori.core.config import REPO_ROOT


def test_the_summary_metrics_are_the_accuracies_and_the_reward_under_short_keys(use_profile, monkeypatch):
    import mlflow

    from stages import record_run

    folder = use_profile("tiny")
    (folder / "dvc.yaml").write_text((REPO_ROOT / "dvc.yaml").read_text())
    reports = folder / "reports"
    reports.mkdir()
    evaluation = {"B": {"base": 0.25, "trained": 0.75, "delta": 0.5, "categories": {"x": {"base": 0.0}}}}
    (reports / "evaluate.json").write_text(json.dumps(evaluation))
    (reports / "train.json").write_text(json.dumps({"steps": 2, "final_reward": 2.5, "mean_reward": 2.0}))
    (reports / "publish.json").write_text("{}")
    (reports / "curves.csv").write_text("step,reward\n1,1.5\n2,2.5\n")
    args = ["--evaluation", "reports/evaluate.json", "--train-summary", "reports/train.json", "--curves",
            "reports/curves.csv", "--published", "reports/publish.json", "--metrics", "reports/metrics.json"]  # fmt: skip
    record_run.main(args)  # by hand, no pipeline run: the metrics only
    written = json.loads((reports / "metrics.json").read_text())
    assert written == {"B": 0.75, "reward": {"final": 2.5, "mean": 2.0}}  # the trained accuracy; the base's is in evaluate.json
    experiment = yaml.safe_load((folder / "params.yaml").read_text())["tiny"]["mlflow_experiment"]
    assert mlflow.get_experiment_by_name(experiment) is None or not mlflow.search_runs(experiment_names=[experiment]).shape[0]
