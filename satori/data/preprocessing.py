"""Raw VQA-Verify rows into ms-swift's GRPO jsonl (the work of the preprocess stage).

Every raw row ends in exactly one place: train.jsonl, val.jsonl or
rejected.jsonl (the original row plus one reason code). The report counts
them, and kept + rejected == rows in is checked before anything is renamed
into place.
"""

from __future__ import annotations

import errno
import hashlib
import io
import reprlib
import warnings
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import Any

from satori.core.config import FieldMap, InputError, PreprocessParams, VisionParams
from satori.core.resize import IMAGE_FACTOR
from satori.core.files import SOURCE_FILE, atomic_dir

# Boxes may overhang the image by this many pixels (annotation rounding); they are clipped.
BOX_TOLERANCE_PX = 2.0
# ms-swift reads these in a query as placeholders for a row's media: one in a question would ask for an
# image the row does not have (or misplace the one it has).
MEDIA_TAGS = ("<image>", "<video>", "<audio>")


# OS errors that are about the machine (disk full, read-only, I/O), not about one row: they stop the stage.
NOT_ABOUT_THE_ROW = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}


class PreprocessError(InputError, RuntimeError):
    """Preprocessing cannot go on (no tables, a wrong field mapping, a full disk); the message says why."""


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
    "image_undecodable",  # not an image PIL can decode
    "image_truncated",  # a valid header, but the pixel data ends early
    "image_too_large",  # more pixels than preprocess.max_image_pixels (decompression bombs included)
    "size_invalid",  # declared width/height not positive integers
    "size_mismatch",  # declared width/height differ from the image's
    "image_aspect_ratio",  # the processor cannot resize it (aspect ratio over 200, or a side would be 0 pixels)
    "bbox_malformed",  # boxes not a list of 4 finite numbers each
    "bbox_inverted",  # x2 < x1 or y2 < y1
    "bbox_zero_area",  # x2 == x1 or y2 == y1
    "bbox_outside",  # beyond the image by more than BOX_TOLERANCE_PX
    "duplicate",  # the same image and question as an earlier row
    "too_many_tokens",  # image and prompt tokens leave no room for the completion
    "row_too_large",  # the row's JSON is over preprocess.max_row_bytes (embedded image bytes not counted)
    "too_many_boxes",  # more boxes than preprocess.max_boxes
    "invalid_utf8",  # text with bytes that are not UTF-8
    "special_token",  # question, caption or an answer holds a special token of the model's tokenizer
    "media_tag",  # question, caption or an answer holds <image>, <video> or <audio> (ms-swift's placeholders)
    "row_error",  # anything else one row can raise (the exception is kept in the detail)
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
    embedded_dir_final: Path  # where they will be once the output is renamed into place (relative)
    max_image_pixels: int = 25_000_000
    max_boxes: int = 100
    special_tokens: tuple[str, ...] = ()  # the model tokenizer's: no text field may hold one

    def __post_init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.root = self.dataset_root.resolve()
        # sha256 of an image's bytes -> (width, height, format) or the Rejected it raised: each distinct
        # image is decoded once, however many rows share it.
        self.decoded: dict[str, tuple[int, int, str | None] | Rejected] = {}

    def check(self, raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The ms-swift row for `raw` and whether a box was clipped; raises Rejected."""
        f = self.fields
        for key in (f.image, f.question, f.answers, f.caption, f.boxes):
            if key not in raw:
                raise Rejected("missing_field", key)
        question = raw[f.question]
        if not isinstance(question, str) or not question.strip():
            raise Rejected("empty_question", short_repr(question))
        answers = raw[f.answers]
        answers = [answers] if not isinstance(answers, list) else answers
        answers = [text for text in map(answer_text, answers) if text]
        if not answers:
            raise Rejected("no_answer", short_repr(raw[f.answers]))
        caption = raw[f.caption]
        if not isinstance(caption, str) or not caption.strip():
            raise Rejected("empty_caption", short_repr(caption))
        for field, text in ((f.question, question), (f.caption, caption), *((f.answers, a) for a in answers)):
            self._check_markup(field, text)
        image_path, width, height = self._image(raw[f.image], raw)
        boxes, clipped = self._boxes(raw[f.boxes], width, height)
        key = (image_path, question.strip())
        if key in self.seen:
            raise Rejected("duplicate", f"{image_path}: {question.strip()[:60]}")
        self._check_tokens(question, width, height)
        self.seen.add(key)
        row = {
            "messages": [{"role": "user", "content": "<image>" + question.strip()}],
            "images": [image_path],
            "bboxs": boxes,
            "width": width,
            "height": height,
            "possible_answers": answers,
            "image_caption": caption.strip(),
        }
        return row, clipped

    def _check_markup(self, field: str, text: str) -> None:
        """No chat markup in the text: the model's special tokens and ms-swift's media tags are the template's."""
        if "<" not in text:
            return
        for token in self.special_tokens:
            if token in text:
                raise Rejected("special_token", f"{field} holds {token!r}, a special token of the model's tokenizer")
        for tag in MEDIA_TAGS:
            if tag in text:
                raise Rejected("media_tag", f"{field} holds {tag!r}, which ms-swift reads as a media placeholder")

    def _image(self, value: Any, raw: dict[str, Any]) -> tuple[str, int, int]:
        """(path ms-swift will read, relative to the stage's folder, width, height).

        Embedded bytes are written out as a file. Every image is decoded in full once, as training
        will decode it: truncated data, decompression bombs and oversized images are rejected here,
        not at step 1 of a GPU run.
        """
        if isinstance(value, dict):  # Hugging Face datasets' Image feature: {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
            width, height, image_format = self._decode(data, "embedded bytes")
            self._check_declared_size(raw, width, height)
            name = f"{hashlib.sha256(data).hexdigest()[:20]}.{(image_format or 'img').lower()}"
            target = self.embedded_dir / name
            if not target.exists():
                target.write_bytes(data)
            return (self.embedded_dir_final / name).as_posix(), width, height
        if not isinstance(value, str) or not value or "\0" in value:
            raise Rejected("image_missing", short_repr(value))
        try:
            path = (self.root / value).resolve()
        except (OSError, ValueError) as err:
            raise Rejected("image_missing", f"{value[:200]}: {err}") from None
        if not path.is_relative_to(self.root):
            raise Rejected("image_outside_dataset", value[:200])
        try:
            data = path.read_bytes()
        except OSError as err:
            if err.errno in NOT_ABOUT_THE_ROW:
                raise
            raise Rejected("image_missing", value[:200]) from None
        width, height, _ = self._decode(data, value)
        self._check_declared_size(raw, width, height)
        return (self.dataset_root / path.relative_to(self.root)).as_posix(), width, height

    def _decode(self, data: bytes, name: str) -> tuple[int, int, str | None]:
        key = hashlib.sha256(data).hexdigest()
        if key not in self.decoded:
            try:
                self.decoded[key] = decode_image(data, self.max_image_pixels)
            except Rejected as rej:
                self.decoded[key] = rej
        result = self.decoded[key]
        if isinstance(result, Rejected):
            raise Rejected(result.reason, f"{name[:200]}: {result.detail}")
        return result

    def _check_declared_size(self, raw: dict[str, Any], width: int, height: int) -> None:
        declared = [raw.get(key) for key in (self.fields.width, self.fields.height) if key]
        if all(v is None for v in declared):
            return  # absent: the header's size is used
        declared = [int(v) if type(v) is float and v.is_integer() else v for v in declared]  # 96.0 is 96
        if not all(type(v) is int and v > 0 for v in declared):
            raise Rejected("size_invalid", short_repr(declared))
        if declared != [width, height][: len(declared)]:
            raise Rejected("size_mismatch", f"declared {declared}, image is {[width, height]}")

    def _boxes(self, value: Any, width: int, height: int) -> tuple[list[list[float]], bool]:
        if not isinstance(value, list) or not value:
            raise Rejected("bbox_malformed", short_repr(value))
        if all(isinstance(v, (int, float)) for v in value):
            value = [value]
        if len(value) > self.max_boxes:
            raise Rejected("too_many_boxes", f"{len(value)} boxes > preprocess.max_boxes {self.max_boxes}")
        boxes, clipped = [], False
        for box in value:
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            ):
                raise Rejected("bbox_malformed", short_repr(box))
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
        seen = self.vision.seen_size(width, height)
        if seen is None:  # the aspect ratio is beyond what the processor accepts, or a side floors to 0 pixels
            limits = f"{self.vision.min_pixels}-{self.vision.max_pixels} pixels"
            raise Rejected("image_aspect_ratio", f"a {width}x{height} image cannot be resized within {limits}")
        w, h = seen
        needed = (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR) + self.prompt_tokens(question)
        if needed > self.token_budget:
            raise Rejected("too_many_tokens", f"{needed} prompt tokens > budget {self.token_budget}")


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr for a reason's detail that cannot fail or grow: huge ints, deep nesting and long strings are cut."""
    try:
        text = _REPR.repr(value)
    except Exception:  # e.g. an int over Python's 4,300-digit str limit
        text = f"<{type(value).__name__}>"
    return text[:limit]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 6, 6, 60, 60, 40


def decode_image(data: bytes, max_pixels: int) -> tuple[int, int, str | None]:
    """(width, height, format) of an image decoded in full and converted to RGB, as training will; raises Rejected."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; here any bomb is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, image_format = image.width, image.height, image.format
                if width * height > max_pixels:
                    raise Rejected("image_too_large", f"{width}x{height} > preprocess.max_image_pixels {max_pixels}")
                image.load()
                image.convert("RGB")
    except Rejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise Rejected("image_too_large", str(err)[:200]) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct_error) as err:
        reason = "image_truncated" if "truncated" in str(err) or isinstance(err, EOFError) else "image_undecodable"
        raise Rejected(reason, f"{type(err).__name__}: {str(err)[:200]}") from None
    return width, height, image_format


# Files under the dataset folder that are not tables: provenance and huggingface_hub's own metadata.
NOT_TABLES = {SOURCE_FILE}


def find_tables(root: Path, patterns: list[str]) -> list[Path]:
    if not root.is_dir():
        raise PreprocessError(f"the dataset folder {root} does not exist or is not a folder")
    found = {
        p
        for pattern in patterns
        for p in root.glob(pattern)
        if p.is_file()
        and p.name not in NOT_TABLES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }
    if not found:
        raise PreprocessError(f"no table matches preprocess.tables {patterns} under {root}")
    return sorted(found)


class Unparsed(dict):
    """A raw row that could not be read: `reason` and `error` say why, `text` holds its start."""


def _parse_line(data: bytes, max_bytes: int) -> Any:
    """One JSONL line (bytes) as a row; an Unparsed for a line too long, not UTF-8, or not JSON."""
    if len(data) > max_bytes:
        return Unparsed(
            reason="row_too_large",
            error=f"{len(data)} bytes > preprocess.max_row_bytes {max_bytes}",
            text=data[:200].decode("utf-8", "replace"),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Unparsed(reason="invalid_utf8", error=str(err), text=data[:2000].decode("utf-8", "replace"))
    return _parse_json(text.removeprefix("\ufeff"))  # a BOM (some editors write one) is not part of the row


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, ints over 4,300 digits, deep nesting
        return Unparsed(reason="unparseable_row", error=f"{type(err).__name__}: {str(err)[:200]}", text=text[:2000])


def read_raw_rows(
    root: Path, patterns: list[str], max_row_bytes: int, max_json_bytes: int = 1 << 30
) -> Iterator[tuple[str, int, Any]]:
    """(table, row number, row) for every row of every table under root, each read within the caps.

    JSONL is streamed a line at a time, never more than max_row_bytes of one line in memory. Parquet
    is read a row group at a time: a group that cannot be read yields one Unparsed row per row it
    holds, and the other groups are read on. A JSON file holds an array of rows, or an object whose
    values are arrays of rows (splits: {"train": [...], "test": [...]}), and is read whole, so it is
    refused past max_json_bytes. A line or file that does not parse yields one Unparsed row, so it is
    counted and set aside; the other lines are read on.
    """
    for table in find_tables(root, patterns):
        name = table.relative_to(root).as_posix()
        suffix = table.suffix.lower()
        if suffix == ".parquet":
            yield from _parquet_rows(table, name)
        elif suffix == ".json":
            size = table.stat().st_size
            if size > max_json_bytes:
                error = f"a {size}-byte JSON file > preprocess.max_json_bytes {max_json_bytes}: write it as JSONL"
                yield name, 1, Unparsed(reason="row_too_large", error=error, text="<the whole JSON file>")
                continue
            # surrogateescape keeps bad bytes as lone surrogates: the row holding them is rejected, not the file.
            text = table.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
            data = _parse_json(text)
            if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
                data = [row for split in data.values() for row in split]  # an object of splits
            rows = data if isinstance(data, list) else [data]
            for number, row in enumerate(rows, start=1):
                yield name, number, row
        else:
            for number, line in _bounded_lines(table, max_row_bytes):
                if isinstance(line, Unparsed) or line.strip():
                    yield name, number, line if isinstance(line, Unparsed) else _parse_line(line, max_row_bytes)


def _parquet_rows(table: Path, name: str) -> Iterator[tuple[str, int, Any]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(table)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: no row of it can be read
        error = f"{type(err).__name__}: {err}"[:300]
        yield name, 1, Unparsed(reason="unparseable_row", error=error, text="<the whole Parquet file>")
        return
    number = 0
    for group in range(parquet.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except Exception as err:  # a corrupt row group: each of its rows is counted and set aside
            error = f"row group {group} of {parquet.num_row_groups} unreadable: {type(err).__name__}: {err}"[:300]
            for _ in range(count):
                number += 1
                yield name, number, Unparsed(reason="unparseable_row", error=error, text=f"<row group {group}>")
            continue
        for row in rows:
            number += 1
            yield name, number, row


# Reading past an over-long line: this much at a time, never kept.
_SKIP_CHUNK = 1 << 20


def _bounded_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | Unparsed]]:
    """(line number, the line without its end) of a text file; a line over max_bytes is not read into memory:
    it yields an Unparsed row_too_large, and reading resumes after it. Holes of a sparse file are jumped
    over (they hold no newline), so a huge empty file is refused in seconds."""
    import os

    with path.open("rb") as f:
        number = 0
        while True:
            line = f.readline(max_bytes + 1)
            if not line:
                return
            number += 1
            if len(line) <= max_bytes or line.endswith(b"\n"):
                yield number, line.rstrip(b"\r\n")
                continue
            length, start = len(line), line[:200]
            while not line.endswith(b"\n"):
                position = f.tell()
                try:
                    data_at = os.lseek(f.fileno(), position, os.SEEK_DATA)
                except OSError:  # ENXIO: only a hole is left, so no newline either
                    length += os.fstat(f.fileno()).st_size - position
                    f.seek(0, os.SEEK_END)
                    break
                if data_at > position:
                    length += data_at - position
                    f.seek(data_at)
                line = f.readline(_SKIP_CHUNK)
                if not line:
                    break
                length += len(line) - line.endswith(b"\n")  # the line's end is not the line's
            error = f"a line of {length} bytes > preprocess.max_row_bytes {max_bytes}"
            yield number, Unparsed(reason="row_too_large", error=error, text=start.decode("utf-8", "replace"))


def has_bad_text(value: Any, depth: int = 0) -> bool:
    """True if any string in the row holds a lone surrogate (an undecodable byte kept by surrogateescape)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if depth > 50:
        return False
    if isinstance(value, dict):
        return any(has_bad_text(k, depth + 1) or has_bad_text(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(has_bad_text(v, depth + 1) for v in value)
    return False


def is_validation(row_key: str, seed: int, fraction: float) -> bool:
    """A deterministic, order-independent split: a row's hash decides its side."""
    digest = hashlib.sha256(f"{seed}:{row_key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def answer_text(value: Any) -> str | None:
    """An accepted answer as text: a non-empty string stripped, an integer (3, or 3.0) as its digits; else None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):  # True is an int to Python, not an answer
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


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


def json_safe(value: Any, depth: int = 0) -> Any:
    """A row as JSON can hold it: embedded bytes become their length and sha256, bad text and huge ints a repr."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if depth > 20:
        return short_repr(value, 200)
    if isinstance(value, dict):
        return {json_safe_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, str):
        return json_safe_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**300:
        return short_repr(value, 200)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def json_safe_text(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if has_bad_text(text) else text


def row_size(raw: Any) -> int:
    """Bytes of the row's JSON, embedded image bytes counted as their summary."""
    return len(json.dumps(json_safe(raw), default=str))


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
    columns_seen: set[str] = set()
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
            max_boxes=params.max_boxes,
            special_tokens=special_tokens(model_dir),
        )
        with (
            (tmp / "train.jsonl").open("w", encoding="utf-8") as train_f,
            (tmp / "val.jsonl").open("w", encoding="utf-8") as val_f,
            (tmp / "rejected.jsonl").open("w", encoding="utf-8") as rejected_f,
        ):
            for table, number, raw in read_raw_rows(raw_dir, params.tables, params.max_row_bytes, params.max_json_bytes):
                counts["rows_in"] += 1
                if counts["rows_in"] % 1000 == 0:
                    progress(counts["rows_in"])
                try:
                    row, clipped = _check_row(checker, raw, params.max_row_bytes, columns_seen)
                except Rejected as rej:
                    reasons[rej.reason] += 1
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
        raise Rejected("row_error", f"{type(err).__name__}: {str(err)[:200]}") from None


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
