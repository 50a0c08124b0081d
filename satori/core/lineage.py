"""What a stage reads and writes, derived from its code and its dvc.yaml command (for the lineage tests and docs).

A stage's code is its module plus every project module it imports, transitively (imports inside
functions included); its data are the paths its command line names. dvc.yaml must list exactly
those as deps and outs, so DVC re-runs a stage when, and only when, something it reads changed.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
from pathlib import Path

PROJECT_PACKAGES = ("satori", "stages")
# Command-line flags that name what a stage writes (and any --out-*); --work is scratch (git-ignored, not an output).
OUTPUT_FLAGS = {"--out", "--metrics", "--plots", "--plot-image", "--samples"}
SCRATCH_FLAGS = {"--work"}


# Modules that only record (MLflow runs, the console) and cannot change what a stage writes. A stage's code
# (its dvc.yaml deps, train's run key) leaves them out, so editing them re-runs and restarts nothing. Held
# honest by tests/lineage/test_dvc_yaml.py: other modules reach one only as `module.NAME`, NAME among those
# listed here (each writes a record or returns a handle or message for one), and no stage output is made
# of what they return.
INFRASTRUCTURE: dict[str, tuple[str, ...]] = {
    "satori.tracking": (
        "stage_run", "say", "log_metrics", "log_artifact", "log_image", "log_datasets", "logged_steps",
        "register_model", "record_pipeline_run", "run_link", "NO_RUN_STAGES",
    ),
}  # fmt: skip


def is_infrastructure(module: str) -> bool:
    """module is, or is inside, a package of INFRASTRUCTURE."""
    return any(module == name or module.startswith(name + ".") for name in INFRASTRUCTURE)


# Modules another program loads by path (ms-swift's --external_plugins), not imported by the module that names
# them: still its code. tests/lineage holds the paths swift_cli passes equal to these modules' files.
LOADED_BY_PATH: dict[str, tuple[str, ...]] = {
    "satori.training.swift_cli": (
        "satori.training.swift_no_remote_code", "satori.rewards.plugin", "satori.training.swift_template"
    ),
}


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
    """Relative paths of the module's file and of every project file it imports, transitively, but for
    INFRASTRUCTURE (which records and cannot change an output)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if is_infrastructure(name):
            continue
        path = module_file(root, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
        todo.extend(LOADED_BY_PATH.get(name, ()))
        # Importing a.b runs package a's __init__ first (satori's pins the CPU numerics).
        todo.extend(name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1))
    # An empty package __init__ is a marker; a dependency on it would only be noise.
    return {p.relative_to(root).as_posix() for p in seen if p.name != "__init__.py" or p.stat().st_size}


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


# A pipeline run in a copy of the checkout (flows/pipeline.py --profile) has no git history: the
# flow passes the revision of the checkout it copied.
CODE_REVISION_ENV = "SATORI_CODE_REVISION"
# The stage whose output (the model card) names the code revision. It depends on every stage's code, so that
# DVC re-runs it, and the card moves, exactly when the revision does.
NAMES_CODE_REVISION = "publish"


def pipeline_code(checkout: Path) -> list[str]:
    """Every file of checkout's git tree a stage of its dvc.yaml reads: each stage's code (code_closure of its
    module) and the inputs no stage writes (prompt.txt)."""
    import yaml

    stages = (yaml.safe_load((checkout / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    written = set()
    for entry in stages.values():
        for kind in ("outs", "metrics", "plots"):
            written.update(next(iter(out)) if isinstance(out, dict) else out for out in entry.get(kind, []))
    files: set[str] = set()
    for entry in stages.values():
        try:
            module, inputs, _ = command_paths(" ".join(str(entry.get("cmd", "")).split()))
        except ValueError:  # not a `python -m` stage (a user's own): no project code to find in it
            continue
        files |= code_closure(checkout, module) | (inputs - written)
    return sorted(files)


def code_revision(checkout: Path = Path(".")) -> str:
    """The last commit that changed the pipeline's code (pipeline_code: what the stages import and prompt.txt),
    -dirty when it differs from it; 'unknown' without git or dvc.yaml.

    The card names it and is publish's output, so it moves only with publish's deps (NAMES_CODE_REVISION):
    a commit of results (dvc.lock, reports), params (the card and dvc.lock give their values), tests,
    documentation, the flow or a module no stage imports leaves it, and the committed lock, as they were.
    """
    if os.environ.get(CODE_REVISION_ENV):
        return os.environ[CODE_REVISION_ENV]
    try:
        pathspec = ["--", *pipeline_code(checkout)]
        commit = subprocess.run(
            ["git", "log", "-1", "--format=%H", *pathspec], cwd=checkout, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def stage_command(folder: Path, stage: str) -> tuple[str, list[str], list[str]]:
    """(module, its arguments, the inputs other stages write) of a stage's dvc.yaml command in folder."""
    import yaml

    stages = (yaml.safe_load((folder / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise KeyError(f"{folder / 'dvc.yaml'} has no stage {stage!r}")
    written = set()
    for entry in stages.values():
        for kind in ("outs", "metrics", "plots"):
            written.update(next(iter(out)) if isinstance(out, dict) else out for out in entry.get(kind, []))
    module, inputs, _ = command_paths(stages[stage]["cmd"])
    return module, shlex.split(stages[stage]["cmd"])[3:], sorted(inputs & written)


def stage_outputs(folder: Path) -> dict[str, str | None]:
    """Each stage of folder's dvc.yaml (in its order) -> one hash of its outputs as dvc.lock records them
    (what DVC compares to skip it; None where the lock has no entry yet)."""
    import hashlib
    import json

    import yaml

    stages = (yaml.safe_load((folder / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    lock_file = folder / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text(encoding="utf-8")) if lock_file.exists() else None
    locked = (lock or {}).get("stages", {})
    hashes: dict[str, str | None] = {}
    for stage in stages:
        entry = locked.get(stage)
        outs = sorted((o["path"], o.get("md5", "")) for o in entry.get("outs", [])) if entry else None
        hashes[stage] = hashlib.sha256(json.dumps(outs).encode()).hexdigest()[:16] if outs else None
    return hashes
