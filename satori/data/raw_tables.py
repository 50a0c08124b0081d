"""The dataset's tables read row by row, every read bounded: JSON lines and Parquet, each row with its table and
line, a line that does not parse kept (Unparsed) for the checks to reject, not dropped."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from satori.core.files import SOURCE_FILE
from satori.data.row_checks import PreprocessError

# Files under the dataset folder that are not tables: provenance and huggingface_hub's own metadata.
NOT_TABLES = {SOURCE_FILE}


def find_tables(root: Path, patterns: list[str]) -> list[Path]:
    if not root.is_dir():
        raise PreprocessError(f"the dataset folder {root} does not exist or is not a folder")
    found = {
        p
        for pattern in patterns
        for p in root.glob(pattern)
        if not p.is_dir()
        and p.name not in NOT_TABLES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }
    inside = root.resolve()
    for table in sorted(found):
        # A table is read only if it is a regular file inside the dataset folder: a link out of it (its lines
        # would land in rejected.jsonl, MLflow and the DVC cache) or a FIFO, device or socket (a read that never
        # ends) stops the stage, named, before any row is read.
        target = table.resolve()
        if not target.is_relative_to(inside):
            raise PreprocessError(f"table {table}: a link to {target}, outside the dataset folder {root}: not read")
        if not stat.S_ISREG(target.stat().st_mode):
            raise PreprocessError(f"table {table}: not a regular file (a FIFO, device or socket): not read")
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
    root: Path, tables: list[Path], max_row_bytes: int, max_json_bytes: int = 1 << 30,
    columns: list[str] | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """(table, row number, row) for every row of `tables` (find_tables under root), each read within the caps.

    JSONL is streamed a line at a time, never more than max_row_bytes of one line in memory. Parquet
    is read a row group at a time: a group that cannot be read yields one Unparsed row per row it
    holds, and the other groups are read on. A JSON file holds an array of rows, or an object whose
    values are arrays of rows (splits: {"train": [...], "test": [...]}), and is read whole, so it is
    refused past max_json_bytes. Parquet reads only `columns` (None: all). A line or file that does not parse
    yields one Unparsed row, so it is
    counted and set aside; the other lines are read on.
    """
    for table in tables:
        name = table.relative_to(root).as_posix()
        suffix = table.suffix.lower()
        if suffix == ".parquet":
            yield from _parquet_rows(table, name, columns)
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


def _parquet_rows(table: Path, name: str, columns: list[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """The rows of a Parquet file, a row group at a time, only the given columns (those the field map names:
    a bad value in a column nothing reads must not reject its row group)."""
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
            present = [c for c in columns if c in parquet.schema_arrow.names] if columns is not None else None
            rows = parquet.read_row_group(group, columns=present).to_pylist()
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


GZIP_MAGIC = b"\x1f\x8b"


def _bounded_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | Unparsed]]:
    """(line number, the line without its end) of a text file, or of a gzip stream whatever its name; a line over
    max_bytes is not read into memory: it yields an Unparsed row_too_large, and reading resumes after it. Holes
    of a sparse file are jumped over (they hold no newline), so a huge empty file is refused in seconds."""
    import gzip

    with path.open("rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    with gzip.open(path, "rb") if compressed else path.open("rb") as f:
        number = 0
        while True:
            try:
                line = f.readline(max_bytes + 1)
            except (OSError, EOFError) as err:  # a corrupt or truncated gzip stream: one row says so
                yield number + 1, Unparsed(reason="unparseable_row", error=f"{type(err).__name__}: {err}"[:300], text="")
                return
            if not line:
                return
            number += 1
            if len(line) <= max_bytes or line.endswith(b"\n"):
                yield number, line.rstrip(b"\r\n")
                continue
            length, start = len(line), line[:200]
            while line and not line.endswith(b"\n"):
                if not compressed:
                    jumped = _jump_hole(f)
                    if jumped is None:  # only a hole is left, so no newline either
                        length += os.fstat(f.fileno()).st_size - f.tell()
                        f.seek(0, os.SEEK_END)
                        break
                    length += jumped
                line = f.readline(_SKIP_CHUNK)
                length += len(line) - line.endswith(b"\n")  # the line's end is not the line's
            error = f"a line of {length} bytes > preprocess.max_row_bytes {max_bytes}"
            yield number, Unparsed(reason="row_too_large", error=error, text=start.decode("utf-8", "replace"))


def _jump_hole(f) -> int | None:
    """Move f past the hole of a sparse file it is in: the bytes jumped (0 outside a hole), None if only a hole
    is left."""
    position = f.tell()
    try:
        data_at = os.lseek(f.fileno(), position, os.SEEK_DATA)
    except OSError:  # ENXIO
        return None
    f.seek(data_at)
    return data_at - position


# Files a dataset holds beside its tables, never reported as skipped.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
TABLE_LIKE = (".jsonl", ".json", ".ndjson", ".parquet", ".csv", ".tsv", ".arrow", ".gz", ".bz2", ".xz", ".zst")


def skipped_files(root: Path, tables: list[Path]) -> list[str]:
    """Every other file under root (not an image, not hidden, not provenance), one line each with its size and
    why it was not read: a table preprocess.tables does not match is said so, never silently left out."""
    read = {table.resolve() for table in tables}
    lines = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        # The checks on the name first: a dataset of loose images costs no system call per image.
        if (path.suffix.lower() in IMAGE_SUFFIXES or path.name in NOT_TABLES
                or any(part.startswith(".") for part in rel.parts) or path.is_dir() or path.resolve() in read):  # fmt: skip
            continue
        why = ("looks like a table, but preprocess.tables does not match it (add its pattern)"
               if path.name.lower().endswith(TABLE_LIKE) else "not a table preprocess.tables matches")  # fmt: skip
        lines.append(f"{rel.as_posix()} ({path.lstat().st_size} bytes): {why}")
    return lines
