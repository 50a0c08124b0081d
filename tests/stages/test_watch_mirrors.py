"""A mirror folder named in params.yaml is an input DVC watches: stages.watch_mirrors' manifests are the fetch
stages' deps, so an edit in a mirror re-runs the stage that reads it, and nothing else does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from stages import watch_mirrors
from tests.conftest import copy_checkout, pipeline_env
from tests.stages.test_fetch import hub_params, make_mirror

OUTS = {"dataset": "m/dataset.json", "base_model": "m/base_model.json", "benchmarks": "m/benchmarks.json"}


def run_watch(folder) -> dict[str, dict]:
    argv = ["--work", "w"]
    for name, path in OUTS.items():
        argv += [f"--out-{name.replace('_', '-')}", path]
    watch_mirrors.main(argv)
    return {name: json.loads((folder / path).read_text()) for name, path in OUTS.items()}


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_the_manifest_holds_each_mirrored_file_s_md5_and_follows_its_content_not_its_time(use_profile, tmp_path):
    mirror = make_mirror(tmp_path)
    (mirror / ".cache").mkdir()
    (mirror / ".cache/meta.lock").write_text("huggingface_hub's timestamps: not copied, not watched")
    folder = use_profile("paper", download=hub_params(mirror=mirror).model_dump())
    first = run_watch(folder)
    files = sorted(
        p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file() and ".cache" not in p.parts
    )
    assert first["dataset"] == {"mirror": "download.hub.local_mirror", "files": {f: md5(mirror / f) for f in files}}
    assert "SOURCE.json" in first["dataset"]["files"]  # the pinned commit the fetch checks is watched too
    # The paper profile reads its model and benchmarks from the Hub, no mirror: nothing to watch.
    assert first["base_model"] == first["benchmarks"] == {"mirror": None, "files": None}

    os.utime(mirror / "data.jsonl")  # touched, same bytes: same manifest
    assert run_watch(folder) == first
    rows = (mirror / "data.jsonl").read_text().splitlines()
    (mirror / "data.jsonl").write_text("\n".join(rows[:-1]) + "\n")  # a row removed
    edited = run_watch(folder)["dataset"]["files"]
    assert edited == {**first["dataset"]["files"], "data.jsonl": md5(mirror / "data.jsonl")}
    assert edited["data.jsonl"] != first["dataset"]["files"]["data.jsonl"]


def test_a_missing_mirror_is_recorded_for_the_fetch_stage_to_name(use_profile, tmp_path):
    folder = use_profile("paper", download=hub_params(mirror=tmp_path / "nowhere").model_dump())
    assert run_watch(folder)["dataset"] == {"mirror": "download.hub.local_mirror", "files": None}


def test_the_benchmark_mirror_is_watched_file_by_file(use_profile, tmp_path):
    mirror = tmp_path / "lmu"
    mirror.mkdir()
    (mirror / "MMStar.tsv").write_text("index\tquestion\n0\tq\n")
    (mirror / "unrelated.tsv").write_text("not read by any benchmark of the profile")
    items = [{"name": "MMBench_DEV_EN", "kind": "official"}, {"name": "MMStar", "kind": "official"}]
    folder = use_profile("paper", benchmarks={"items": items, "mirror": str(mirror)})
    watched = run_watch(folder)["benchmarks"]
    # A TSV not there yet is watched too (null), so placing it re-runs fetch_benchmarks.
    assert watched == {"mirror": "benchmarks.mirror",
                       "files": {"MMBench_DEV_EN.tsv": None, "MMStar.tsv": md5(mirror / "MMStar.tsv")}}  # fmt: skip


def test_an_unset_variable_in_a_mirror_path_is_named(use_profile, tmp_path, monkeypatch, capsys):
    from satori.stage import run_main

    monkeypatch.delenv("SATORI_NO_SUCH_MIRROR", raising=False)
    use_profile("paper", download=hub_params(mirror="$SATORI_NO_SUCH_MIRROR/VQA-Verify").model_dump())
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: run_watch(tmp_path))
    assert stop.value.code == 2
    assert "download.hub.local_mirror '$SATORI_NO_SUCH_MIRROR/VQA-Verify': SATORI_NO_SUCH_MIRROR not set" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
def test_dvc_repro_re_runs_the_fetch_of_an_edited_mirror_and_only_then(tmp_path):
    repo = copy_checkout(tmp_path / "checkout")
    mirror = make_mirror(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tiny"]["download"] = hub_params(mirror=mirror).model_dump()
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = pipeline_env(tmp_path)

    def repro() -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", "fetch_dataset"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "Running stage 'fetch_dataset'" in repro()
    untouched = repro()
    assert "Running stage 'watch_mirrors'" in untouched  # always: it is how DVC sees the mirror
    assert "Stage 'fetch_dataset' didn't change, skipping" in untouched
    rows = (mirror / "data.jsonl").read_text().splitlines()
    (mirror / "data.jsonl").write_text("\n".join(rows[:-1]) + "\n")
    assert "Running stage 'fetch_dataset'" in repro()
    assert (repo / "data/raw/data.jsonl").read_text() == (mirror / "data.jsonl").read_text()
