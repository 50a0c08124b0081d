"""What a stage reads and writes, derived from its code and its dvc.yaml command (for the lineage tests and docs).

A stage's code is its module plus every project module it imports, transitively (imports inside
functions included); its data are the paths its command line names. dvc.yaml must list exactly
those as deps and outs, so DVC re-runs a stage when, and only when, something it reads changed.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

PROJECT_PACKAGES = ("satori", "stages")
# Command-line flags that name what a stage writes (and any --out-*); --work is scratch (git-ignored, not an output).
OUTPUT_FLAGS = {"--out", "--metrics", "--plots", "--plot-image", "--samples"}
SCRATCH_FLAGS = {"--work"}


def module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Project modules a file imports anywhere in it (`from satori import x` counts satori.x when it is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES}


def code_closure(root: Path, module: str) -> set[str]:
    """Relative paths of the module's file and of every project file it imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(root, todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    # Package __init__ files are empty markers; a dependency on them would only be noise.
    return {p.relative_to(root).as_posix() for p in seen if p.name != "__init__.py"}


def command_paths(cmd: str) -> tuple[str, set[str], set[str]]:
    """(module, input paths, output paths) of a `python -m MODULE --flag PATH ...` command."""
    words = shlex.split(cmd)
    if words[:2] != ["python", "-m"]:
        raise ValueError(f"not a `python -m` command: {cmd}")
    module, rest = words[2], words[3:]
    inputs, outputs = set(), set()
    for flag, value in zip(rest[::2], rest[1::2]):
        if flag in OUTPUT_FLAGS or flag.startswith("--out-"):
            outputs.add(value)
        elif flag not in SCRATCH_FLAGS:
            inputs.add(value)
    return module, inputs, outputs
