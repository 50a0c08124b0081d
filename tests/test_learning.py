"""`make learn`: GRPO on the embedded default learns, and its control (rewards inverted) does not (minutes).

The learning run is the `learn` profile; the control is its variant with train.reward_control=invert,
which DVC runs from the same fetched data, base model and base evaluation (run cache). Expected values
are computed here from what the runs leave (the reward table, the prediction tables), not read from
the summaries the pipeline writes.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from satori.reward_registry import REWARD_CLASSES
from tests.conftest import accuracy_from_predictions, copy_checkout, pipeline_env

pytestmark = pytest.mark.slow

BENCHMARKS = ("SatoriCue_MMBench", "SatoriCue_MMStar")
REWARDS = ("Format", "BoundingBoxAccuracy", "VQAAccuracy", "CaptionAccuracy")  # ms-swift's names of the four
CONTROL = ["--profile", "learn", "--name", "learn_control", "--set", "train.reward_control=invert",
           "--set", "train.max_steps=20", "--set", "train.eval_steps=20", "--set", "train.save_steps=20"]  # as make learn


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`make learn` in a fresh copy of the checkout: the learn profile, then its control."""
    work = tmp_path_factory.mktemp("learn")
    repo = copy_checkout(work / "checkout")
    env = pipeline_env(work)
    results = {}
    for name, args in (("learn", ["--profile", "learn"]), ("learn_control", CONTROL)):
        done = subprocess.run(
            [sys.executable, "-m", "flows.pipeline", *args], cwd=repo, env=env, capture_output=True, text=True,
            timeout=1800,
        )  # fmt: skip
        (work / f"{name}.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
        start = done.stdout.rindex('{\n  "mlflow_run_id"')
        results[name], _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    summary = subprocess.run(
        [sys.executable, "-m", "satori.learning", ".runs/learn", ".runs/learn_control"],
        cwd=repo, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return repo, env, results, summary


def reward_history(folder: Path) -> dict[str, list[float]]:
    """Per column of the run's reward table, its values in step order."""
    with (folder / "reports/train_rewards.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    columns = {"reward": "reward", **{cls: name for name, cls in REWARD_CLASSES.items()}}
    return {name: [float(r[column]) for r in rows] for name, column in columns.items()}


def quarters(values: list[float]) -> tuple[list[float], list[float]]:
    q = len(values) // 4
    return values[:q], values[-q:]


def rise(values: list[float]) -> tuple[float, float]:
    """Last-quarter mean minus first-quarter mean, and the standard error of that difference."""
    first, last = quarters(values)
    se = math.sqrt(statistics.variance(first) / len(first) + statistics.variance(last) / len(last))
    return statistics.fmean(last) - statistics.fmean(first), se


def test_the_learning_run_raises_the_total_reward_and_the_answers(runs):
    repo, *_ = runs
    history = reward_history(repo / ".runs/learn")
    assert len(history["reward"]) == 40
    total, se = rise(history["reward"])
    assert total > 0.05 and total > se, f"total reward: last - first quarter {total:+.3f}, standard error {se:.3f}"
    answers, se = rise(history["VQAAccuracy"])
    # One standard error: 40 steps of 64 rollouts leave the in-training accuracy noisy (on one CPU it rose
    # +0.113 with a standard error of 0.072), and the benchmark test below is the strong evidence of learning.
    assert answers > se, f"answer accuracy: last - first quarter {answers:+.3f}, standard error {se:.3f}"
    # The format was learnt in the warm-up; it stays.
    assert min(statistics.fmean(q) for q in quarters(history["Format"])) > 0.9


def test_the_control_does_not_rise_and_parts_from_the_learning_run_only_through_the_rewards(runs):
    repo, *_ = runs
    learned = reward_history(repo / ".runs/learn")
    control = reward_history(repo / ".runs/learn_control")
    assert len(control["reward"]) == 20
    change, se = rise(control["reward"])
    assert change < -0.3, f"the control's total reward did not fall: {change:+.3f} (standard error {se:.3f})"
    for name in REWARDS:  # every true reward ends lower than it started
        assert statistics.fmean(quarters(control[name])[1]) < statistics.fmean(quarters(learned[name])[0]), name
    # Same seed, base model and data: the first step's rollouts are the same, with the same true rewards;
    # the inverted rewards then steer the control elsewhere.
    assert {name: values[0] for name, values in control.items()} == pytest.approx(
        {name: values[0] for name, values in learned.items()}
    )
    learned_samples = (repo / ".runs/learn/reports/train_samples.md").read_text().splitlines()
    control_samples = (repo / ".runs/learn_control/reports/train_samples.md").read_text().splitlines()
    first_column = lambda lines: [line.split(" | ")[1] for line in lines[2:]]  # noqa: E731
    assert first_column(learned_samples) == first_column(control_samples)
    assert learned_samples[0] == "| # | step 1 | step 40 |" and control_samples[0] == "| # | step 1 | step 20 |"


def test_the_trained_model_beats_the_base_on_both_benchmarks_and_the_control_does_not(runs):
    repo, *_ = runs
    for name in BENCHMARKS:
        folder = repo / ".runs/learn"
        base = accuracy_from_predictions(folder / "reports/evaluate_base", "base", name)
        trained = accuracy_from_predictions(folder / "reports/evaluate", "trained", name)
        control = accuracy_from_predictions(repo / ".runs/learn_control/reports/evaluate", "trained", name)
        assert trained >= base + 0.1, f"{name}: base {base:.3f}, trained {trained:.3f}"
        assert control < trained, f"{name}: control {control:.3f}, trained {trained:.3f}"
        # The pipeline's own table agrees with the predictions.
        reported = json.loads((folder / "reports/evaluate.json").read_text())[name]
        assert (reported["base"], reported["trained"]) == pytest.approx((base, trained))


def test_the_control_reused_the_learning_runs_data_base_model_and_base_scores(runs):
    _, _, results, _ = runs
    ran = results["learn_control"]["ran"]
    assert ran == {"watch_mirrors": True, "fetch_dataset": False, "fetch_base_model": False,
                   "fetch_benchmarks": False,
                   "preprocess": False, "train": True, "evaluate_base": False, "evaluate": True,
                   "publish": True}  # fmt: skip
    assert all(results["learn"]["ran"].values())


def test_mlflow_has_the_reward_curves_and_the_base_against_trained_table(runs):
    import mlflow

    repo, env, results, _ = runs
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(results["learn"]["mlflow_run_id"])
    train_run = next(
        r for r in client.search_runs([parent.info.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.data.tags.get("satori.stage") == "train"
    )  # fmt: skip
    curve = [m.value for m in sorted(client.get_metric_history(train_run.info.run_id, "reward"), key=lambda m: m.step)]
    assert curve == pytest.approx(reward_history(repo / ".runs/learn")["reward"])
    evaluation = json.loads((repo / ".runs/learn/reports/evaluate.json").read_text())
    for name in BENCHMARKS:
        assert parent.data.metrics[f"{name}.base"] == pytest.approx(evaluation[name]["base"])
        assert parent.data.metrics[f"{name}.trained"] == pytest.approx(evaluation[name]["trained"])
    control = client.get_run(results["learn_control"]["mlflow_run_id"])
    assert control.data.tags["satori.variant"] == " ".join(CONTROL[5::2])
    assert control.data.params["train.reward_control"] == "invert"
    artifacts = [a.path for a in client.list_artifacts(train_run.info.run_id, "train")]
    assert "train/train_samples.md" in artifacts


def test_the_summary_prints_both_runs_quarters_and_accuracies(runs):
    repo, _, _, summary = runs
    history = reward_history(repo / ".runs/learn")
    first, last = quarters(history["reward"])
    assert f"{statistics.fmean(first):.3f}" in summary and f"{statistics.fmean(last):.3f}" in summary
    assert summary.count("SatoriCue_MMStar: base") == 2
