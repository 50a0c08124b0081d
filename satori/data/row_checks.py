"""The checks one raw row passes before it is trained on: each failure a Rejected with a stable reason code
(REASONS), the row kept whole for rejected.jsonl; images decoded under a pixel bound."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import reprlib
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from struct import error as struct_error
from typing import Any

from satori.core.config import FieldMap, VisionParams
from satori.core.errors import InputError
from satori.core.resize import IMAGE_FACTOR

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
    "image_path_unread",  # a path ms-swift would read otherwise (surrounding space, base64 length, a URL)
    "image_not_a_file",  # a FIFO, device, socket or folder: not read
    "image_file_too_large",  # more bytes than preprocess.max_image_bytes: not read
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
    max_image_bytes: int = 64 << 20
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
        unread = swift_reads_otherwise(value)
        if unread:
            raise Rejected("image_path_unread", f"{short_repr(value)}: {unread}")
        try:
            path = (self.root / value).resolve()
        except (OSError, ValueError) as err:
            raise Rejected("image_missing", f"{value[:200]}: {err}") from None
        if not path.is_relative_to(self.root):
            raise Rejected("image_outside_dataset", value[:200])
        try:
            # Bounded: a regular file of at most max_image_bytes, checked before a byte is read.
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise Rejected("image_not_a_file", value[:200])
            if info.st_size > self.max_image_bytes:
                raise Rejected("image_file_too_large", f"{value[:200]}: {info.st_size} bytes > preprocess.max_image_bytes {self.max_image_bytes}")
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


# How ms-swift 4.x reads a string image value (swift.template.vision_utils.load_file): surrounding whitespace
# stripped, anything starting with "http" fetched, over 2,000 characters read as base64, `data:` as base64.
SWIFT_BASE64_CHARS = 2000


def swift_reads_otherwise(value: str) -> str | None:
    """Why ms-swift would not read `value` as the local file of that name (None: it would), so that
    preprocessing keeps a row only when the file it checked is the one training reads."""
    if value != value.strip():
        return "surrounding whitespace (ms-swift strips it: another file)"
    if len(value) > SWIFT_BASE64_CHARS:
        return f"{len(value)} characters (ms-swift reads a value this long as base64, not as a path)"
    if value.startswith(("http", "data:")):
        return "a URL (ms-swift would fetch it; images must lie in the dataset folder)"
    return None


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


