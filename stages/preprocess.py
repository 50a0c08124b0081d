"""Stage 2, preprocess: raw VQA-Verify rows into ms-swift's GRPO jsonl.

Every raw row ends in exactly one place: train.jsonl, val.jsonl or
rejected.jsonl (the original row plus one reason code). The report counts
them, and kept + rejected == rows in is checked before anything is renamed
into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages import tracking
from stages.config import (
    IMAGE_FACTOR,
    REPO_ROOT,
    FieldMap,
    PreprocessParams,
    TrainParams,
    VisionParams,
    load_profile,
    system_prompt,
)
from stages.download import BASE_MODEL_DIR, RAW_DIR, atomic_dir

PROCESSED_DIR = REPO_ROOT / "data" / "processed"
METRICS_FILE = REPO_ROOT / "reports" / "preprocess.json"
# Boxes may overhang the image by this many pixels (annotation rounding); they are clipped.
BOX_TOLERANCE_PX = 2.0


class Rejected(Exception):
    """A row that cannot be trained on; `reason` is a stable code for the report."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


REASONS = (
    "unparseable_row",  # a line that is not JSON, or a row that is not an object
    "missing_field",  # a mapped field absent from the row
    "empty_question",  # no question text (or not a string)
    "no_answer",  # no non-empty answer string
    "empty_caption",  # no caption text (or not a string)
    "image_missing",  # no image value, or the file does not exist
    "image_outside_dataset",  # an image path that leaves the dataset folder
    "image_undecodable",  # not an image PIL can read the header of
    "size_invalid",  # declared width/height not positive integers
    "size_mismatch",  # declared width/height differ from the image's
    "image_aspect_ratio",  # beyond the processor's maximum aspect ratio (200)
    "bbox_malformed",  # boxes not a list of 4 finite numbers each
    "bbox_inverted",  # x2 < x1 or y2 < y1
    "bbox_zero_area",  # x2 == x1 or y2 == y1
    "bbox_outside",  # beyond the image by more than BOX_TOLERANCE_PX
    "duplicate",  # the same image and question as an earlier row
    "too_many_tokens",  # image and prompt tokens leave no room for the completion
)


@dataclass
class RowChecker:
    """Checks one raw row and turns it into an ms-swift GRPO row; keeps what it needs across rows."""

    dataset_root: Path
    fields: FieldMap
    vision: VisionParams
    token_budget: int  # max_length - max_completion_length
    prompt_tokens: Callable[[str], int]  # question -> text tokens of the whole prompt
    embedded_dir: Path  # where images embedded as bytes are written
    embedded_dir_final: Path  # where they will be once the output is renamed into place

    def __post_init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.root = self.dataset_root.resolve()

    def check(self, raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The ms-swift row for `raw` and whether a box was clipped; raises Rejected."""
        f = self.fields
        for key in (f.image, f.question, f.answers, f.caption, f.boxes):
            if key not in raw:
                raise Rejected("missing_field", key)
        question = raw[f.question]
        if not isinstance(question, str) or not question.strip():
            raise Rejected("empty_question", repr(question)[:80])
        answers = raw[f.answers]
        answers = [answers] if isinstance(answers, str) else answers
        answers = [a.strip() for a in answers if isinstance(a, str) and a.strip()] if isinstance(answers, list) else []
        if not answers:
            raise Rejected("no_answer", repr(raw[f.answers])[:80])
        caption = raw[f.caption]
        if not isinstance(caption, str) or not caption.strip():
            raise Rejected("empty_caption", repr(caption)[:80])
        image_path, width, height = self._image(raw[f.image], raw)
        boxes, clipped = self._boxes(raw[f.boxes], width, height)
        key = (str(image_path), question.strip())
        if key in self.seen:
            raise Rejected("duplicate", f"{image_path.name}: {question.strip()[:60]}")
        self._check_tokens(question, width, height)
        self.seen.add(key)
        row = {
            "messages": [{"role": "user", "content": "<image>" + question.strip()}],
            "images": [str(image_path)],
            "bboxs": boxes,
            "width": width,
            "height": height,
            "possible_answers": answers,
            "image_caption": caption.strip(),
        }
        return row, clipped

    def _image(self, value: Any, raw: dict[str, Any]) -> tuple[Path, int, int]:
        """(path ms-swift will read, width, height); embedded bytes are written out as a file."""
        if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            width, height, image_format = self._header(io.BytesIO(value), "embedded bytes")
            self._check_declared_size(raw, width, height)
            name = f"{hashlib.sha256(value).hexdigest()[:20]}.{(image_format or 'img').lower()}"
            target = self.embedded_dir / name
            if not target.exists():
                target.write_bytes(value)
            return self.embedded_dir_final / name, width, height
        if not isinstance(value, str) or not value:
            raise Rejected("image_missing", repr(value)[:80])
        path = (self.root / value).resolve()
        if not path.is_relative_to(self.root):
            raise Rejected("image_outside_dataset", value[:200])
        if not path.is_file():
            raise Rejected("image_missing", value[:200])
        width, height, _ = self._header(path, value)
        self._check_declared_size(raw, width, height)
        return path, width, height

    @staticmethod
    def _header(source, name: str) -> tuple[int, int, str | None]:
        """Size and format from the image header: PIL decodes no pixels until asked."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(source) as image:
                return image.width, image.height, image.format
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise Rejected("image_undecodable", f"{name[:200]}: {err}") from None

    def _check_declared_size(self, raw: dict[str, Any], width: int, height: int) -> None:
        declared = [raw.get(key) for key in (self.fields.width, self.fields.height) if key]
        if all(v is None for v in declared):
            return  # absent: the header's size is used
        if not all(type(v) is int and v > 0 for v in declared):
            raise Rejected("size_invalid", repr(declared)[:80])
        if declared != [width, height][: len(declared)]:
            raise Rejected("size_mismatch", f"declared {declared}, image is {[width, height]}")

    def _boxes(self, value: Any, width: int, height: int) -> tuple[list[list[float]], bool]:
        if not isinstance(value, list) or not value:
            raise Rejected("bbox_malformed", repr(value)[:80])
        if all(isinstance(v, (int, float)) for v in value):
            value = [value]
        boxes, clipped = [], False
        for box in value:
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            ):
                raise Rejected("bbox_malformed", repr(box)[:80])
            x1, y1, x2, y2 = (float(v) for v in box)
            if x2 < x1 or y2 < y1:
                raise Rejected("bbox_inverted", repr(box))
            if x2 == x1 or y2 == y1:
                raise Rejected("bbox_zero_area", repr(box))
            tol = BOX_TOLERANCE_PX
            if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
                raise Rejected("bbox_outside", f"{box} in a {width}x{height} image")
            fitted = [max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)]
            clipped |= fitted != [x1, y1, x2, y2]
            boxes.append([int(v) if float(v).is_integer() else v for v in fitted])
        return boxes, clipped

    def _check_tokens(self, question: str, width: int, height: int) -> None:
        try:
            w, h = self.vision.seen_size(width, height)
        except ValueError as err:  # aspect ratio beyond what the processor accepts
            raise Rejected("image_aspect_ratio", str(err)) from None
        needed = (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR) + self.prompt_tokens(question)
        if needed > self.token_budget:
            raise Rejected("too_many_tokens", f"{needed} prompt tokens > budget {self.token_budget}")


# Files under the dataset folder that are not tables: provenance and huggingface_hub's own metadata.
NOT_TABLES = {"SOURCE.json"}


def find_tables(root: Path, patterns: list[str]) -> list[Path]:
    found = {
        p
        for pattern in patterns
        for p in root.glob(pattern)
        if p.is_file()
        and p.name not in NOT_TABLES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }
    if not found:
        raise FileNotFoundError(f"no table matches {patterns} under {root}")
    return sorted(found)


def read_raw_rows(root: Path, patterns: list[str]) -> Iterator[tuple[str, int, Any]]:
    """(table, row number, row) for every row of every table under root: JSONL and Parquet streamed.

    A JSON file holds one array of rows (or an object with one list-valued key) and is read whole:
    JSON arrays cannot be streamed with the standard library. A line or file that does not parse
    yields one row {"__unparsed__": text, "error": message}, so it is counted and set aside.
    """
    for table in find_tables(root, patterns):
        name = str(table.relative_to(root))
        suffix = table.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            number = 0
            for batch in pq.ParquetFile(table).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    number += 1
                    yield name, number, row
        elif suffix == ".json":
            try:
                data = json.loads(table.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                yield name, 1, {"__unparsed__": "<whole file>", "error": str(err)}
                continue
            if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
                data = next(iter(data.values()))
            rows = data if isinstance(data, list) else [data]
            for number, row in enumerate(rows, start=1):
                yield name, number, row
        else:
            with table.open(encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield name, number, json.loads(line)
                    except json.JSONDecodeError as err:
                        yield name, number, {"__unparsed__": line.rstrip("\n")[:2000], "error": str(err)}


def is_validation(row_key: str, seed: int, fraction: float) -> bool:
    """A deterministic, order-independent split: a row's hash decides its side."""
    digest = hashlib.sha256(f"{seed}:{row_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def prompt_token_counter(model_dir: Path):
    """Counts the text tokens of the chat prompt around a question (system prompt included)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # The chat markup around system prompt and question: im_start/im_end, role names, vision_start/end.
    overhead = len(tokenizer(system_prompt()).input_ids) + 16
    return lambda question: overhead + len(tokenizer(question).input_ids)


def json_safe(value: Any) -> Any:
    """A row as JSON can hold it: embedded image bytes become their length and sha256."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def preprocess(
    params: PreprocessParams, vision: VisionParams, train: TrainParams, raw_dir: Path, model_dir: Path, out_dir: Path
) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    columns_seen: set[str] = set()
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        checker = RowChecker(
            dataset_root=raw_dir,
            fields=params.fields,
            vision=vision,
            token_budget=train.max_length - train.max_completion_length,
            prompt_tokens=prompt_token_counter(model_dir),
            embedded_dir=tmp / "images",
            embedded_dir_final=out_dir.resolve() / "images",
        )
        with (
            (tmp / "train.jsonl").open("w", encoding="utf-8") as train_f,
            (tmp / "val.jsonl").open("w", encoding="utf-8") as val_f,
            (tmp / "rejected.jsonl").open("w", encoding="utf-8") as rejected_f,
        ):
            for table, number, raw in read_raw_rows(raw_dir, params.tables):
                counts["rows_in"] += 1
                try:
                    if not isinstance(raw, dict) or "__unparsed__" in raw:
                        detail = raw.get("error", "") if isinstance(raw, dict) else f"a {type(raw).__name__}"
                        raise Rejected("unparseable_row", str(detail)[:80])
                    columns_seen.update(raw)
                    row, clipped = checker.check(raw)
                except Rejected as rej:
                    reasons[rej.reason] += 1
                    record = {"file": table, "line": number, "reason": rej.reason, "detail": rej.detail}
                    rejected_f.write(json.dumps({**record, "row": json_safe(raw)}, default=str) + "\n")
                    continue
                counts["clipped"] += clipped
                row_key = f"{table}:{raw.get('id', number)}"
                to_val = is_validation(row_key, params.seed, params.val_fraction)
                (val_f if to_val else train_f).write(json.dumps(row) + "\n")
                counts["val" if to_val else "train"] += 1
        kept = counts["train"] + counts["val"]
        rejected = sum(reasons.values())
        if kept + rejected != counts["rows_in"]:
            raise RuntimeError(f"row accounting broke: {kept} kept + {rejected} rejected != {counts['rows_in']} in")
        _check_field_mapping(params.fields, columns_seen, counts["rows_in"], reasons)
        if counts["train"] == 0:
            raise ValueError(
                f"no training rows survived preprocessing of {counts['rows_in']} rows; "
                f"rejected by reason: {', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}"
            )
    return {
        "rows_in": counts["rows_in"],
        "kept": kept,
        "train": counts["train"],
        "val": counts["val"],
        "clipped": counts["clipped"],
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(reasons.items())),
    }


def _check_field_mapping(fields: FieldMap, columns_seen: set[str], rows_in: int, reasons: Counter) -> None:
    """A mapped field that no row has is a wrong mapping, not bad rows: say which columns exist."""
    if not columns_seen:
        return
    required = {"image": fields.image, "question": fields.question, "answers": fields.answers}
    required |= {"caption": fields.caption, "boxes": fields.boxes}
    absent = {name: column for name, column in required.items() if column not in columns_seen}
    if absent:
        wrong = ", ".join(f"preprocess.fields.{name} = {column!r}" for name, column in absent.items())
        raise ValueError(
            f"{wrong}: no row of the {rows_in} read has that column; the tables have: {sorted(columns_seen)}"
        )


def main() -> None:
    name, profile = load_profile()
    params = {"preprocess": profile.preprocess.model_dump(), "vision": profile.vision.model_dump()}
    with tracking.stage_run("preprocess", profile.mlflow_experiment, name, params):
        report = preprocess(profile.preprocess, profile.vision, profile.train, RAW_DIR, BASE_MODEL_DIR, PROCESSED_DIR)
        METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
        METRICS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics(report)
        tracking.log_artifact(METRICS_FILE)
        tracking.log_artifact(PROCESSED_DIR / "rejected.jsonl")


if __name__ == "__main__":
    main()
