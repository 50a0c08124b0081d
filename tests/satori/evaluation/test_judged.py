"""MathVista, MATH-Vision and MathVerse, scored by VLMEvalKit's own judged evaluate() through an OpenAI-protocol judge
on 127.0.0.1 (the stand-in judge): stand-ins in their TSV layouts, known predictions, and the verdicts worked out here
by hand from each benchmark's rules (not by the code); the judge's key is a canary that must appear nowhere."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest

from satori.core.config import BenchmarkSpec, JudgeParams, load_profile
from satori.core.errors import ParamsError
from satori.data import synthetic
from satori.data.synthetic import OPTION_LETTERS
from satori.evaluation.benchmark_files import BenchmarkFileError, validate_benchmark_tsv
from satori.evaluation.judging import JudgeUnavailable, check_judge_reachable, judge_free_correct, judged_scores
from satori.evaluation.stand_in_judge import KEY_ENV, URL_ENV, serving
from satori.evaluation.vlmeval_compat import build_vlmeval_dataset, import_vlmeval
from tests.satori.evaluation.test_stand_ins import write_predictions

CANARY = "sk-canary-7f3a9e1c2b4d"
STAND_IN_JUDGE = {"model": "stand-in-judge", "base_url": f"${URL_ENV}", "key_env": KEY_ENV, "nproc": 2}

# Eight questions, even ones multiple-choice (a colour), odd ones free-form (how many shapes). Per question, the
# prediction, and whether the judged rule and the judge-free rule count it right, per benchmark (MathVista's
# integer answers are compared as int(): `2.0` extracted is no integer; MATH-Vision and MathVerse compare numbers).
#   0 the letter: right everywhere          4 "(L) option": the judge reads L, the rule wants a bare letter
#   2 "The answer is W", W wrong: wrong     6 nothing: wrong
#   1 the count: right everywhere           5 "N.0": equal as numbers, not as MathVista's int()
#   3 "There are N shapes": right (the judge extracts N, math-verify reads N)   7 N + 1: wrong
JUDGED_RIGHT = {"MathVista_MINI": {0, 1, 3, 4}, "MathVision": {0, 1, 3, 4, 5}, "MathVerse_MINI": {0, 1, 3, 4, 5}}
RULE_RIGHT = {0, 1, 3, 5}
KINDS = {"MathVista_MINI": "synthetic_mathvista", "MathVision": "synthetic_mathvision", "MathVerse_MINI": "synthetic_mathverse"}
MODULES = {"MathVista_MINI": "mathvista.py", "MathVision": "mathv.py", "MathVerse_MINI": "mathverse.py"}


def predictions_for(rows: list[dict], official: str) -> list[str]:
    predictions = []
    for i, row in enumerate(rows):
        if i % 2 == 0:  # the letter of the right option (its text as the question shows it), and a wrong one
            letter = row["answer_option"] if official == "MathVista_MINI" else row["answer"]
            option = re.search(rf"^\({letter}\) (.+)$", row["question"], re.MULTILINE)[1]
            wrong = next(x for x in OPTION_LETTERS if x != letter)
            predictions.append({0: letter, 2: f"The answer is {wrong}", 4: f"({letter}) {option}", 6: ""}[i % 8])
        else:
            count = int(row["answer"])
            predictions.append({1: str(count), 3: f"There are {count} shapes", 5: f"{count}.0", 7: str(count + 1)}[i % 8])
    return predictions


@pytest.mark.parametrize("official", list(KINDS))
def test_a_judged_stand_in_is_scored_by_its_own_evaluate_through_the_judge(official, tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("PRED_FORMAT", "tsv")
    monkeypatch.setenv(KEY_ENV, CANARY)
    caplog.set_level(logging.DEBUG)
    spec = BenchmarkSpec(name=f"Stand_{official}", kind=KINDS[official], questions=8, seed=6)
    assert spec.judged and spec.scored_as == official
    rows = synthetic.stand_in_rows(spec.kind, questions=8, seed=6)
    synthetic.write_benchmark_tsv(tmp_path / f"{spec.name}.tsv", rows)
    assert validate_benchmark_tsv(tmp_path / f"{spec.name}.tsv", scored_as=official) == 8
    dataset = build_vlmeval_dataset(spec.name, tmp_path, official)
    assert official.startswith(type(dataset).__mro__[1].__name__)  # its own class: its prompts, its evaluate()
    pred_file = write_predictions(dataset, tmp_path, predictions_for(rows, official))
    with serving(CANARY) as server:
        monkeypatch.setenv(URL_ENV, server.base_url)
        judge = JudgeParams(**STAND_IN_JUDGE)
        accuracy, parts, judged = judged_scores(dataset, pred_file, official, judge)
    right = JUDGED_RIGHT[official]
    assert accuracy == pytest.approx(len(right) / 8)
    assert judged["judge_free_accuracy"] == pytest.approx(len(RULE_RIGHT) / 8)
    assert judged["judge_agreement"] == pytest.approx(sum((i in right) == (i in RULE_RIGHT) for i in range(8)) / 8)
    assert judged["judge_failures"] == 0
    assert server.requests > 0 and server.refused == 0  # the judge was asked, with the key
    # Its table's parts: MathVista by task and skill, MATH-Vision by subject, MathVerse by problem version.
    column = {"MathVista_MINI": "task", "MathVision": "category", "MathVerse_MINI": "problem_version"}[official]
    for part in {row[column] for row in rows}:
        members = [i for i, row in enumerate(rows) if row[column] == part]
        assert parts[part] == pytest.approx(sum(i in right for i in members) / len(members)), part
    # What decides the number besides the model: the judge's model and host, and VLMEvalKit's prompt module.
    module = Path(import_vlmeval().__file__).parent / "dataset" / "utils" / MODULES[official]
    assert judged["judge"] == {
        "model": "stand-in-judge",
        "host": "127.0.0.1",
        "prompt": f"ms-vlmeval 0.0.19, vlmeval/dataset/utils/{MODULES[official]} sha256 "
        f"{hashlib.sha256(module.read_bytes()).hexdigest()[:12]}",
    }
    # VLMEvalKit logged its judge's settings (key included, at INFO), and the canary is in no log and no file.
    logged = capfd.readouterr()
    text = logged.out + logged.err + caplog.text
    assert "Using API Base" in text and CANARY not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_the_judge_free_rule_reads_letters_exactly_and_math_as_math():
    assert judge_free_correct("B", "B") and judge_free_correct("(B)", "B") and judge_free_correct("B.", "B")
    assert not judge_free_correct("The answer is B", "B") and not judge_free_correct("C", "B")
    assert judge_free_correct("0.5", "\\frac{1}{2}") and judge_free_correct("\\frac{4}{2}", "2")
    assert judge_free_correct("Yellow", "yellow") and not judge_free_correct("", "2")
    assert not judge_free_correct("3", "2") and not judge_free_correct("two", "2")


def test_a_judge_without_its_key_or_refusing_it_fails_before_any_model_naming_the_variable(monkeypatch):
    specs = [BenchmarkSpec(name="J", kind="synthetic_mathvista", questions=2)]
    with serving(CANARY) as server:
        monkeypatch.setenv(URL_ENV, server.base_url)
        judge = JudgeParams(**STAND_IN_JUDGE)
        monkeypatch.delenv(KEY_ENV, raising=False)
        with pytest.raises(JudgeUnavailable, match=f"the environment variable {KEY_ENV} holds no key"):
            check_judge_reachable(judge, specs)
        monkeypatch.setenv(KEY_ENV, "sk-wrong")
        with pytest.raises(JudgeUnavailable, match=f"127.0.0.1 refused a chat request: HTTP 401 .*{KEY_ENV}"):
            check_judge_reachable(judge, specs)
        monkeypatch.setenv(KEY_ENV, CANARY)
        check_judge_reachable(judge, specs)
        assert server.refused == 1
    check_judge_reachable(None, [BenchmarkSpec(name="M", kind="synthetic_mmstar", questions=2)])  # none judged
    with pytest.raises(JudgeUnavailable, match="did not answer a chat request"):  # the server is gone
        check_judge_reachable(judge, specs)


def test_a_profile_with_a_judged_benchmark_needs_a_judge_and_the_judge_s_url_is_checked(tmp_path):
    from tests.satori.core.test_config import write_params

    path = write_params(tmp_path, lambda raw: raw["paper"]["evaluate"].pop("judge"))
    with pytest.raises(ParamsError, match=r"MathVista_MINI, MathVision, MathVerse_MINI VLMEvalKit scores with an LLM "
                                          r"judge: set evaluate.judge .* OPENAI_API_KEY"):  # fmt: skip
        load_profile(path, name="paper")
    bad = {"https://me:secret@judge.example/v1": "credentials", "ftp://judge.example/v1": "base_url",
           "https://judge.example/v1?key=1": "no query"}  # fmt: skip
    for url, says in bad.items():
        path = write_params(tmp_path, lambda raw: raw["paper"]["evaluate"]["judge"].update(base_url=url))
        with pytest.raises(ParamsError, match=rf"paper\.evaluate\.judge.*{says}"):
            load_profile(path, name="paper")
    for model in ("ernie-4.0", "gemini-2.5-pro-preview"):
        path = write_params(tmp_path, lambda raw: raw["paper"]["evaluate"]["judge"].update(model=model))
        with pytest.raises(ParamsError, match=r"not to base_url"):
            load_profile(path, name="paper")
    path = write_params(tmp_path, lambda raw: raw["paper"]["evaluate"]["judge"].update(key_env="my key"))
    with pytest.raises(ParamsError, match=r"paper\.evaluate\.judge\.key_env"):
        load_profile(path, name="paper")
    judge = JudgeParams(model="m", base_url="$SATORI_TEST_UNSET_JUDGE/v1")
    with pytest.raises(ParamsError, match="SATORI_TEST_UNSET_JUDGE not set"):
        judge.url  # noqa: B018 (the property checks)


def test_a_judged_stand_in_file_with_a_broken_row_is_refused_naming_row_and_column(tmp_path):
    rows = synthetic.mathvista_rows(questions=4, seed=0)
    rows[0] = {**rows[0], "answer_option": "D" if rows[0]["answer_option"] != "D" else "A"}
    path = synthetic.write_benchmark_tsv(tmp_path / "V.tsv", rows)
    with pytest.raises(BenchmarkFileError, match=r"row 0 \(index '0'\), column 'answer_option'"):
        validate_benchmark_tsv(path, scored_as="MathVista_MINI")
    rows = synthetic.mathvision_rows(questions=4, seed=0)
    rows[2] = {**rows[2], "choices": "not a list"}
    path = synthetic.write_benchmark_tsv(tmp_path / "W.tsv", rows)
    with pytest.raises(BenchmarkFileError, match=r"row 2 \(index '2'\), column 'choices'"):
        validate_benchmark_tsv(path, scored_as="MathVision")
    rows = synthetic.mathverse_rows(questions=4, seed=0)
    rows[3] = {**rows[3], "metadata": "{'subject': 'x'}"}
    path = synthetic.write_benchmark_tsv(tmp_path / "X.tsv", rows)
    with pytest.raises(BenchmarkFileError, match=r"row 3 \(index '3'\), column 'metadata'"):
        validate_benchmark_tsv(path, scored_as="MathVerse_MINI")
    path = synthetic.write_benchmark_tsv(tmp_path / "Y.tsv", [{k: v for k, v in r.items() if k != "problem_version"}
                                                              for r in synthetic.mathverse_rows(questions=2, seed=0)])  # fmt: skip
    with pytest.raises(BenchmarkFileError, match=r"column\(s\) \['problem_version'\] missing"):
        validate_benchmark_tsv(path, scored_as="MathVerse_MINI")
