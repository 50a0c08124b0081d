"""The default run learns (`make run`), and its control (rewards inverted, `make learn`) does not.

The learning run is the session's default pipeline run (tests/conftest.py pipeline_run, the one the end-to-end
tests read); the control is its variant with train.reward_control=invert, which DVC runs from the same
fetched data, base model and base evaluation (run cache). Expected values are computed here from what the
runs leave (the reward table, the prediction tables), not read from the summaries the pipeline writes.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from satori.core.config import REPO_ROOT, load_profile
from satori.core.reward_registry import REWARD_LABELS
from tests.conftest import accuracy_from_predictions, predicted_letter, readme_commands, run_summary

pytestmark = pytest.mark.slow

REWARDS = tuple(REWARD_LABELS.values())  # format, boxes, answer, caption: the reward table's columns
CONTROL_STEPS = 40
CONTROL_COMMAND = readme_commands("variant")[0]  # the README's variant: the control, as `make learn` runs it
CONTROL = shlex.split(CONTROL_COMMAND)[3:]


def test_the_readme_s_control_is_make_learn_s():
    assert CONTROL == ["--name", "control", "--set", "train.reward_control=invert", "--set",
                       f"train.max_steps={CONTROL_STEPS}", "--set", f"train.eval_steps={CONTROL_STEPS}", "--set",
                       f"train.save_steps={CONTROL_STEPS}"]  # fmt: skip
    learn = (REPO_ROOT / "Makefile").read_text(encoding="utf-8").split("\nlearn:", 1)[1].split("\n\n", 1)[0]
    assert " ".join(CONTROL) in " ".join(learn.replace("\\\n", " ").split())


@pytest.fixture(scope="module")
def runs(pipeline_run):
    """The default run, then its control in the same checkout, typed as the README gives it (as `make learn` does
    after `make run`)."""
    repo, env, default, _ = pipeline_run
    done = subprocess.run(["bash", "-c", CONTROL_COMMAND], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=1800)  # fmt: skip
    (repo.parent / "control.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    control = run_summary(repo / ".runs" / "control")
    summary = subprocess.run([sys.executable, "-m", "satori.reports.learning", ".", ".runs/control"], cwd=repo, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    return repo, env, {"default": default, "control": control}, summary


def profile(repo: Path):
    return load_profile(repo / "params.yaml")[1]


def reward_history(folder: Path) -> dict[str, list[float]]:
    """Per column of the run's reward table, its values in step order."""
    with (folder / "reports/train_rewards.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    return {column: [float(r[column]) for r in rows] for column in ("reward", *REWARDS)}


def quarters(values: list[float]) -> tuple[list[float], list[float]]:
    q = len(values) // 4
    return values[:q], values[-q:]


def rise(values: list[float]) -> tuple[float, float]:
    """Last-quarter mean minus first-quarter mean, and the standard error of that difference."""
    first, last = quarters(values)
    se = math.sqrt(statistics.variance(first) / len(first) + statistics.variance(last) / len(last))
    return statistics.fmean(last) - statistics.fmean(first), se


def test_the_default_run_raises_the_total_reward_and_the_answers(runs):
    repo, *_ = runs
    history = reward_history(repo)
    assert len(history["reward"]) == profile(repo).train.max_steps
    total, se = rise(history["reward"])
    assert total > 0.1 and total > 2 * se, f"total reward: last - first quarter {total:+.3f}, standard error {se:.3f}"
    answers, se = rise(history["answer"])
    assert answers > 0.1 and answers > 2 * se, f"answers: last - first quarter {answers:+.3f}, standard error {se:.3f}"
    # The format was learnt in the warm-up; GRPO ends with it (it may dip for a few steps while the answers leave
    # the warm-up's `?`: README, Does it learn?).
    assert statistics.fmean(quarters(history["format"])[1]) > 0.85


def test_the_control_does_not_rise_and_parts_from_the_learning_run_only_through_the_rewards(runs):
    repo, *_ = runs
    learned = reward_history(repo)
    control = reward_history(repo / ".runs/control")
    assert len(control["reward"]) == CONTROL_STEPS
    change, se = rise(control["reward"])
    assert change < -0.3, f"the control's total reward did not fall: {change:+.3f} (standard error {se:.3f})"
    for name in REWARDS:  # every true reward ends lower than the learning run's ends
        assert statistics.fmean(quarters(control[name])[1]) < statistics.fmean(quarters(learned[name])[1]), name
    # Same seed, base model and data: the first step's rollouts are the same, with the same true rewards;
    # the inverted rewards then steer the control elsewhere.
    assert {name: values[0] for name, values in control.items()} == pytest.approx(
        {name: values[0] for name, values in learned.items()}
    )
    learned_samples = (repo / "reports/train_samples.md").read_text().splitlines()
    control_samples = (repo / ".runs/control/reports/train_samples.md").read_text().splitlines()
    first_column = lambda lines: [line.split(" | ")[1] for line in lines[2:]]  # noqa: E731
    assert first_column(learned_samples) == first_column(control_samples)
    steps = profile(repo).train.max_steps
    assert learned_samples[0] == f"| # | step 1 | step {steps} |"
    assert control_samples[0] == f"| # | step 1 | step {CONTROL_STEPS} |"


def test_the_trained_model_beats_the_base_by_15_points_on_both_benchmarks_and_the_control_does_not(runs):
    repo, *_ = runs
    for spec in profile(repo).benchmarks.items:
        base = accuracy_from_predictions(repo / "reports/evaluate_base", "base", spec.name)
        trained = accuracy_from_predictions(repo / "reports/evaluate", "trained", spec.name)
        control = accuracy_from_predictions(repo / ".runs/control/reports/evaluate", "trained", spec.name)
        assert trained >= base + 0.15, f"{spec.name}: base {base:.3f}, trained {trained:.3f}"
        assert control < trained, f"{spec.name}: control {control:.3f}, trained {trained:.3f}"
        # The pipeline's own table agrees with the predictions.
        reported = json.loads((repo / "reports/evaluate.json").read_text())[spec.name]
        assert (reported["base"], reported["trained"]) == pytest.approx((base, trained))


def test_neither_model_answers_one_letter_to_most_questions_and_the_shares_are_reported(runs):
    """The answer shares the pipeline reports are the prediction tables' own, and neither the base nor the
    trained model gives one letter to more than half of a benchmark's questions (a model that did would
    score the share of that letter among the answers, whatever it learnt)."""
    import pandas as pd

    repo, *_ = runs
    for spec in profile(repo).benchmarks.items:
        reported = json.loads((repo / "reports/evaluate.json").read_text())[spec.name]
        for label, folder in (("base", "evaluate_base"), ("trained", "evaluate")):
            table = pd.read_csv(repo / f"reports/{folder}/{label}_satori-{label}_{spec.name}.tsv", sep="\t")
            letters = [predicted_letter(row["prediction"], row) for _, row in table.iterrows()]
            answered = [letter for letter in letters if letter is not None]  # no letter: no answer, or `?`
            top = max(map(answered.count, set(answered)), default=0) / len(letters)
            assert top <= 0.5, f"{spec.name}: the {label} model gives one letter to {top:.0%} of the questions"
            shares = reported[f"{label}_answer_shares"]
            assert sum(shares.values()) == pytest.approx(1.0)
            assert {k: v for k, v in shares.items() if len(k) == 1} == {
                letter: pytest.approx(answered.count(letter) / len(letters)) for letter in set(answered)
            }
            if label == "trained":
                assert len(set(answered)) >= 3  # at least three different letters


def test_the_control_reused_the_default_run_s_data_base_model_and_base_scores(runs):
    _, _, results, _ = runs
    assert results["control"]["ran"] == {
        "watch_mirrors": True, "fetch_dataset": False, "fetch_base_model": False, "fetch_benchmarks": False,
        "preprocess": False, "train": True, "evaluate_base": False, "evaluate": True, "publish": True,
        "record_run": True,
    }  # fmt: skip


def test_mlflow_has_the_reward_curves_the_answer_shares_and_the_control_variant(runs):
    import mlflow

    repo, env, results, _ = runs
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(results["default"]["mlflow_run_id"])
    curve = [m.value for m in sorted(client.get_metric_history(parent.info.run_id, "train/reward"), key=lambda m: m.step)]
    assert curve == pytest.approx(reward_history(repo)["reward"])
    evaluation = json.loads((repo / "reports/evaluate.json").read_text())
    for name, row in evaluation.items():
        assert parent.data.metrics[f"{name}.trained"] == pytest.approx(row["trained"])
        for letter, share in row["trained_answer_shares"].items():
            assert parent.data.metrics[f"{name}.trained_answer_shares.{letter}"] == pytest.approx(share)
    control = client.get_run(results["control"]["mlflow_run_id"])
    assert control.data.tags["satori.variant"] == " ".join(CONTROL[3::2])
    assert control.data.tags["satori.launched_by"] == "flow variant" and parent.data.tags["satori.launched_by"] == "flow"
    assert control.data.params["train.reward_control"] == "invert"


def test_the_summary_prints_both_runs_quarters_and_accuracies(runs):
    repo, _, _, summary = runs
    first, last = quarters(reward_history(repo)["reward"])
    assert f"{statistics.fmean(first):.3f}" in summary and f"{statistics.fmean(last):.3f}" in summary
    for spec in profile(repo).benchmarks.items:
        assert summary.count(f"{spec.name}: base") == 2


def test_the_seed_sweep_at_smoke_size_reads_the_default_seed_s_run(runs):
    """benchmarks/learning_sweep.py --seeds 0: the default's own seed, so DVC restores every stage from the session's
    run; its row is the run's accuracies, recomputed here from the prediction tables, and the default clears its bar."""
    repo, env, *_ = runs
    done = subprocess.run([sys.executable, "-m", "benchmarks.learning_sweep", "--seeds", "0", "--checkout", str(repo)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for spec in profile(repo).benchmarks.items:
        base = accuracy_from_predictions(repo / "reports/evaluate_base", "base", spec.name)
        trained = accuracy_from_predictions(repo / "reports/evaluate", "trained", spec.name)
        (row,) = [line for line in done.stdout.splitlines() if line.startswith(f"| 0 | {spec.name} |")]
        cells = [cell.strip() for cell in row.split(" | ")]
        assert cells[2:5] == [f"{100 * base:.1f}", f"{100 * trained:.1f}", f"{100 * (trained - base):+.1f}"]
        assert row.endswith("| met |")
