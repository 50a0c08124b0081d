"""Raw VQA-Verify rows into ms-swift's GRPO jsonl (the work of the preprocess stage).

Every raw row ends in exactly one place: train.jsonl, val.jsonl or
rejected.jsonl (the original row plus one reason code). The report counts
them, and kept + rejected == rows in is checked before anything is renamed
into place.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from satori.core.config import FieldMap, PreprocessParams, VisionParams
from satori.core.files import atomic_dir
from satori.data.raw_tables import Unparsed, find_tables, read_raw_rows, skipped_files
from satori.data.row_checks import (
    NOT_ABOUT_THE_ROW,
    PreprocessError,
    Rejected,
    RowChecker,
    has_bad_text,
    json_safe,
    json_safe_text,
    row_size,
)


# An unexpected exception is one row's `row_error` (the data raised it) unless the same one hits more rows than
# this: then it is a bug (a stale caller, a broken check) and the stage stops with it and its traceback.
ROW_ERROR_ROWS = 5
ROW_ERROR_SHARE = 0.02


def is_validation(row_key: str, seed: int, fraction: float) -> bool:
    """A deterministic, order-independent split: a row's hash decides its side."""
    digest = hashlib.sha256(f"{seed}:{row_key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction



def prompt_token_counter(model_dir: Path, system_prompt: str):
    """Counts the text tokens of the chat prompt around a question (system prompt included)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The chat markup around system prompt and question: im_start/im_end, role names, vision_start/end.
    overhead = len(tokenizer(system_prompt).input_ids) + 16
    return lambda question: overhead + len(tokenizer(question).input_ids)


def special_tokens(model_dir: Path) -> tuple[str, ...]:
    """The special tokens of the model's tokenizer (chat markup, vision and box markers), longest first."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    found = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    found |= set(tokenizer.all_special_tokens)
    return tuple(sorted(found, key=lambda t: (-len(t), t)))



def preprocess(
    params: PreprocessParams,
    vision: VisionParams,
    token_budget: int,
    raw_dir: Path,
    model_dir: Path,
    out_dir: Path,
    system_prompt: str,
    progress: Callable[[int], None] = lambda rows: None,
    check_splits: Callable[[int, int], None] = lambda train_rows, val_rows: None,
) -> dict[str, Any]:
    """Every row of raw_dir's tables into out_dir/{train,val,rejected}.jsonl; returns the report.

    token_budget: the prompt tokens a row may take (train.max_length - train.max_completion_length).
    check_splits(train rows, val rows) raises when training could not start on them; nothing is then
    renamed into place.

    Image paths in the rows are relative to the folder the stage runs in (raw_dir/..., or
    out_dir/images/... for embedded bytes), so the output hashes the same in any checkout.
    """
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    row_errors: Counter[tuple[str, str]] = Counter()  # (exception type, message) -> rows it hit
    first_error: dict[tuple[str, str], BaseException] = {}
    columns_seen: set[str] = set()
    tables = find_tables(raw_dir, params.tables)  # once: the rows are read from these, the report names the rest
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        checker = RowChecker(
            dataset_root=raw_dir,
            fields=params.fields,
            vision=vision,
            token_budget=token_budget,
            prompt_tokens=prompt_token_counter(model_dir, system_prompt),
            embedded_dir=tmp / "images",
            embedded_dir_final=out_dir / "images",
            max_image_pixels=params.max_image_pixels,
            max_image_bytes=params.max_image_bytes,
            max_boxes=params.max_boxes,
            special_tokens=special_tokens(model_dir),
        )
        with (
            (tmp / "train.jsonl").open("w", encoding="utf-8") as train_f,
            (tmp / "val.jsonl").open("w", encoding="utf-8") as val_f,
            (tmp / "rejected.jsonl").open("w", encoding="utf-8") as rejected_f,
        ):
            # Parquet reads only the columns a row is made of: the field map's and the row's id.
            mapped = [column for column in params.fields.model_dump().values() if column] + ["id"]
            rows = read_raw_rows(raw_dir, tables, params.max_row_bytes, params.max_json_bytes, mapped)
            for table, number, raw in rows:
                counts["rows_in"] += 1
                if counts["rows_in"] % 1000 == 0:
                    progress(counts["rows_in"])
                try:
                    row, clipped = _check_row(checker, raw, params.max_row_bytes, columns_seen)
                except Rejected as rej:
                    reasons[rej.reason] += 1
                    if getattr(rej, "error", None) is not None:
                        signature = (type(rej.error).__name__, str(rej.error)[:200])
                        row_errors[signature] += 1
                        first_error.setdefault(signature, rej.error)
                    record = {"file": table, "line": number, "reason": rej.reason, "detail": json_safe_text(rej.detail)}
                    rejected_f.write(json.dumps({**record, "row": json_safe(raw)}, default=str) + "\n")
                    continue
                counts["clipped"] += clipped
                # Where the row came from. ms-swift logs a row's `solution` column (and no other of its
                # columns) beside each completion, so this ties a logged completion to its own row:
                # questions repeat across rows ("How many shapes...?").
                row["solution"] = f"{table}:{number}"
                row_id = raw.get("id", number)
                row_key = f"{table}:{row_id if isinstance(row_id, (str, int)) else number}"
                to_val = is_validation(row_key, params.seed, params.val_fraction)
                (val_f if to_val else train_f).write(json.dumps(row) + "\n")
                counts["val" if to_val else "train"] += 1
        for (kind, message), hit in row_errors.most_common(1):
            if hit > max(ROW_ERROR_ROWS, ROW_ERROR_SHARE * counts["rows_in"]):
                raise RuntimeError(
                    f"{hit} of {counts['rows_in']} rows raised the same {kind}: {message}. One error in that many "
                    f"rows is an error in the pipeline's code, not in the data: nothing was written"
                ) from first_error[(kind, message)]
        kept = counts["train"] + counts["val"]
        rejected = sum(reasons.values())
        if kept + rejected != counts["rows_in"]:
            raise RuntimeError(f"row accounting broke: {kept} kept + {rejected} rejected != {counts['rows_in']} in")
        _check_field_mapping(params.fields, columns_seen, counts["rows_in"], reasons)
        if reasons["too_many_tokens"] * 2 > counts["rows_in"]:
            raise PreprocessError(
                f"{reasons['too_many_tokens']} of {counts['rows_in']} rows need more prompt tokens (image and text) "
                f"than train.max_length - train.max_completion_length = {token_budget} leaves: raise train.max_length "
                f"or lower train.max_completion_length (or vision.max_pixels, which sets the image tokens)"
            )
        if counts["train"] == 0:
            raise PreprocessError(
                f"no training rows survived preprocessing of {counts['rows_in']} rows; "
                f"rejected by reason: {', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}"
            )
        check_splits(counts["train"], counts["val"])
    return {
        "rows_in": counts["rows_in"],
        "kept": kept,
        "train": counts["train"],
        "val": counts["val"],
        "clipped": counts["clipped"],
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(reasons.items())),
        # Files under the dataset folder no pattern of preprocess.tables matched: each said, with its size.
        "skipped_files": skipped_files(raw_dir, tables),
    }


def _check_row(checker: RowChecker, raw: Any, max_row_bytes: int, columns_seen: set[str]) -> tuple[dict, bool]:
    """checker.check with every way one row can fail turned into Rejected (machine failures still stop the stage)."""
    if isinstance(raw, Unparsed):
        raise Rejected(raw["reason"], raw["error"])
    if not isinstance(raw, dict):
        raise Rejected("unparseable_row", f"a {type(raw).__name__}, not an object")
    if has_bad_text(raw):
        raise Rejected("invalid_utf8", "a value holds bytes that are not UTF-8")
    size = row_size(raw)
    if size > max_row_bytes:
        raise Rejected("row_too_large", f"{size} bytes > preprocess.max_row_bytes {max_row_bytes}")
    columns_seen.update(k for k in raw if isinstance(k, str))
    try:
        return checker.check(raw)
    except Rejected:
        raise
    except OSError as err:
        if err.errno in NOT_ABOUT_THE_ROW:
            raise
        raise Rejected("row_error", f"{type(err).__name__}: {str(err)[:200]}") from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # one row must never stop the stage; the exception is kept for the report
        rejected = Rejected("row_error", f"{type(err).__name__}: {str(err)[:200]}")
        rejected.error = err  # the same error in many rows is the code's, not the data's (preprocess stops)
        raise rejected from None


def _check_field_mapping(fields: FieldMap, columns_seen: set[str], rows_in: int, reasons: Counter) -> None:
    """A mapped field that no row has is a wrong mapping, not bad rows: say which columns exist."""
    if not columns_seen:
        return
    required = {"image": fields.image, "question": fields.question, "answers": fields.answers}
    required |= {"caption": fields.caption, "boxes": fields.boxes}
    absent = {name: column for name, column in required.items() if column not in columns_seen}
    if absent:
        wrong = ", ".join(f"preprocess.fields.{name} = {column!r}" for name, column in absent.items())
        raise PreprocessError(
            f"{wrong}: no row of the {rows_in} read has that column; the tables have: {sorted(columns_seen)}"
        )
