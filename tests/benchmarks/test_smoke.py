"""Every benchmark script runs at a smoke size in CI, so none can break unseen (its numbers at full size are
measured by hand and written in the README)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from satori.core.config import REPO_ROOT


def run(*args: str, timeout: int = 600) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


@pytest.mark.slow
def test_the_preprocessing_benchmark_keeps_the_same_rows_in_every_mode():
    out = run("benchmarks.preprocess", "--rows", "120", "--images", "10")
    rows = re.findall(r"^(ours \(full decode, cached\)|header only \(no decode\)|full decode, every row)\s+(\d+)\s+(\d+)",
                      out, re.M)  # fmt: skip
    assert [(name, int(total)) for name, total, _ in rows] == [
        ("ours (full decode, cached)", 120), ("header only (no decode)", 120), ("full decode, every row", 120)
    ]  # fmt: skip
    kept = {name: int(k) for name, _, k in rows}
    assert 100 < kept["ours (full decode, cached)"] == kept["full decode, every row"] < 120  # bad rows set aside
    assert "same rows kept as every-row decoding: True" in out


def test_the_reward_benchmark_agrees_with_the_straightforward_rewards():
    out = run("benchmarks.rewards", "--n", "100")
    rows = re.findall(r"^(format \(paper\)|bbox \(paper\)|bbox \(corrected\)|vqa \(paper\)|caption)\s.*?\s(\S+)$", out, re.M)
    assert [name for name, _ in rows] == ["format (paper)", "bbox (paper)", "bbox (corrected)", "vqa (paper)", "caption"]
    assert all(float(diff) < 1e-9 for _, diff in rows)  # the largest difference between the two versions' values


def test_the_throughput_benchmarks_run_on_the_tiny_model(tiny_model_dir):
    out = run("benchmarks.rollout_throughput", "--model", str(tiny_model_dir), "--tokens", "4", "--repeats", "1")
    assert re.search(r"^seed\s+\d+\s+4\s", out, re.M) and re.search(r"^fast\s+\d+\s+4\s", out, re.M)
    out = run("benchmarks.eval_throughput", "--model", str(tiny_model_dir), "--questions", "4", "--batch-size", "2",
              "--max-new-tokens", "4")  # fmt: skip
    assert "identical completions 4/4" in out  # batching changes the speed, not the answers


def test_every_benchmark_script_is_run_by_a_test():
    """A script in benchmarks/ (one with a __main__) that no test runs would rot unseen."""
    tests = "\n".join(p.read_text() for p in (REPO_ROOT / "tests").rglob("*.py"))
    scripts = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text())
    assert len(scripts) >= 8
    # Run as `python -m benchmarks.NAME`, or imported and called (cpu_numerics.main, gpu_bundle.download, ...).
    unrun = [s for s in scripts
             if not re.search(rf'"benchmarks\.{s}"|^\s*from benchmarks import [\w, ]*\b{s}\b|^\s*from benchmarks\.{s} import',
                              tests, re.M)]  # fmt: skip
    assert unrun == []
