"""The evaluate stages check the benchmark files they are given before they load a model or write anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from satori.data import synthetic
from satori.evaluation.benchmark_files import BenchmarkFileError


@pytest.mark.parametrize("stage_name", ["evaluate_base", "evaluate"])
def test_a_broken_benchmark_file_fails_before_any_model_loads(use_profile, stage_name):
    import importlib

    use_profile("tiny")
    folder = Path("data/benchmarks")
    folder.mkdir(parents=True)
    rows = synthetic.benchmark_rows(questions=3, seed=0, circular=True, category_column="l2-category")
    synthetic.write_benchmark_tsv(folder / "SatoriTiny_MMBench.tsv", rows)
    broken = [dict(r) for r in synthetic.benchmark_rows(questions=3, seed=0, circular=False, category_column="c")]
    broken[1]["answer"] = "Z"  # no such option
    synthetic.write_benchmark_tsv(folder / "SatoriTiny_MMStar.tsv", broken)
    stage = importlib.import_module(f"stages.{stage_name}")
    argv = ["--model", "no/such/model", "--benchmarks", str(folder), "--prompt", "prompt.txt", "--work", "w",
            "--out", "out", "--metrics", "m.json"]  # fmt: skip
    if stage_name == "evaluate":
        Path("base.json").write_text("{}")
        argv += ["--base-scores", "base.json", "--out-gallery", "gallery"]
    with pytest.raises(BenchmarkFileError, match=r"SatoriTiny_MMStar.tsv: row 1 \(index '1'\), column 'answer'"):
        stage.main(argv)
    assert not any(Path(p).exists() for p in ("w", "out", "m.json", "gallery"))
    (folder / "SatoriTiny_MMStar.tsv").unlink()
    with pytest.raises(BenchmarkFileError, match="SatoriTiny_MMStar.tsv: no such benchmark file"):
        stage.main(argv)
