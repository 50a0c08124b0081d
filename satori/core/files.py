"""Writing stage outputs: whole or not at all, and the same bytes wherever the checkout lies.

A DVC output holds only what decides the result: relative paths, no timestamps,
no run ids. Provenance that names a run goes to MLflow instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOURCE_FILE = "SOURCE.json"  # provenance of a fetched folder: repo, revision, commit, file manifest


@contextlib.contextmanager
def atomic_dir(final: Path, *, resume: bool = False, resume_key: str = "") -> Iterator[Path]:
    """A temporary sibling folder that replaces `final` only if the block succeeds.

    On failure it is deleted, unless `resume`: then it is kept (hidden, git-ignored) and the next
    attempt starts from what it holds, which is how an interrupted Hub download resumes. Only an
    attempt with the same `resume_key` (repo and revision) resumes it; a partial folder left by
    another revision is discarded, so no file of another revision ends up in the output.
    """
    tmp = final.with_name(f".{final.name}.partial")
    key_file = final.with_name(f".{final.name}.partial.key")
    stale = key_file.exists() and key_file.read_text(encoding="utf-8") != resume_key
    if not resume or stale:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    if resume:
        key_file.write_text(resume_key, encoding="utf-8")
    try:
        yield tmp
    except BaseException:
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    key_file.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Indented, key order as given, newline-terminated; written beside and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_source(folder: Path, **provenance) -> None:
    write_json(folder / SOURCE_FILE, provenance)


def read_source(folder: Path) -> dict:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def file_manifest(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under folder (huggingface_hub's .cache metadata excluded)."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != SOURCE_FILE and ".cache" not in p.relative_to(folder).parts
    }


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_digests(paths: dict[str, Path], state_file: Path) -> dict[str, str]:
    """Name -> md5 of each file. A file is read again only when its size or modification time changed
    since a call with this state file saw it, as DVC's own state does (a 3B model's mirror is 7 GB)."""
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    digests: dict[str, str] = {}
    for name, path in paths.items():
        info, where = path.stat(), str(path.resolve())
        known = state.get(where)
        if known and known[:2] != [info.st_size, info.st_mtime_ns]:
            known = None
        state[where] = known or [info.st_size, info.st_mtime_ns, file_md5(path)]
        digests[name] = state[where][2]
    write_json(state_file, state)
    return digests
