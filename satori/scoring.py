"""What each reported number is: which labels the evaluate stages score, with which prompt, and the answer rule.

Said in the report folder (scoring.json), on the MLflow runs (params scoring.*) and in the model card.
"""

from __future__ import annotations

from satori.config import EvaluateParams


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
