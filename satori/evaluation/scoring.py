"""What each reported number is: which labels the evaluate stages score, with which prompt, and the answer rule.

Said in the report folder (scoring.json), on the MLflow runs (params scoring.*) and in the model card.
"""

from __future__ import annotations

from satori.core.config import STAND_INS, EvaluateParams, check_scorable, judged_benchmark
from satori.evaluation.judging import judge_free_rule


def scoring_rule(instructed: bool, answer_extraction: str) -> str:
    """How a label's numbers are made: the prompt, and what VLMEvalKit's exact matching is given."""
    prompt = "prompt.txt as system prompt, " + ("the SATORI instruction after each question" if instructed else "no instruction")
    if not instructed:
        answer = "the first <answer> block, else the whole completion (as VLMEvalKit scores a plain model)"
    elif answer_extraction == "official":
        answer = "the first <answer> block, no answer (' ') without one (the official SATORI rule)"
    else:
        answer = "the first <answer> block, else the whole completion (fallback, not the official rule)"
    return f"{prompt}; scored on {answer}"


def scoring_rules(params: EvaluateParams) -> dict[str, str]:
    """label -> scoring_rule, for every label the evaluate stages report (base, trained, base_no_instruction)."""
    labels = {**base_variants(params), "trained": params.satori_instruction}
    return {label: scoring_rule(instructed, params.answer_extraction) for label, instructed in labels.items()}


def base_variants(params: EvaluateParams) -> dict[str, bool]:
    """label -> append the SATORI instruction. The base model is also scored without it."""
    runs = {"base": params.satori_instruction}
    if params.satori_instruction:
        runs["base_no_instruction"] = False
    return runs


# How each benchmark's answers are matched (VLMEvalKit 0.0.19, no judge model: model="exact_matching").
MCQ_RULE = "VLMEvalKit's multiple-choice exact matching (the option's letter, or its text), no judge model"
FREE_FORM_RULE = (
    "free-form: the answer equal to the reference, case and surrounding space aside (VLMEvalKit's VQA "
    "'accuracy' rule, as it scores GQA and OCRVQA), no judge model"
)
MMBENCH_RULE = MCQ_RULE + "; circular: a question counts when every rotation of its options is answered right"
PER_QUESTION_RULE = MCQ_RULE + ", per question"
OLYMPIAD_RULE = (
    "VLMEvalKit's OlympiadBench.evaluate without olympiad_use_api_judger: its rule-based MathJudger compares the text "
    "after the last 'So the final answer is' (else the whole answer) with final_answer, numbers within the row's "
    "precision (its error column), LaTeX parsed by latex2sympy2_extended (sympy's own parser cannot load beside "
    "DVC's antlr 4.9); the number is AVG, the share of every question right; no judge model"
)
WEMATH_RULE = (
    "VLMEvalKit's WeMath.evaluate(model='exact_matching'): the first letter A-H after the last 'Answer' against the "
    "row's answer, per step and per composite question; the number is WeMath's strict score, (525 - 0.5 x inadequate "
    "generalisation - rote memorisation - insufficient knowledge) / 525, over its 525 problems; no judge model"
)
# The judged three (VLMEvalKit 0.0.19, vlmeval/dataset/image_vqa.py, without use_verifier): the judge is
# evaluate.judge, asked with VLMEvalKit's own prompts; each number is the library's own table's.
JUDGE = "the judge (evaluate.judge: model, endpoint host and VLMEvalKit's prompt version recorded beside the number)"
MATHVISTA_RULE = (
    f"VLMEvalKit's MathVista.evaluate with {JUDGE}: an answer its post_check reads as it stands (an option letter "
    "can_infer finds, an integer equal to the answer) is kept, any other is extracted by the judge from its few-shot "
    "prompt; right when the extraction is the row's answer_option letter (multiple choice) or equal to the answer as "
    "its answer_type (integer, float; a text answer never is, as post_check compares str(None)); the number is its "
    "table's Overall row"
)
MATHVISION_RULE = (
    f"VLMEvalKit's MathVision.evaluate with {JUDGE}: an option letter can_infer finds in the answer is kept, any other "
    "answer is extracted by the judge; right when is_equal holds (equal text, equal numbers within 1e-6, or equal "
    "as LaTeX read by latex2sympy2_extended); the number is its table's Overall row"
)
MATHVERSE_RULE = (
    f"VLMEvalKit's MathVerse.evaluate with {JUDGE}: the judge extracts each answer, an extraction equal to the "
    "reference counts right, any other the judge scores 1 or 0 against it; the number is the share of every question "
    "judged right (its table has a row per problem version, no overall row)"
)
OFFICIAL_RULES = {
    "MMBench_DEV_EN": MMBENCH_RULE,
    "MMBench_DEV_EN_V11": MMBENCH_RULE,
    "MMStar": PER_QUESTION_RULE,
    "MMMU_DEV_VAL": PER_QUESTION_RULE + " (VLMEvalKit's MMMU split: its multiple-choice questions)",
    "OlympiadBench": OLYMPIAD_RULE,
    "WeMath": WEMATH_RULE,
    "MathVista_MINI": MATHVISTA_RULE,
    "MathVision": MATHVISION_RULE,
    "MathVision_MINI": MATHVISION_RULE,
    "MathVerse_MINI": MATHVERSE_RULE,
}
# The SATORI-R1 paper's table (its project page), accuracy %, by VLMEvalKit's benchmark names: the base model and
# SATORI-3B trained from it. Beside ours (report, console, card) when the base model is that model. The paper does
# not say which MMBench split (DEV_EN is VLMEvalKit's default), and its "MMMU" is the validation split.
PAPER_RESULTS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "MathVista_MINI": {"base": 61.2, "trained": 67.4},
        "MathVision": {"base": 21.2, "trained": 26.1},
        "MathVerse_MINI": {"base": 47.6, "trained": 39.8},
        "OlympiadBench": {"base": 10.3, "trained": 13.5},
        "WeMath": {"base": 22.1, "trained": 30.1},
        "MMStar": {"base": 56.3, "trained": 56.7},
        "MMBench_DEV_EN": {"base": 60.8, "trained": 76.9},
        "MMMU_DEV_VAL": {"base": 51.2, "trained": 56.9},
    },
}


def benchmark_rule(name: str, kind: str) -> str:
    """How a benchmark's answers are matched; satori.core.config.JudgeRequired for one this pipeline cannot score.
    A judged benchmark's rule also says how its judge-free number beside it is made."""
    check_scorable(name, kind)
    scored_as = STAND_INS.get(kind, name if kind == "official" else "")
    if judged_benchmark(scored_as):
        return f"{OFFICIAL_RULES[scored_as]}; beside it, {judge_free_rule()}"
    if kind == "synthetic_vqa":
        return FREE_FORM_RULE
    if kind == "synthetic_mmbench":
        return MMBENCH_RULE
    if kind == "synthetic_mmstar":
        return PER_QUESTION_RULE
    if kind in STAND_INS:  # a stand-in: the rule of the benchmark whose layout it has
        return OFFICIAL_RULES[STAND_INS[kind]]
    return OFFICIAL_RULES[name]


def benchmark_rules(benchmarks) -> dict[str, str]:
    """benchmark -> benchmark_rule, for every benchmark of a profile (BenchmarksParams)."""
    return {spec.name: benchmark_rule(spec.name, spec.kind) for spec in benchmarks.items}
