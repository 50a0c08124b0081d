"""The judged benchmarks (MathVista, MATH-Vision, MathVerse): VLMEvalKit's own judged evaluate(), the judge an
OpenAI-compatible endpoint named in params (evaluate.judge), and beside each judged number a judge-free one.

The key comes from the environment variable evaluate.judge.key_env, is handed to VLMEvalKit in memory, and is kept
out of every log line while the judge runs (VLMEvalKit 0.0.19's OpenAIWrapper logs `API Key: <key>` at INFO).
What decides a judged number is recorded beside it: the judge's model, its URL's host, and the version of
VLMEvalKit's judge prompts (the digest of the module that writes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from satori.core.config import JudgeParams
from satori.core.errors import InputError

# The name VLMEvalKit files the judge's work under (`<predictions>_judge.tsv`); the served model's own name goes
# through $LOCAL_LLM, VLMEvalKit's way to a local judge (build_judge), so a name with '/' never becomes a path.
JUDGE_FILE_NAME = "judge"
# VLMEvalKit's module holding each judged benchmark's prompts, post-check and table.
JUDGE_MODULES = {"MathVista": "mathvista", "MathVision": "mathv", "MathVerse": "mathverse"}
REDACTED = "<judge key>"
JUDGE_FREE_RULE = (
    "judge-free: the <answer> text against the reference (MathVista's answer_option for its multiple-choice rows): "
    "an option letter must equal it (brackets and a closing stop aside); anything else equal as text, case aside, or "
    "as math-verify {version} reads both (LaTeX or an expression, equivalence by sympy)"
)


class JudgeUnavailable(InputError, RuntimeError):
    """The judge cannot be asked: its key is not in the environment, or its endpoint refuses or does not answer."""


def judge_key(judge: JudgeParams) -> str:
    """The judge's key from its environment variable; JudgeUnavailable, naming the variable, when unset."""
    key = os.environ.get(judge.key_env, "")
    if not key:
        raise JudgeUnavailable(
            f"evaluate.judge.key_env: the environment variable {judge.key_env} holds no key; set it to the judge "
            f"endpoint's API key ({judge.url_host}) before the evaluate stages run (params never hold the key)"
        )
    return key


@contextlib.contextmanager
def key_kept_out_of_logs(key: str) -> Iterator[None]:
    """Every log record made while the block runs, in any logger of this process, with the key replaced."""
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        message = record.getMessage()
        if key in message:
            record.msg, record.args = message.replace(key, REDACTED), ()
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@contextlib.contextmanager
def judge_environment(judge: JudgeParams) -> Iterator[None]:
    """$LOCAL_LLM set to the judge's model while the block runs (VLMEvalKit's build_judge asks that model), and
    the variables that would point VLMEvalKit's judge elsewhere unset: the judge is params', nobody else's."""
    saved = {name: os.environ.get(name) for name in ("LOCAL_LLM", "OPENAI_API_BASE", "BOYUE")}
    for name in saved:
        os.environ.pop(name, None)
    os.environ["LOCAL_LLM"] = judge.model
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def prompt_version(family: str) -> str:
    """VLMEvalKit's judge prompts of a benchmark family, as a version: the package's and the prompt module's digest."""
    from satori.evaluation.vlmeval_compat import import_vlmeval

    module = Path(import_vlmeval().__file__).parent / "dataset" / "utils" / f"{JUDGE_MODULES[family]}.py"
    digest = hashlib.sha256(module.read_bytes()).hexdigest()[:12]
    return f"ms-vlmeval {metadata.version('ms-vlmeval')}, vlmeval/dataset/utils/{module.name} sha256 {digest}"


def judge_record(judge: JudgeParams, scored_as: str) -> dict[str, str]:
    """What decides a judged benchmark's number besides the model: recorded in the report, MLflow and the card."""
    family = judge_family(scored_as)
    return {"model": judge.model, "host": judge.url_host, "prompt": prompt_version(family)}


def judge_records(judge: JudgeParams | None, specs) -> dict[str, dict[str, str]]:
    """benchmark -> judge_record, for each judged benchmark (BenchmarkSpec) of a profile: logged on the MLflow run."""
    return {spec.name: judge_record(judge, spec.scored_as) for spec in specs if spec.judged}


def judge_family(scored_as: str) -> str:
    """MathVista, MathVision or MathVerse: the VLMEvalKit class family of a judged benchmark's name."""
    return next(family for family in JUDGE_MODULES if scored_as.startswith(family))


def judged_scores(dataset, pred_file: str, scored_as: str, judge: JudgeParams) -> tuple[float, dict[str, float], dict]:
    """(accuracy, its parts, the judge-free score and agreement) of a judged benchmark's predictions.

    VLMEvalKit's own evaluate() asks the judge (its prompts, its retries, its post-check and table); the verdict on
    each question is then read back from the files it wrote, scored again by the judge-free rule, and compared.
    """
    import_judged_helpers()
    key = judge_key(judge)
    kwargs = {"model": JUDGE_FILE_NAME, "api_base": f"{judge.url}/chat/completions", "key": key,
              "nproc": judge.nproc, "retry": judge.retry, "verbose": False}  # fmt: skip
    family = judge_family(scored_as)
    with key_kept_out_of_logs(key), judge_environment(judge):
        try:
            table = dataset.evaluate(pred_file, **kwargs)
        except AssertionError as err:  # VLMEvalKit's `assert model.working()`: no answer to `hello`
            raise JudgeUnavailable(f"{scored_as}: the judge {judge.model} at {judge.url_host} did not answer "
                                   f"VLMEvalKit's check ({str(err).splitlines()[0]})") from None  # fmt: skip
    judged = judge_file(family, pred_file)
    verdicts = judge_verdicts(family, judged)
    accuracy, parts = judged_table(family, table, verdicts)
    rule = [judge_free_correct(prediction, reference) for prediction, reference in judge_free_pairs(family, judged)]
    agreement = sum(a == b for a, b in zip(verdicts, rule)) / max(1, len(rule))
    extra = {"judge_free_accuracy": sum(rule) / max(1, len(rule)), "judge_agreement": agreement,
             "judge_failures": judge_failures(family, judged), "judge": judge_record(judge, scored_as)}  # fmt: skip
    return accuracy, parts, extra


def judge_file(family: str, pred_file: str):
    """The table VLMEvalKit's judged evaluate() wrote beside the predictions: every column of the prediction file
    and the judge's work per question (MathVerse: its score file, which keeps the extraction's columns too), in the
    prediction file's order."""
    *_, intermediate, load = import_judged_helpers()
    return load(intermediate(pred_file, f"_{JUDGE_FILE_NAME}{'_score' if family == 'MathVerse' else ''}"))


def judge_failures(family: str, judged) -> int:
    """Questions the judge gave no answer on after every retry (VLMEvalKit then counts them wrong): its log says
    'All 5 retries failed.'"""
    columns = ("log_extract", "log_score") if family == "MathVerse" else ("log",)
    return sum("retries failed" in str(log) for column in columns for log in judged[column])


def import_judged_helpers():
    """VLMEvalKit's judged benchmarks' helper modules, imported after the shim."""
    from satori.evaluation.vlmeval_compat import import_vlmeval

    import_vlmeval()
    if "latex2sympy2" not in sys.modules:
        # MATH-Vision's is_equal compares LaTeX answers with latex2sympy2's latex2sympy, whose antlr 4.7 runtime
        # cannot load beside DVC's 4.9 (as sympy's parser, satori.evaluation.vlmeval_compat): without it that
        # comparison is skipped. latex2sympy2_extended (math-verify's parser, installed) has the same function.
        from latex2sympy2_extended import latex2sympy

        sys.modules["latex2sympy2"] = types.SimpleNamespace(latex2sympy=latex2sympy)
    from vlmeval.dataset.utils import mathv, mathverse, mathvista
    from vlmeval.smp import get_intermediate_file_path, load

    return mathvista, mathv, mathverse, get_intermediate_file_path, load


def judge_verdicts(family: str, judged) -> list[bool]:
    """The judge's verdict on each question of judge_file's table, by VLMEvalKit's own post-check (MathVista,
    MATH-Vision) or its judge's score (MathVerse)."""
    if family == "MathVerse":
        return [bool(score) for score in judged["score"]]
    mathvista, mathv, *_ = import_judged_helpers()
    post_check = mathvista.post_check if family == "MathVista" else mathv.post_check
    return [bool(post_check(judged.iloc[i], prefetch=False)) for i in range(len(judged))]


def judged_table(family: str, table, verdicts: list[bool]) -> tuple[float, dict[str, float]]:
    """A judged evaluate()'s number (a fraction) and its parts from VLMEvalKit's table. MathVista and MATH-Vision
    have an Overall row; MathVerse's table has a row per problem version (in no fixed order), so its number is the
    share of every question judged right, and its parts each version's."""
    if family == "MathVerse":
        parts = {str(row["split"]): float(row["Overall"]) / 100 for _, row in table.iterrows()}
        return sum(verdicts) / max(1, len(verdicts)), dict(sorted(parts.items()))
    label = "Task&Skill" if family == "MathVista" else "Subject"
    rows = {str(row[label]): float(row["acc"]) / 100 for _, row in table.iterrows()}
    return rows.pop("Overall"), dict(sorted(rows.items()))


def judge_free_pairs(family: str, judged) -> list[tuple[str, str]]:
    """(prediction, reference) per question of judge_file's table: MathVista's multiple-choice rows are referenced
    by their option letter (answer_option), as its post-check does."""
    pairs = []
    for _, row in judged.iterrows():
        reference = row["answer"]
        if family == "MathVista" and row.get("question_type") == "multi_choice":
            reference = row["answer_option"]
        pairs.append((_text(row["prediction"]), _text(reference)))
    return pairs


def _text(value) -> str:
    """A table cell as text: an empty cell (NaN) is no text."""
    return "" if value is None or value != value else str(value).strip()


LETTER = re.compile(r"\(?([A-Z])\)?[.:]?")


def judge_free_correct(prediction: str, reference: str) -> bool:
    """The judge-free rule (JUDGE_FREE_RULE) on one question."""
    if not prediction:
        return False
    if re.fullmatch(r"[A-Z]", reference):
        match = LETTER.fullmatch(prediction)
        return bool(match) and match[1] == reference
    if prediction.casefold() == reference.casefold():
        return True
    from math_verify import parse, verify

    gold = parse(f"${reference}$")
    return bool(gold) and any(verify(gold, parse(text)) for text in (prediction, f"${prediction}$"))


def judge_free_rule() -> str:
    """JUDGE_FREE_RULE with the installed math-verify's version."""
    return JUDGE_FREE_RULE.format(version=metadata.version("math-verify"))


def check_judge_reachable(judge: JudgeParams | None, specs) -> None:
    """Before any model is loaded: when a benchmark (BenchmarkSpec) is judged, the judge's key is set and its
    endpoint answers one chat request with it; JudgeUnavailable, naming the host and the key's variable, else."""
    if judge is None or not any(spec.judged for spec in specs):
        return
    key = judge_key(judge)
    request = urllib.request.Request(
        f"{judge.url}/chat/completions",
        data=json.dumps({"model": judge.model, "messages": [{"role": "user", "content": "hello"}],
                         "max_tokens": 8, "temperature": 0}).encode("utf-8"),  # fmt: skip
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    where = f"the judge {judge.model} at {judge.url_host}"
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (an http(s) URL, checked)
            json.loads(response.read())["choices"][0]["message"]["content"]
    except urllib.error.HTTPError as err:
        hint = f" (is {judge.key_env} the endpoint's key?)" if err.code in (401, 403) else ""
        raise JudgeUnavailable(f"{where} refused a chat request: HTTP {err.code}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise JudgeUnavailable(f"{where} did not answer a chat request as an OpenAI-compatible endpoint: "
                               f"{type(err).__name__}: {err}") from None  # fmt: skip
