"""dvc.yaml is the map of the pipeline: its deps and outs are exactly what the stages' code and commands read and write."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.dvc_graph import pipeline_stages
from satori.core.config import REPO_ROOT
from satori.core.lineage import NAMES_CODE_REVISION, code_closure, command_paths, imported_modules, pipeline_code
from satori.core.reward_registry import REWARD_LABELS
from satori.stage import WHOLE_PROFILE

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())


def declared(entries) -> set[str]:
    """Paths of a deps/outs/metrics/plots list (entries are strings or {path: options})."""
    return {e if isinstance(e, str) else next(iter(e)) for e in entries or []}


@pytest.mark.parametrize("stage", list(DVC_YAML["stages"]))
def test_deps_are_exactly_the_code_it_imports_and_the_paths_it_reads(stage):
    spec = DVC_YAML["stages"][stage]
    module, inputs, _ = command_paths(" ".join(spec["cmd"].split()))
    expected = code_closure(REPO_ROOT, module) | inputs
    if stage == NAMES_CODE_REVISION:  # its card names the code revision: every stage's code decides it
        expected |= set(pipeline_code(REPO_ROOT))
    deps = declared(spec["deps"])
    assert sorted(deps - expected) == [], f"{stage}: deps nothing reads"
    assert sorted(expected - deps) == [], f"{stage}: read but not a dep (DVC would not re-run it on a change)"
    for path in inputs:  # every input is some stage's output (or a file in git)
        produced = any(path in declared(s.get("outs")) | declared(s.get("metrics")) | declared(s.get("plots"))
                       for s in DVC_YAML["stages"].values())  # fmt: skip
        assert produced or (REPO_ROOT / path).is_file(), f"{stage} reads {path}, which nothing produces"


@pytest.mark.parametrize("stage", list(DVC_YAML["stages"]))
def test_outs_are_exactly_the_paths_it_writes(stage):
    spec = DVC_YAML["stages"][stage]
    _, _, outputs = command_paths(" ".join(spec["cmd"].split()))
    written = declared(spec.get("outs")) | declared(spec.get("metrics")) | declared(spec.get("plots"))
    assert written == outputs


def test_no_stage_imports_another_and_the_library_imports_no_stage():
    for path in sorted((REPO_ROOT / "stages").glob("*.py")):
        assert not {m for m in imported_modules(path) if m.startswith("stages")}, path.name
    for path in sorted((REPO_ROOT / "satori").glob("*.py")):
        assert not {m for m in imported_modules(path) if m.startswith("stages")}, path.name


def test_every_stage_module_is_a_dvc_stage_and_the_flow_runs_them_in_order():
    modules = {p.stem for p in (REPO_ROOT / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules == set(DVC_YAML["stages"])
    stages = pipeline_stages(REPO_ROOT)
    assert [name for name, _ in stages] == list(DVC_YAML["stages"])  # dvc.yaml lists them in an order they can run
    # The stages that reach the Hub (or a mirror of it) are the ones the flow retries.
    assert {name for name, network in stages if network} == {"fetch_dataset", "fetch_base_model", "fetch_benchmarks",
                                                             "publish"}  # fmt: skip


def declared_reads(stage: str) -> tuple[str, ...]:
    import importlib

    return importlib.import_module(f"stages.{stage}").READS


@pytest.mark.parametrize("stage", list(DVC_YAML["stages"]))
def test_params_are_exactly_what_the_stage_declares_it_reads(stage):
    reads = declared_reads(stage)
    expected = ["profile", *("${profile}" if r == WHOLE_PROFILE else f"${{profile}}.{r}" for r in reads)]
    assert DVC_YAML["stages"][stage]["params"] == expected


def test_the_reward_plot_draws_every_registered_reward():
    (plot,) = [p for p in DVC_YAML["plots"] if isinstance(p, dict) and "reports/train_rewards.csv" in p]
    assert plot["reports/train_rewards.csv"]["y"] == ["reward", *REWARD_LABELS.values()]


def test_stages_name_no_path_of_their_own():
    """Each path is written once, in dvc.yaml: a stage takes every path from its command line."""
    import re

    for path in sorted((REPO_ROOT / "stages").glob("*.py")):
        code = path.read_text()
        assert "REPO_ROOT" not in code, path.name
        # A string literal that looks like a project data path (data/..., models/..., reports/..., publish/...).
        literals = re.findall(r"[\"'](?:data|models|reports|publish)/[\w./-]*[\"']", code.split('"""', 2)[-1])
        assert literals == [], f"{path.name} names {literals}"


def test_the_lineage_helpers_see_imports_inside_functions(tmp_path: Path):
    (tmp_path / "satori").mkdir()
    (tmp_path / "satori/a.py").write_text("def f():\n    from satori import b\n")
    (tmp_path / "satori/b.py").write_text("import json\n")
    assert code_closure(tmp_path, "satori.a") == {"satori/a.py", "satori/b.py"}
    assert command_paths("python -m stages.x --raw data/raw --work .w --out o --metrics m.json") == (
        "stages.x", {"data/raw"}, {"o", "m.json"}
    )


def test_infrastructure_is_reached_only_through_its_recording_api():
    """satori.core.lineage.INFRASTRUCTURE leaves tracking out of every stage's code: honest only if no other module
    can get a value from it that an output could be made of. Other modules import it as a module and use only
    the names it declares, and those exist."""
    import ast
    import importlib

    from satori.core.lineage import INFRASTRUCTURE, is_infrastructure

    for module, api in INFRASTRUCTURE.items():
        missing = [name for name in api if not hasattr(importlib.import_module(module), name)]
        assert missing == [], f"{module} has no {missing}"
    # The stages' code: what the infrastructure must not feed. (Other modules, the flow's, may use it freely.)
    checked = 0
    for rel in [f for f in pipeline_code(REPO_ROOT) if f.endswith(".py")]:
        path = REPO_ROOT / rel
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}  # local name -> infrastructure module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and is_infrastructure(node.module):
                raise AssertionError(f"{rel}: `from {node.module} import ...`; use the module, `{node.module}.NAME`")
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    if f"{node.module}.{alias.name}" in INFRASTRUCTURE:
                        aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if isinstance(node, ast.Import):
                assert not any(is_infrastructure(a.name) for a in node.names), f"{rel}: `import` it as `from satori import`"
        if not aliases:
            continue
        checked += 1
        used_as_module = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                module = aliases[node.value.id]
                assert node.attr in INFRASTRUCTURE[module], f"{rel}:{node.lineno} uses {module}.{node.attr}, not declared"
            if isinstance(node, ast.Name) and node.id in aliases and isinstance(node.ctx, ast.Load):
                assert id(node) in used_as_module, f"{rel}:{node.lineno} passes the module {aliases[node.id]} around"
    assert checked >= 10  # the stages and the library modules that record


# One module of each kind, and the stages whose code it is (what `dvc status` says an edit to it re-runs).
# publish is among them for any stage's code: its card names the code revision (satori.core.lineage.code_revision).
EDITS = {
    "MLflow tracking and the console's lines": ("satori/tracking/records.py", set()),
    "MLflow runs": ("satori/tracking/runs.py", set()),
    "the flow": ("flows/pipeline.py", set()),
    "the console's tables": ("satori/reports/results.py", set()),
    "evaluation": ("satori/evaluation/run.py", {"evaluate_base", "evaluate", "publish"}),
    "how evaluation words its rules": ("satori/evaluation/scoring.py", {"evaluate_base", "evaluate", "publish"}),
    "publishing": ("satori/publishing/card.py", {"publish"}),
    # publish's card names the revision of every stage's code
    "the rewards ms-swift computes": ("satori/rewards/plugin.py", {"train", "publish"}),
    # evaluate's gallery draws the boxes its answers give, read as the rewards read them
    "how a completion is read": ("satori/rewards/completion.py", {"train", "evaluate", "publish"}),
    "the params": ("params.yaml", set()),  # edited outside every profile's sections: nothing reads it
}


def test_an_edit_re_runs_only_the_stages_whose_code_it_is_and_a_killed_run_still_resumes(tmp_path):
    """In a copy whose dvc.lock is current (placeholder outputs, `dvc commit`), each edit is seen by `dvc status`
    in exactly the stages listed; train's run key (which a killed run resumes under) moves only with train's code."""
    import json
    import subprocess
    import sys

    from tests.conftest import copy_checkout

    repo = copy_checkout(tmp_path / "checkout")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    for entry in DVC_YAML["stages"].values():  # every output present, so that `dvc commit` records each stage
        for out in declared(entry.get("outs")) | declared(entry.get("metrics")) | declared(entry.get("plots")):
            (repo / out).parent.mkdir(parents=True, exist_ok=True)
            (repo / out).write_text("placeholder\n")
    subprocess.run([*dvc, "commit", "--force", "--quiet"], cwd=repo, check=True, capture_output=True)
    key = [sys.executable, "-c", "from satori.training.checkpoints import files_digest, run_code; print(files_digest(run_code()))"]

    def status() -> dict[str, list[str]]:
        """stage -> the deps `dvc status` says changed (watch_mirrors is always changed by design: left out)."""
        out = json.loads(subprocess.run([*dvc, "status", "--json"], cwd=repo, check=True, capture_output=True,
                                        text=True).stdout or "{}")  # fmt: skip
        changed = {}
        for stage, entries in out.items():
            deps = [p for e in entries if isinstance(e, dict) for p in e.get("changed deps", {})]
            if deps and stage != "watch_mirrors":
                changed[stage] = deps
        return changed

    assert status() == {}
    key_before = subprocess.run(key, cwd=repo, check=True, capture_output=True, text=True).stdout
    for kind, (rel, stages) in EDITS.items():
        original = (repo / rel).read_text()
        (repo / rel).write_text(original + "\n# an edit\n")
        changed = status()
        assert set(changed) == stages, f"an edit to {kind} ({rel}) re-runs {sorted(changed)}, not {sorted(stages)}"
        assert all(deps == [rel] for deps in changed.values()), changed
        key_after = subprocess.run(key, cwd=repo, check=True, capture_output=True, text=True).stdout
        assert (key_after != key_before) == ("train" in stages and rel != "params.yaml"), f"train's run key, {kind}"
        (repo / rel).write_text(original)


def test_the_plugins_ms_swift_loads_by_path_count_as_train_s_code():
    from satori.core.lineage import LOADED_BY_PATH, module_file
    from satori.training import swift_cli

    assert LOADED_BY_PATH["satori.training.swift_cli"] == (
        "satori.training.swift_no_remote_code", "satori.rewards.plugin", "satori.training.swift_template"
    )
    assert swift_cli.NO_REMOTE_CODE_PLUGIN.resolve() == module_file(REPO_ROOT, "satori.training.swift_no_remote_code").resolve()
    assert swift_cli.REWARD_PLUGIN.resolve() == module_file(REPO_ROOT, "satori.rewards.plugin").resolve()
    assert swift_cli.TEMPLATE_PLUGIN.resolve() == module_file(REPO_ROOT, "satori.training.swift_template").resolve()
    assert {"satori/rewards/plugin.py", "satori/training/swift_template.py"} <= code_closure(REPO_ROOT, "stages.train")
