"""The walls between the library's packages (pyproject.toml's [tool.importlinter] contracts) hold, and they can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from satori.core.config import REPO_ROOT
from satori.core.lineage import imported_modules, module_file

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(checkout: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # this checkout's packages, not the installed ones
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=checkout, env=env, capture_output=True, text=True)


def test_every_import_contract_is_kept():
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_core_module_that_imports_training_breaks_the_layers(tmp_path):
    for folder in ("satori", "stages", "flows"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    files = tmp_path / "satori/core/files.py"
    files.write_text(files.read_text() + "\nfrom satori.training import export  # noqa: E402\n")
    gallery = tmp_path / "satori/rewards/gallery.py"
    gallery.write_text(gallery.read_text() + "\nimport swift.rewards  # noqa: E402\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "2 broken" in done.stdout, done.stdout
    assert "satori.core.files -> satori.training.export" in done.stdout


def test_no_module_of_the_project_is_in_an_import_circle():
    """Imports inside functions count (satori.core.lineage.imported_modules): a lazy import is still a wall."""
    graph: dict[str, set[str]] = {}
    for folder in ("satori", "stages"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
            targets = {m for m in imported_modules(path) if (f := module_file(REPO_ROOT, m)) and f.name != "__init__.py"}
            graph[name] = targets - {name}
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [module, target] if target in path else [module, target])
            elif target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert len(graph) > 40 and circles == []


def test_the_test_modules_on_the_shared_pipeline_run_go_to_one_process():
    """tests/conftest.py's scheduler sends PIPELINE_RUN_MODULES to one xdist process: they must be exactly the
    modules whose tests or fixtures take the session's pipeline_run, or the run is made twice (or a test waits)."""
    import ast

    from tests.conftest import PIPELINE_RUN_MODULES

    users = set()
    for path in (REPO_ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "pipeline_run" in {a.arg for a in node.args.args}:
                users.add(path.relative_to(REPO_ROOT).as_posix())
    assert sorted(users) == sorted(PIPELINE_RUN_MODULES)
