"""Pictures of where the model looks: images with its predicted boxes (red) beside the true ones (green),
its caption and its answer, a few samples to a grid.

Predicted boxes are in the pixels of the image as the model saw it (after the processor's resize);
they are drawn mapped back to the original image, as the box reward maps them.
"""

from __future__ import annotations

import base64
import io
import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from satori.core.resize import seen_size
from satori.rewards.completion import first_block, parse_boxes

TILE = 256  # pixels: each sample is drawn into a TILE x TILE image over a text panel
TEXT_LINES = 6
TRUE_COLOR, PREDICTED_COLOR = (20, 160, 60), (220, 30, 30)


@dataclass
class Sample:
    image: Image.Image
    completion: str
    true_boxes: list  # original pixels; empty when the source has none (MMBench, MMStar)
    min_pixels: int
    max_pixels: int
    note: str = ""  # e.g. the correct answer


def draw(sample: Sample) -> Image.Image:
    """One tile: the image with both kinds of boxes, then the caption, the answer and the note."""
    image = sample.image.convert("RGB")
    width, height = image.size
    scale = TILE / max(width, height)
    shown = image.resize((max(1, round(width * scale)), max(1, round(height * scale))))
    font = ImageFont.load_default()
    line_height = 12
    tile = Image.new("RGB", (TILE, TILE + TEXT_LINES * line_height + 6), (255, 255, 255))
    tile.paste(shown, ((TILE - shown.width) // 2, (TILE - shown.height) // 2))
    offset = ((TILE - shown.width) / 2, (TILE - shown.height) / 2)
    pen = ImageDraw.Draw(tile)

    def rect(box, sx, sy, color):
        # Clipped to the picture: a box the model drew past the image's edge ends at it, never over the text.
        x1, y1, x2, y2 = box
        left, top = offset
        right, bottom = left + shown.width - 1, top + shown.height - 1
        corners = [min(max(left + x1 * sx, left), right), min(max(top + y1 * sy, top), bottom),
                   min(max(left + x2 * sx, left), right), min(max(top + y2 * sy, top), bottom)]  # fmt: skip
        if corners[2] > corners[0] and corners[3] > corners[1]:
            pen.rectangle(corners, outline=color, width=2)

    for box in sample.true_boxes:
        rect(box, scale, scale, TRUE_COLOR)
    predicted = parse_boxes(first_block(sample.completion, "bbox")) or []
    seen = seen_size(width, height, sample.min_pixels, sample.max_pixels)
    if seen:
        for box in predicted[:20]:
            rect(box, scale * width / seen[0], scale * height / seen[1], PREDICTED_COLOR)
    caption = first_block(sample.completion, "caption")
    answer = first_block(sample.completion, "answer")
    text = [
        f"caption: {caption.strip() if caption else '(none)'}",
        f"answer: {answer.strip() if answer else '(none)'}   boxes: {len(predicted)}",
    ]
    if sample.note:
        text.append(sample.note)
    lines = [part for line in text for part in textwrap.wrap(line, 42)][:TEXT_LINES]
    for i, line in enumerate(lines):
        pen.text((4, TILE + 3 + i * line_height), line, fill=(0, 0, 0), font=font)
    return tile


def grid(tiles: list[Image.Image], columns: int = 4) -> Image.Image:
    if not tiles:
        return Image.new("RGB", (TILE, TILE), (255, 255, 255))
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * w, rows * h), (235, 235, 235))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    return sheet


def evaluation_samples(
    completions_file: Path, tsv: Path, min_pixels: int, max_pixels: int, limit: int = 16
) -> list[Sample]:
    """The first `limit` answers of an evaluated benchmark: image from the TSV, correct answer as the note."""
    import pandas as pd

    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False).set_index("index")
    samples = []
    for line in completions_file.read_text(encoding="utf-8").splitlines()[:limit]:
        record = json.loads(line)
        row = table.loc[str(record["index"])]
        image_text = row["image"]
        if len(image_text) <= 64 and image_text in table.index:  # MMBench: a reference to another row's image
            image_text = table.loc[image_text]["image"]
        image = Image.open(io.BytesIO(base64.b64decode(image_text)))
        correct = row.get("answer", row.get("final_answer"))  # OlympiadBench's layout names it final_answer
        samples.append(Sample(image, record["completion"], [], min_pixels, max_pixels, f"correct: {correct}"))
    return samples


def training_samples(
    tables: Iterable[dict], rows_by_source: dict[str, dict], min_pixels: int, max_pixels: int, limit: int = 16
) -> list[Sample]:
    """Samples of one training step's completions, tied to their rows (image, true boxes) by the rows'
    `solution` column (where the row came from, see preprocessing), which ms-swift logs beside each."""
    samples = []
    for table in tables:
        for source, completion in zip(table["solution"], table["completion"]):
            row = rows_by_source.get(source)
            if row is None or len(samples) >= limit:
                continue
            image = Image.open(row["images"][0])
            note = f"truth: {row['possible_answers'][0]}"
            samples.append(Sample(image, completion, row["bboxs"], min_pixels, max_pixels, note))
    return samples


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
