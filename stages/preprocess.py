"""Stage 2, preprocess: raw VQA-Verify rows into ms-swift's GRPO jsonl.

Every raw row ends in exactly one place: train.jsonl, val.jsonl or
rejected.jsonl (the original row plus one reason code). The report counts
them, and kept + rejected == rows in is checked before anything is renamed
into place.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
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


@dataclass
class RowChecker:
    dataset_root: Path
    fields: FieldMap
    vision: VisionParams
    token_budget: int  # max_length - max_completion_length
    prompt_tokens: callable  # question -> number of text tokens in the prompt

    def __post_init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def check(self, raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The ms-swift row for `raw` and whether a box was clipped; raises Rejected."""
        f = self.fields
        for key in (f.image, f.question, f.answers, f.caption, f.boxes):
            if key not in raw:
                raise Rejected("missing_field", key)
        question = raw[f.question]
        if not isinstance(question, str) or not question.strip():
            raise Rejected("empty_question")
        answers = raw[f.answers]
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(answers, list) or not [a for a in answers if isinstance(a, str) and a.strip()]:
            raise Rejected("no_answer")
        answers = [a.strip() for a in answers if isinstance(a, str) and a.strip()]
        caption = raw[f.caption]
        if not isinstance(caption, str) or not caption.strip():
            raise Rejected("empty_caption")
        image_path = self._image_path(raw[f.image])
        width, height = self._image_size(image_path, raw)
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

    def _image_path(self, value: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise Rejected("image_missing", repr(value)[:80])
        path = (self.dataset_root / value).resolve()
        if not path.is_file():
            raise Rejected("image_missing", value)
        return path

    def _image_size(self, path: Path, raw: dict[str, Any]) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except (UnidentifiedImageError, OSError) as err:
            raise Rejected("image_undecodable", f"{path.name}: {err}") from None
        declared = (raw.get(self.fields.width or ""), raw.get(self.fields.height or ""))
        if declared != (None, None) and declared != (width, height):
            raise Rejected("size_mismatch", f"declared {declared}, image is {(width, height)}")
        return width, height

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


def read_raw_rows(root: Path, pattern: str) -> Iterator[tuple[str, int, Any]]:
    """(file, line number, parsed row) for every line of every table under root, streamed."""
    tables = sorted(p for p in root.glob(pattern) if p.is_file())
    if not tables:
        raise FileNotFoundError(f"no table matches {pattern!r} under {root}")
    for table in tables:
        with table.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield str(table.relative_to(root)), number, json.loads(line)
                except json.JSONDecodeError as err:
                    yield str(table.relative_to(root)), number, {"__unparsed__": line.rstrip("\n"), "error": str(err)}


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


def preprocess(
    params: PreprocessParams, vision: VisionParams, train: TrainParams, raw_dir: Path, model_dir: Path, out_dir: Path
) -> dict[str, Any]:
    checker = RowChecker(
        dataset_root=raw_dir,
        fields=params.fields,
        vision=vision,
        token_budget=train.max_length - train.max_completion_length,
        prompt_tokens=prompt_token_counter(model_dir),
    )
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    with atomic_dir(out_dir) as tmp:
        with (
            (tmp / "train.jsonl").open("w", encoding="utf-8") as train_f,
            (tmp / "val.jsonl").open("w", encoding="utf-8") as val_f,
            (tmp / "rejected.jsonl").open("w", encoding="utf-8") as rejected_f,
        ):
            for table, number, raw in read_raw_rows(raw_dir, params.table_glob):
                counts["rows_in"] += 1
                try:
                    if not isinstance(raw, dict) or "__unparsed__" in raw:
                        raise Rejected("unparseable_row", str(raw.get("error", ""))[:80])
                    row, clipped = checker.check(raw)
                except Rejected as rej:
                    reasons[rej.reason] += 1
                    record = {"file": table, "line": number, "reason": rej.reason, "detail": rej.detail, "row": raw}
                    rejected_f.write(json.dumps(record) + "\n")
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


def main() -> None:
    name, profile = load_profile()
    params = {"preprocess": profile.preprocess.model_dump(), "vision": profile.vision.model_dump()}
    with tracking.stage_run("preprocess", profile.mlflow_experiment, name, params):
        report = preprocess(profile.preprocess, profile.vision, profile.train, RAW_DIR, BASE_MODEL_DIR, PROCESSED_DIR)
        METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
        METRICS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        flat = {k: v for k, v in report.items() if isinstance(v, int)}
        flat.update({f"rejected.{k}": v for k, v in report["rejected_by_reason"].items()})
        tracking.log_metrics(flat)
        tracking.log_artifact(METRICS_FILE)
        tracking.log_artifact(PROCESSED_DIR / "rejected.jsonl")


if __name__ == "__main__":
    main()
