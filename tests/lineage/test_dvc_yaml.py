"""dvc.yaml is the map of the pipeline: its deps and outs are exactly what the stages' code and commands read and write."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flows.pipeline import pipeline_stages
from satori.config import REPO_ROOT
from satori.lineage import code_closure, command_paths, imported_modules
from satori.reward_registry import REWARD_NAMES
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
    assert plot["reports/train_rewards.csv"]["y"] == ["reward", *REWARD_NAMES]


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
