from __future__ import annotations

import pandas as pd
import pytest

from satori.evaluation import run as evaluate
from satori.core.prompt import SATORI_INSTRUCTION
from satori.evaluation.vlm_adapter import SatoriVLM, extract_answer


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("<caption>c</caption><bbox>[[1,2,3,4]]</bbox><answer> B </answer>", "B"),
        ("<answer>A</answer> and <answer>C</answer>", "A"),
        ("<answer>multi\nline</answer>", "multi\nline"),
        ("The answer is B", None),
        ("<answer>unclosed", None),
    ],
)
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


def test_overall_accuracy_prefers_mmmu_s_validation_then_mmbench_s_dev_split():
    table = pd.DataFrame({"split": ["dev", "test"], "Overall": [0.25, 0.75]})
    assert evaluate.overall_accuracy(table) == 0.25
    assert evaluate.overall_accuracy(pd.DataFrame({"split": ["none"], "Overall": [0.5]})) == 0.5
    mmmu = pd.DataFrame({"split": ["dev", "validation"], "Overall": [0.4, 0.6], "Art": [0.1, 0.2]})
    assert evaluate.overall_accuracy(mmmu) == 0.6 and evaluate.category_accuracies(mmmu) == {"Art": 0.2}


def test_free_form_predictions_are_scored_by_case_insensitive_exact_match(tmp_path):
    preds = pd.DataFrame({
        "index": [0, 1, 2, 3, 4],
        "question": ["q"] * 5,
        "answer": ["red", "3", "blue", "2", "green"],
        "prediction": [" Red ", "3", "a blue one", " ", "GREEN"],  # " ": no <answer> block (official rule)
        "category": ["color", "count", "color", "count", "color"],
    })  # fmt: skip
    pred_file = tmp_path / "satori-trained_B.tsv"
    preds.to_csv(pred_file, sep="\t", index=False)
    acc = evaluate.free_form_accuracy(str(pred_file))
    assert evaluate.overall_accuracy(acc) == pytest.approx(3 / 5)
    assert evaluate.category_accuracies(acc) == pytest.approx({"color": 2 / 3, "count": 1 / 2})
    written = pd.read_csv(tmp_path / "satori-trained_B_acc.csv")
    assert written["Overall"].tolist() == pytest.approx([3 / 5])


def test_free_form_rows_validate_and_a_multiple_choice_layout_is_not_taken_for_one(tmp_path):
    from satori.data import synthetic
    from satori.evaluation.benchmark_files import BenchmarkFileError, validate_benchmark_tsv

    rows = synthetic.free_form_rows(questions=12, seed=3)
    assert {r["category"] for r in rows} == {"color", "count"} and all("A" not in r for r in rows)
    for row in rows:
        assert row["answer"] in synthetic.COLORS or row["answer"] in {"2", "3"}
    tsv = synthetic.write_benchmark_tsv(tmp_path / "V.tsv", rows)
    assert validate_benchmark_tsv(tsv, free_form=True) == 12
    with pytest.raises(BenchmarkFileError, match="fewer than two option columns"):
        validate_benchmark_tsv(tsv)
    rows[4]["answer"] = " "
    synthetic.write_benchmark_tsv(tsv, rows)
    with pytest.raises(BenchmarkFileError, match=r"V.tsv: row 4 \(index '4'\), column 'answer': empty"):
        validate_benchmark_tsv(tsv, free_form=True)
    mcq = synthetic.write_benchmark_tsv(tmp_path / "M.tsv", synthetic.benchmark_rows(questions=2, seed=0, circular=False, category_column="l2"))
    with pytest.raises(BenchmarkFileError, match=r"option columns \['A', 'B', 'C', 'D'\] in a free-form benchmark"):
        validate_benchmark_tsv(mcq, free_form=True)


def test_every_benchmark_names_its_matching_rule_and_an_unknown_one_fails_at_once(tmp_path):
    from satori.core.config import BenchmarksParams, load_profile
    from satori.core.errors import ParamsError
    from satori.evaluation.scoring import benchmark_rules
    from tests.satori.core.test_config import write_params

    rules = benchmark_rules(BenchmarksParams(items=[
        {"name": "MMBench_DEV_EN", "kind": "official"}, {"name": "MMStar", "kind": "official"},
        {"name": "MMMU_DEV_VAL", "kind": "official"}, {"name": "V", "kind": "synthetic_vqa", "questions": 4},
    ]))  # fmt: skip
    assert "circular" in rules["MMBench_DEV_EN"] and "circular" not in rules["MMStar"]
    assert all("no judge model" in rule for rule in rules.values())
    assert rules["V"].startswith("free-form")
    for name in ("OCRBench", "MathVerse_MINI_Vision_Only"):
        path = write_params(tmp_path, lambda raw: raw["tiny"]["benchmarks"]["items"].append({"name": name, "kind": "official"}))
        with pytest.raises(ParamsError, match=rf"tiny\.benchmarks\.items\.2: .*benchmark {name}: no scoring rule is known"):
            load_profile(path)


def test_the_benchmarks_scored_offline_are_the_ones_evaluation_has_a_rule_for():
    """The loader (satori.core.config) refuses what scoring (satori.evaluation.scoring) has no rule for: the lists agree."""
    from satori.core.config import JUDGED_BENCHMARKS, OFFLINE_BENCHMARKS
    from satori.evaluation.scoring import OFFICIAL_RULES

    assert sorted(OFFICIAL_RULES) == sorted(OFFLINE_BENCHMARKS + JUDGED_BENCHMARKS)


class ScriptedVLM(SatoriVLM):
    """The real adapter with generation replaced by a script, to test the prompt and the answer handling."""

    def __init__(self, model_dir, replies):
        super().__init__(
            model_dir, system_prompt="SYS", append_instruction=True, min_pixels=3136, max_pixels=50176, max_new_tokens=4
        )
        self.replies = list(replies)
        self.prompts = []

    def _generate_batch(self, messages):
        self.prompts += [self._chat(m)[0] for m in messages]
        return [(self.replies.pop(0), 7) for _ in messages]


def test_adapter_strips_tags_keeps_the_raw_completion_and_appends_the_instruction(tiny_model_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "q.png"
    Image.new("RGB", (64, 64), "red").save(image)
    raw = "<caption>a red square</caption><bbox>[[0,0,5,5]]</bbox><answer>B</answer>"
    vlm = ScriptedVLM(tiny_model_dir, [raw, "no tags, B", "no tags, B", "no tags, B"])
    message = [{"type": "image", "value": str(image)}, {"type": "text", "value": "Question: which?"}]
    assert vlm.generate(message, dataset="D") == "B"
    # Asked for <answer> and none given: a single space, as the official SATORI evaluation scored it.
    assert vlm.answer_extraction == "official" and vlm.generate(message, dataset="D") == " "
    vlm.answer_extraction = "fallback"  # evaluate.answer_extraction: fallback scores the whole text
    assert vlm.generate(message, dataset="D") == "no tags, B"
    vlm.answer_extraction = "official"
    vlm.generator.append_instruction = False  # the plain base model: scored on its whole text, as VLMEvalKit does
    assert vlm.generate(message, dataset="D") == "no tags, B"
    vlm.generator.append_instruction = True
    assert vlm.completions[0] == {
        "dataset": "D",
        "index": None,
        "images": [str(image)],
        "question": "Question: which?",
        "completion": raw,
        "completion_tokens": 7,
        "answer": "B",
    }
    assert vlm.completions[1]["answer"] is None
    prompt = vlm.prompts[0]
    assert prompt.startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>")
    assert prompt.endswith("Question: which?" + SATORI_INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n")


def test_planned_questions_are_answered_in_batches_identical_to_one_at_a_time(tiny_model_dir, tmp_path):
    from PIL import Image

    planned = []
    for i, (size, colour) in enumerate([((100, 60), "blue"), ((60, 100), "red"), ((224, 224), "green")] * 2):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size, colour).save(path)
        planned.append((i, [{"type": "image", "value": str(path)}, {"type": "text", "value": f"Colour {i}?"}]))
    answers = {}
    for batch_size in (1, 4):
        vlm = SatoriVLM(
            tiny_model_dir, system_prompt="SYS", append_instruction=True, min_pixels=3136, max_pixels=50176,
            max_new_tokens=8, batch_size=batch_size,
        )  # fmt: skip
        calls = []
        original = vlm._generate_batch
        vlm._generate_batch = lambda messages: calls.append(len(messages)) or original(messages)
        vlm.plan(planned)
        for _, message in planned:
            vlm.generate(message, dataset="D")
        answers[batch_size] = [(r["index"], r["completion"], r["completion_tokens"]) for r in vlm.completions]
        assert calls == ([1] * 6 if batch_size == 1 else [4, 2])
    assert answers[1] == answers[4]  # fp32 greedy decoding: left-padded batches change nothing
    assert [index for index, _, _ in answers[4]] == list(range(6))
    assert all(0 < tokens <= 8 for _, _, tokens in answers[4])


def test_adapter_generates_with_the_real_model(tiny_model_dir, tmp_path):
    from PIL import Image

    image = tmp_path / "q.png"
    Image.new("RGB", (100, 60), "blue").save(image)
    vlm = SatoriVLM(
        tiny_model_dir,
        system_prompt="SYS",
        append_instruction=False,
        min_pixels=3136,
        max_pixels=50176,
        max_new_tokens=6,
    )
    message = [{"type": "image", "value": str(image)}, {"type": "text", "value": "Colour?"}]
    first = vlm.generate(message, dataset="D")
    assert vlm.generate(message, dataset="D") == first  # greedy fp32 decoding is repeatable
    assert vlm.completions[0]["completion"] == first  # no <answer> tag from a random model: raw text returned


def test_only_the_compat_module_imports_vlmeval():
    """vlmeval must be imported after the transformers 5 shim; an import sorter would hoist a direct import."""
    import re

    from satori.core.config import REPO_ROOT

    sources = [*REPO_ROOT.glob("satori/*.py"), *REPO_ROOT.glob("stages/*.py"), *REPO_ROOT.glob("flows/*.py")]
    sources += [*REPO_ROOT.glob("benchmarks/*.py")]
    offenders = [
        p.name
        for p in sources
        if p.name != "vlmeval_compat.py" and re.search(r"^\s*(from|import) vlmeval\b", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_every_label_s_scoring_rule_names_its_prompt_and_answer_rule():
    from satori.core.config import EvaluateParams
    from satori.evaluation.scoring import scoring_rules

    params = EvaluateParams(batch_size=1, max_new_tokens=8, min_pixels=784, max_pixels=1568)
    rules = scoring_rules(params)
    assert list(rules) == ["base", "base_no_instruction", "trained"]
    assert rules["base"] == rules["trained"] == (
        "prompt.txt as system prompt, the SATORI instruction after each question; scored on the first <answer> "
        "block, no answer (' ') without one (the official SATORI rule)"
    )
    assert rules["base_no_instruction"].endswith("else the whole completion (as VLMEvalKit scores a plain model)")
    fallback = scoring_rules(params.model_copy(update={"answer_extraction": "fallback"}))
    assert fallback["trained"].endswith("else the whole completion (fallback, not the official rule)")
    plain = scoring_rules(params.model_copy(update={"satori_instruction": False}))
    assert list(plain) == ["base", "trained"] and "no instruction" in plain["trained"]


def test_answer_shares_count_letters_other_text_and_missing_answers():
    from satori.evaluation.run import answer_shares

    records = [{"answer": a} for a in ("A", "A", "B", None, "A. red", "C")]
    assert answer_shares(records) == {"A": 2 / 6, "B": 1 / 6, "C": 1 / 6, "none": 1 / 6, "other": 1 / 6}
    assert answer_shares([]) == {}
