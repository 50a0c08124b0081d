"""What each reported number is: which labels the evaluate stages score, with which prompt, and the answer rule.

Said in the report folder (scoring.json), on the MLflow runs (params scoring.*) and in the model card.
"""

from __future__ import annotations

from satori.core.config import EvaluateParams, check_scorable


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
OFFICIAL_RULES = {
    "MMBench_DEV_EN": MMBENCH_RULE,
    "MMBench_DEV_EN_V11": MMBENCH_RULE,
    "MMStar": PER_QUESTION_RULE,
    "MMMU_DEV_VAL": PER_QUESTION_RULE + " (VLMEvalKit's MMMU split: its multiple-choice questions)",
}
def benchmark_rule(name: str, kind: str) -> str:
    """How a benchmark's answers are matched; satori.core.config.JudgeRequired for one this pipeline cannot score."""
    check_scorable(name, kind)
    if kind == "synthetic_vqa":
        return FREE_FORM_RULE
    if kind == "synthetic_mmbench":
        return MMBENCH_RULE
    if kind == "synthetic_mmstar":
        return PER_QUESTION_RULE
    return OFFICIAL_RULES[name]


def benchmark_rules(benchmarks) -> dict[str, str]:
    """benchmark -> benchmark_rule, for every benchmark of a profile (BenchmarksParams)."""
    return {spec.name: benchmark_rule(spec.name, spec.kind) for spec in benchmarks.items}
