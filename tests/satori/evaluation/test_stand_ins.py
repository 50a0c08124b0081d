"""OlympiadBench and WeMath, scored offline by VLMEvalKit's own evaluate(): stand-ins in their TSV layouts, known
predictions, and the numbers their rules give, worked out here from the rules' definitions (not by the code)."""

from __future__ import annotations

import pytest

from satori.core.config import OLYMPIAD_SOURCES, BenchmarkSpec
from satori.data import synthetic
from satori.evaluation.benchmark_files import BenchmarkFileError, validate_benchmark_tsv
from satori.evaluation.run import offline_scores
from satori.evaluation.scoring import OLYMPIAD_RULE, WEMATH_RULE, benchmark_rule
from satori.evaluation.vlmeval_compat import build_vlmeval_dataset


def write_predictions(dataset, folder, predictions: list[str]) -> str:
    """A prediction table as VLMEvalKit's inference leaves one: the benchmark's rows and a prediction column."""
    data = dataset.data.copy()
    data["prediction"] = predictions
    path = folder / f"model_{dataset.dataset_name}.tsv"
    data.drop(columns=["image"]).to_csv(path, sep="\t", index=False)
    return str(path)


def test_an_olympiadbench_stand_in_is_scored_by_mathjudger_as_the_share_right(tmp_path, monkeypatch):
    monkeypatch.setenv("PRED_FORMAT", "tsv")
    spec = BenchmarkSpec(name="Stand_Olympiad", kind="synthetic_olympiadbench", questions=20, seed=4)
    assert spec.scored_as == "OlympiadBench" and benchmark_rule(spec.name, spec.kind) == OLYMPIAD_RULE
    rows = synthetic.olympiad_rows(questions=20, seed=4)
    synthetic.write_benchmark_tsv(tmp_path / f"{spec.name}.tsv", rows)
    assert validate_benchmark_tsv(tmp_path / f"{spec.name}.tsv", scored_as="OlympiadBench") == 20
    dataset = build_vlmeval_dataset(spec.name, tmp_path, spec.scored_as)
    assert type(dataset).__mro__[1].__name__ == "OlympiadBench"  # its own class: its prompts, its evaluate()
    assert "So the final answer is" in dataset.build_prompt(dataset.data.iloc[0])[0]["value"]
    answers = [row["final_answer"][2:-2] for row in rows]
    # Right: the bare number, the number in OlympiadBench's closing sentence, the same number written 3.0.
    # Wrong: another number, an empty answer.
    predictions = []
    for i, answer in enumerate(answers):
        predictions.append([answer, f"So the final answer is \\boxed{{{answer}}}.", f"{answer}.0", str(int(answer) + 1),
                            " "][i % 5])  # fmt: skip
    right = sum(i % 5 < 3 for i in range(20))
    accuracy, parts = offline_scores(spec, dataset, write_predictions(dataset, tmp_path, predictions))
    assert accuracy == pytest.approx(right / 20)
    assert set(OLYMPIAD_SOURCES) <= set(parts)  # per source, as VLMEvalKit tabulates them
    for source in OLYMPIAD_SOURCES:
        hits = [i % 5 < 3 for i, row in enumerate(rows) if row["source"] == source]
        assert parts[source] == pytest.approx(sum(hits) / len(hits)), source


def test_a_wemath_stand_in_is_scored_by_its_strict_score_over_525_problems(tmp_path, monkeypatch):
    monkeypatch.setenv("PRED_FORMAT", "tsv")
    spec = BenchmarkSpec(name="Stand_WeMath", kind="synthetic_wemath", questions=4, seed=5)
    assert spec.scored_as == "WeMath" and benchmark_rule(spec.name, spec.kind) == WEMATH_RULE
    rows = synthetic.wemath_rows(problems=4, seed=5)
    assert [row["key"] for row in rows[:7]] == ["2steps_1", "2steps_2", "2steps_multi", "3steps_1", "3steps_2",
                                                "3steps_3", "3steps_multi"]  # fmt: skip
    synthetic.write_benchmark_tsv(tmp_path / f"{spec.name}.tsv", rows)
    assert validate_benchmark_tsv(tmp_path / f"{spec.name}.tsv", scored_as="WeMath") == len(rows)
    dataset = build_vlmeval_dataset(spec.name, tmp_path, spec.scored_as)
    # Problem 0 (two steps): both steps right, the composite wrong: inadequate generalisation.
    # Problem 1 (three steps): step 1 wrong, the composite right: rote memorisation (strict).
    # Problem 2 (two steps): step 2 wrong, the composite wrong: insufficient knowledge.
    # Problem 3 (three steps): all right: complete mastery.
    wrong = {(0, "2steps_multi"), (1, "3steps_1"), (2, "2steps_2"), (2, "2steps_multi")}
    other = lambda letter: "A" if letter != "A" else "B"  # noqa: E731
    predictions = []
    for row in rows:
        problem = int(row["ID"].split("-")[1])
        predictions.append(other(row["answer"]) if (problem, row["key"]) in wrong else f"Answer: {row['answer']}")
    accuracy, parts = offline_scores(spec, dataset, write_predictions(dataset, tmp_path, predictions))
    inadequate, rote, insufficient = 1, 1, 1
    assert accuracy == pytest.approx(round((525 - 0.5 * inadequate - rote - insufficient) / 525, 4))
    steps = [not ((int(r["ID"].split("-")[1]), r["key"]) in wrong) for r in rows if "multi" not in r["key"]]
    assert parts["One-step(S1)"] == pytest.approx(round(sum(steps) / len(steps), 4))


def test_a_broken_stand_in_is_named_before_any_model_loads(tmp_path):
    rows = synthetic.olympiad_rows(questions=10, seed=0)
    path = synthetic.write_benchmark_tsv(tmp_path / "O.tsv", [r for r in rows if r["source"] != "OE_TO_physics_zh_CEE"])
    with pytest.raises(BenchmarkFileError, match="OE_TO_physics_zh_CEE"):
        validate_benchmark_tsv(path, scored_as="OlympiadBench")
    path = synthetic.write_benchmark_tsv(tmp_path / "O.tsv", [{**rows[0], "final_answer": "3"}, *rows[1:]])
    with pytest.raises(BenchmarkFileError, match=r"row 0 \(index '0'\), column 'final_answer'"):
        validate_benchmark_tsv(path, scored_as="OlympiadBench")
    rows = synthetic.wemath_rows(problems=2, seed=0)
    path = synthetic.write_benchmark_tsv(tmp_path / "W.tsv", [r for r in rows if r["key"] != "3steps_2"])
    with pytest.raises(BenchmarkFileError, match="problem ID '3steps-1'"):
        validate_benchmark_tsv(path, scored_as="WeMath")
    with pytest.raises(ValueError, match="needs at least 10"):
        BenchmarkSpec(name="O", kind="synthetic_olympiadbench", questions=9)


def test_the_paper_profile_scores_olympiadbench_and_wemath_offline_and_the_judged_three_with_a_judge():
    from satori.core.config import check_scorable

    for name in ("MMBench_DEV_EN", "MMStar", "MMMU_DEV_VAL", "OlympiadBench", "WeMath"):
        check_scorable(name, "official")
        assert "no judge model" in benchmark_rule(name, "official")
    for name in ("MathVista_MINI", "MathVision", "MathVerse_MINI"):
        check_scorable(name, "official")
        assert "with the judge (evaluate.judge" in benchmark_rule(name, "official")
        assert "judge-free" in benchmark_rule(name, "official")


def test_the_paper_s_eight_stand_beside_ours_in_the_report_and_the_console():
    from satori.core.config import BenchmarksParams
    from satori.evaluation.run import summarize
    from satori.evaluation.scoring import PAPER_RESULTS
    from satori.reports.results import console_table

    paper = PAPER_RESULTS["Qwen/Qwen2.5-VL-3B-Instruct"]
    # The paper's table as issue 32 quotes it: SATORI-3B / Qwen2.5-VL-3B.
    quoted = {"MathVista_MINI": (67.4, 61.2), "MathVision": (26.1, 21.2), "MathVerse_MINI": (39.8, 47.6),
              "OlympiadBench": (13.5, 10.3), "WeMath": (30.1, 22.1), "MMStar": (56.7, 56.3),
              "MMBench_DEV_EN": (76.9, 60.8), "MMMU_DEV_VAL": (56.9, 51.2)}  # fmt: skip
    assert {name: (row["trained"], row["base"]) for name, row in paper.items()} == quoted
    result = {"accuracy": 0.5, "categories": {}, "answer_shares": {}, "answer_tag_rate": 1.0, "mean_completion_tokens": 9.0}
    benchmarks = BenchmarksParams(items=[{"name": "WeMath", "kind": "official"}, {"name": "Mine", "kind": "synthetic_mmstar",
                                                                                   "questions": 4}])  # fmt: skip
    scores = {label: {"WeMath": result, "Mine": result} for label in ("base", "trained")}
    report = summarize(scores, benchmarks, paper)
    assert report["WeMath"]["paper"] == {"base": 22.1, "trained": 30.1} and "paper" not in report["Mine"]
    lines = console_table(report).splitlines()
    assert lines[0].split()[:6] == ["benchmark", "base", "trained", "delta", "paper", "base"]
    assert lines[1].split()[:6] == ["WeMath", "50.0", "50.0", "+0.0", "22.1", "30.1"]
    assert lines[2].split()[:6] == ["Mine", "50.0", "50.0", "+0.0", "-", "-"]
    assert "paper" not in console_table(summarize(scores, benchmarks)).splitlines()[0]


def test_a_model_that_masters_no_wemath_problem_is_scored_not_crashed(tmp_path, monkeypatch):
    """VLMEvalKit's WeMath divides by the problems mastered or memorised: zero for a model with every composite
    question wrong (the rehearsal's untrained one). Its scores stand; those rates read 0.00%."""
    monkeypatch.setenv("PRED_FORMAT", "tsv")
    spec = BenchmarkSpec(name="Stand_WeMath_wrong", kind="synthetic_wemath", questions=4, seed=5)
    rows = synthetic.wemath_rows(problems=4, seed=5)
    synthetic.write_benchmark_tsv(tmp_path / f"{spec.name}.tsv", rows)
    dataset = build_vlmeval_dataset(spec.name, tmp_path, spec.scored_as)
    predictions = ["A" if row["answer"] != "A" else "B" for row in rows]  # every step and composite wrong
    accuracy, parts = offline_scores(spec, dataset, write_predictions(dataset, tmp_path, predictions))
    assert accuracy == pytest.approx(round((525 - 4) / 525, 4))  # four problems of insufficient knowledge
    assert parts["RoteMemorization (Strict)"] == 0.0 and parts["CompleteMastery (Strict)"] == 0.0
    assert parts["One-step(S1)"] == 0.0


def test_vlmeval_s_olympiadbench_helpers_leave_python_s_int_limit_as_it_was():
    """They raise it process-wide when imported; a process that imported them would then parse a row holding a
    4,301-digit integer that preprocessing rejects everywhere else."""
    import sys

    from satori.evaluation.vlmeval_compat import import_vlmeval, use_latex2sympy_in_mathjudger

    before = sys.get_int_max_str_digits()
    import_vlmeval()
    use_latex2sympy_in_mathjudger()
    assert sys.get_int_max_str_digits() == before


def test_the_gallery_notes_each_stand_in_s_correct_answer(tmp_path):
    """The evaluate stage's picture of the first answers reads each layout's answer column (OlympiadBench's is
    final_answer)."""
    import json

    from satori.rewards.gallery import evaluation_samples

    for rows, answer in ((synthetic.olympiad_rows(questions=10, seed=4), "final_answer"),
                         (synthetic.wemath_rows(problems=2, seed=5), "answer")):  # fmt: skip
        tsv = synthetic.write_benchmark_tsv(tmp_path / "B.tsv", rows)
        completions = tmp_path / "completions.jsonl"
        completions.write_text("".join(json.dumps({"index": r["index"], "completion": "<answer>3</answer>"}) + "\n"
                                       for r in rows[:3]))  # fmt: skip
        samples = evaluation_samples(completions, tsv, 3136, 50176)
        assert [s.note for s in samples] == [f"correct: {r[answer]}" for r in rows[:3]]
