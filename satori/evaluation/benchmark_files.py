"""Checking a benchmark TSV (VLMEvalKit's multiple-choice, free-form, OlympiadBench, WeMath, MathVista, MATH-Vision or
MathVerse layout) before any model is loaded.

VLMEvalKit fails late and far from the cause on a broken file (a bare AssertionError
in image_base.py for an image that does not decode, a pandas KeyError 17 frames deep
for a missing column), after hours of inference on the other benchmarks. This reads
every row once and names the file, the row index and the column of the first problem.
"""

from __future__ import annotations

import ast
import base64
import binascii
import hashlib
import io
import shutil
import string
from pathlib import Path

from satori.core.config import OLYMPIAD_SOURCES, judged_benchmark
from satori.core.errors import InputError
from satori.core.files import file_md5
from satori.core.hub import DownloadError, hub_offline

REQUIRED_COLUMNS = ("index", "question", "answer", "image")
OPTION_COLUMNS = tuple(string.ascii_uppercase)
# The columns VLMEvalKit 0.0.19's evaluate() of these benchmarks reads beyond index, question and image.
LAYOUT_COLUMNS = {
    "OlympiadBench": ("final_answer", "answer_type", "is_multiple_answer", "unit", "error", "source"),
    "WeMath": ("answer", "ID", "key", "knowledge concept"),
    "MathVista": ("question_type", "answer_type", "choices", "answer_option", "task", "skills"),
    "MathVision": ("choices", "category"),
    "MathVerse": ("question_for_eval", "metadata", "problem_version"),
}
MATHVISTA_ANSWER_TYPES = ("integer", "float", "text", "list")
WEMATH_KEYS = {steps: {*(f"{steps}steps_{k}" for k in range(1, steps + 1)), f"{steps}steps_multi"} for steps in (2, 3)}
# MMBench stores an image once; later rows with the same image hold the index of that row instead.
MAX_IMAGE_REFERENCE_CHARS = 64


class BenchmarkFileError(InputError, ValueError):
    """A benchmark file VLMEvalKit could not score; the message names file, row and column."""


def _decodes(data: bytes) -> str | None:
    """None when the bytes are a whole, decodable image, else why not."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, DecompressionBombError, ...)
        return f"{type(err).__name__}: {err}"
    return None


def validate_benchmark_folder(folder: Path, specs: list) -> dict[str, int]:
    """Check the TSV of every benchmark (BenchmarkSpec) in folder (as fetch_benchmarks checks what it fetched):
    rows per benchmark; raises BenchmarkFileError naming the file, row and column. The evaluate stages call it
    before they load a model, so a file edited or broken since it was fetched fails in seconds."""
    rows = {}
    for spec, path in zip(specs, benchmark_tsvs(folder, specs).values()):
        if not path.is_file():
            raise BenchmarkFileError(f"{path}: no such benchmark file (the profile's benchmarks name {spec.name!r})")
        rows[spec.name] = validate_benchmark_tsv(path, free_form=spec.free_form, scored_as=spec.scored_as)
    return rows


def benchmark_tsvs(folder: Path, specs: list) -> dict[str, Path]:
    """Each benchmark's (BenchmarkSpec's) TSV in a benchmark folder, by name, in the profile's order."""
    return {spec.name: folder / f"{spec.name}.tsv" for spec in specs}


def validate_benchmark_tsv(path: Path, free_form: bool = False, scored_as: str = "") -> int:
    """Check every row of a benchmark TSV, multiple-choice (option columns A, B, ...; the answer one of them),
    free-form (the answer a non-empty text) or in the layout of the VLMEvalKit benchmark `scored_as` (OlympiadBench:
    free-form, its `final_answer` and every source its scoring divides by; WeMath: multiple-choice, each problem's
    steps complete; MathVista, MATH-Vision, MathVerse: the columns their judged scoring reads); returns the number of rows, raises BenchmarkFileError."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as err:
        raise BenchmarkFileError(f"{path}: not a readable TSV ({type(err).__name__}: {err})") from None
    olympiad, judged = scored_as == "OlympiadBench", judged_benchmark(scored_as)
    family = next((name for name in LAYOUT_COLUMNS if scored_as.startswith(name)), "")
    free_form = free_form or olympiad or judged  # no option columns: the options are in the question
    required = [c for c in REQUIRED_COLUMNS if not (olympiad and c == "answer")] + list(LAYOUT_COLUMNS.get(family, ()))
    missing = [c for c in required if c not in table.columns]
    layout = f"the {scored_as} layout" if scored_as else "a free-form benchmark" if free_form else "a multiple-choice benchmark"
    if missing:
        raise BenchmarkFileError(
            f"{path}: column(s) {missing} missing; {layout} needs {required}"
            f"{'' if free_form else ' and option columns A, B, ...'}; it has {list(table.columns)}"
        )
    options = [c for c in OPTION_COLUMNS if c in table.columns]
    if free_form and options and not judged:
        # VLMEvalKit would take it for a multiple-choice benchmark (it has columns A and B); a judged benchmark's
        # class is its own, whatever its columns.
        raise BenchmarkFileError(f"{path}: option columns {options} in a free-form benchmark; it has {list(table.columns)}")
    if not free_form and len(options) < 2:
        raise BenchmarkFileError(f"{path}: fewer than two option columns (A, B, ...); it has {list(table.columns)}")
    if len(table) == 0:
        raise BenchmarkFileError(f"{path}: no rows")
    indices = set(table["index"])
    checked: dict[str, str | None] = {}  # sha256 of the image text -> why it does not decode (None: fine)
    for position, row in enumerate(table.itertuples(index=False)):
        record = row._asdict()
        where = f"{path}: row {position} (index {record['index']!r})"
        if not record["index"].strip().lstrip("-").isdigit():
            raise BenchmarkFileError(f"{where}, column 'index': {record['index']!r} is not an integer")
        if not record["question"].strip():
            raise BenchmarkFileError(f"{where}, column 'question': empty")
        answer = record["final_answer" if olympiad else "answer"].strip()
        if olympiad:
            _check_olympiad_row(record, where)
        elif judged:
            _check_judged_row(family, record, where)
        elif free_form:
            if not answer:
                raise BenchmarkFileError(f"{where}, column 'answer': empty")
        elif answer not in options or not record[answer].strip():
            offered = [c for c in options if record[c].strip()]
            raise BenchmarkFileError(f"{where}, column 'answer': {answer!r} is not one of the row's options {offered}")
        image = record["image"].strip()
        if len(image) <= MAX_IMAGE_REFERENCE_CHARS and image in indices:
            continue  # a reference to the row that holds the image
        key = hashlib.sha256(image.encode()).hexdigest()
        if key not in checked:
            try:
                checked[key] = _decodes(base64.b64decode(image, validate=True))
            except (binascii.Error, ValueError) as err:
                checked[key] = f"not base64 ({err})"
        if checked[key]:
            raise BenchmarkFileError(f"{where}, column 'image': not a decodable image: {checked[key]}")
    if olympiad:
        absent = sorted(set(OLYMPIAD_SOURCES) - set(table["source"]))
        if absent:  # VLMEvalKit divides by each source's count, after the whole inference
            raise BenchmarkFileError(f"{path}, column 'source': no row of {absent}; OlympiadBench's scoring needs each")
    if scored_as == "WeMath":
        _check_wemath_problems(table, path)
    return len(table)


def _check_olympiad_row(record: dict, where: str) -> None:
    """An OlympiadBench row as its evaluate() reads it: `['answer']` in final_answer, a known source, a precision."""
    final = record["final_answer"].strip()
    if not (final.startswith("[") and final.endswith("]") and final[2:-2].strip()):
        raise BenchmarkFileError(f"{where}, column 'final_answer': {final!r} is not a list of answers like ['3']")
    if record["source"] not in OLYMPIAD_SOURCES:
        raise BenchmarkFileError(f"{where}, column 'source': {record['source']!r} is not one of {list(OLYMPIAD_SOURCES)}")
    for precision in filter(None, record["error"].split(",")):
        try:
            float(precision)
        except ValueError:
            raise BenchmarkFileError(f"{where}, column 'error': {record['error']!r} is not a precision") from None


def _literal(record: dict, column: str, kind: type, where: str):
    """A cell VLMEvalKit evaluates as a Python literal (a list of choices, skills), checked to be one of `kind`."""
    try:
        value = ast.literal_eval(record[column].strip())
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, kind):
        raise BenchmarkFileError(f"{where}, column {column!r}: {record[column]!r} is not a Python {kind.__name__}")
    return value


def _check_judged_row(family: str, record: dict, where: str) -> None:
    """A MathVista, MATH-Vision or MathVerse row as its judged evaluate() and table read it."""
    answer = record["answer"].strip()
    if not answer:
        raise BenchmarkFileError(f"{where}, column 'answer': empty")
    if family == "MathVista":
        kind = record["question_type"]
        if kind == "multi_choice":
            choices = _literal(record, "choices", list, where)
            letters = [chr(65 + i) for i in range(len(choices))]
            if record["answer_option"] not in letters or choices[letters.index(record["answer_option"])] != answer:
                raise BenchmarkFileError(f"{where}, column 'answer_option': {record['answer_option']!r} is not the letter "
                                         f"of the answer {answer!r} among the choices {choices}")  # fmt: skip
        elif kind == "free_form":
            if record["answer_type"] not in MATHVISTA_ANSWER_TYPES:
                raise BenchmarkFileError(f"{where}, column 'answer_type': {record['answer_type']!r} is not one of "
                                         f"{list(MATHVISTA_ANSWER_TYPES)}")  # fmt: skip
            number = {"integer": int, "float": float}.get(record["answer_type"])
            try:
                number and number(answer)
            except ValueError:
                raise BenchmarkFileError(f"{where}, column 'answer': {answer!r} is not an {record['answer_type']}") from None
        else:
            raise BenchmarkFileError(f"{where}, column 'question_type': {kind!r} is not multi_choice or free_form")
        _literal(record, "skills", list, where)
    elif family == "MathVision":
        choices = _literal(record, "choices", list, where)
        letters = [chr(65 + i) for i in range(len(choices))]
        if choices and answer not in letters:
            raise BenchmarkFileError(f"{where}, column 'answer': {answer!r} is not one of the choices' letters {letters}")
        if not record["category"].strip():
            raise BenchmarkFileError(f"{where}, column 'category': empty (MATH-Vision's table is split by it)")
    else:  # MathVerse: its table reads the metadata as JSON once ' is replaced by " (MathVerse_acc)
        import json

        try:
            metadata = json.loads(record["metadata"].replace("'", '"'))
        except json.JSONDecodeError:
            metadata = None
        if not isinstance(metadata, dict) or not {"subject", "subfield"} <= metadata.keys():
            raise BenchmarkFileError(f"{where}, column 'metadata': {record['metadata']!r} is not a dict with subject and "
                                     f"subfield as MathVerse's scoring reads it")  # fmt: skip
        for column in ("question_for_eval", "problem_version"):
            if not record[column].strip():
                raise BenchmarkFileError(f"{where}, column {column!r}: empty")


def _check_wemath_problems(table, path: Path) -> None:
    """Each WeMath problem (rows sharing an ID, keyed `2steps_...` or `3steps_...`: the rows its evaluate() scores)
    has one row per step and one of the steps at once: a missing one would count as answered wrong."""
    steps = table[table["key"].str.match(r"[23]steps_")]
    if steps.empty:
        raise BenchmarkFileError(f"{path}, column 'key': no `2steps_...` or `3steps_...` row, which WeMath's scoring reads")
    for problem, rows in steps.groupby("ID", sort=False):
        keys = set(rows["key"])
        if keys not in WEMATH_KEYS.values() or len(rows) != len(keys):
            raise BenchmarkFileError(f"{path}, column 'key': problem ID {problem!r} has keys {sorted(rows['key'])}; "
                                     f"a problem has one row of each of {sorted(WEMATH_KEYS[2])} or {sorted(WEMATH_KEYS[3])}")  # fmt: skip


def mirrored_tsv(mirror: str, name: str) -> Path:
    """Where benchmarks.mirror holds the official TSV of a benchmark (VLMEvalKit's LMUData layout)."""
    return Path(mirror).expanduser() / f"{name}.tsv"


def fetch_official_tsv(name: str, mirror: str | None, out: Path) -> None:
    """The official TSV with VLMEvalKit's md5, from the mirror folder, else through VLMEvalKit's download.

    VLMEvalKit silently re-downloads a TSV whose md5 differs from the one it holds, and fails
    obscurely offline; this says which file, which md5 and where to get it instead.
    """
    from satori.evaluation.vlmeval_compat import build_vlmeval_dataset, official_tsv

    url, md5 = official_tsv(name)
    get_it = f"download {url} (md5 {md5}) on a machine with access, into the folder set as benchmarks.mirror"
    if mirror:
        source = mirrored_tsv(mirror, name)
        if not source.is_file():
            raise DownloadError(f"benchmarks.mirror has no {source.name} (looked for {source}): {get_it}")
        actual = file_md5(source)
        if md5 and actual != md5:
            raise DownloadError(
                f"{source} has md5 {actual}, but VLMEvalKit expects {md5} for {name} (it would try to re-download "
                f"it): {get_it}"
            )
        shutil.copy2(source, out / f"{name}.tsv")
        return
    if hub_offline():
        raise DownloadError(f"{name}.tsv is not here and HF_HUB_OFFLINE=1 forbids downloading it: {get_it}")
    build_vlmeval_dataset(name, data_root=out)
