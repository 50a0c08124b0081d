"""benchmarks/cpu_numerics.py at smoke size: both modes run, each with the CPU code paths it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import cpu_numerics

pytestmark = pytest.mark.slow


def machine_capability() -> str:
    """The kernels torch picks by itself on this CPU, from its flags (torch's AVX512 needs F, BW, VL and DQ)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(next(line for line in lines if line.startswith("flags")).split())
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    return "AVX2" if "avx2" in flags else "DEFAULT"


def test_the_pinning_benchmark_times_both_modes_with_their_own_kernels(capsys):
    result = cpu_numerics.main(["--steps", "1", "--questions", "1", "--rounds", "1"])
    (pinned,), (native,) = result["runs"]["pinned"], result["runs"]["native"]
    assert (pinned["capability"], pinned["threads"]) == ("AVX2", 1)
    assert native["capability"] == machine_capability()
    for run in (pinned, native):
        assert run["warmup_s"] > 0 and run["generate_s"] > 0
    assert "| pinned / native |" in capsys.readouterr().out
