from __future__ import annotations

import json

import pytest

from stages import download
from stages.config import DownloadParams, HubDatasetParams


def test_atomic_dir_leaves_nothing_when_the_block_fails(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("previous complete output")
    with pytest.raises(RuntimeError):
        with download.atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("network died")
    assert (final / "old.txt").read_text() == "previous complete output"
    assert not (final / "half.txt").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_atomic_dir_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with download.atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_paper_dataset_from_a_local_mirror_offline(tmp_path, monkeypatch):
    """The paper download path, with HF_HUB_OFFLINE=1, against a folder laid out like a Hub snapshot."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mirror = tmp_path / "mirror"
    download_dir = tmp_path / "raw"
    from stages import synthetic

    synthetic.write_vqa_dataset(mirror, rows=8, seed=1)
    download.write_source(mirror, repo_id="justairr/VQA-Verify", revision="main", commit="a" * 40)
    monkeypatch.setattr(download, "RAW_DIR", download_dir)
    params = DownloadParams(
        source="hub", hub=HubDatasetParams(repo_id="justairr/VQA-Verify", revision="main", local_mirror=str(mirror))
    )
    files = download.download_dataset(params)
    assert files == 8 + 2  # 8 images, data.jsonl, SOURCE.json
    assert (download_dir / "data.jsonl").read_text() == (mirror / "data.jsonl").read_text()
    source = json.loads((download_dir / "SOURCE.json").read_text())
    assert source == {"repo_id": "justairr/VQA-Verify", "revision": "main", "commit": "a" * 40}


def test_missing_mirror_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RAW_DIR", tmp_path / "raw")
    params = DownloadParams(
        source="hub", hub=HubDatasetParams(repo_id="x/y", revision="main", local_mirror=str(tmp_path / "nowhere"))
    )
    with pytest.raises(FileNotFoundError, match="local_mirror .*nowhere is not a folder"):
        download.download_dataset(params)
    assert not (tmp_path / "raw").exists()


def test_offline_hub_download_without_cache_fails_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(download, "RAW_DIR", tmp_path / "raw")
    params = DownloadParams(source="hub", hub=HubDatasetParams(repo_id="justairr/VQA-Verify", revision="main"))
    with pytest.raises(Exception):
        download.download_dataset(params)
    assert not (tmp_path / "raw").exists()


def test_synthetic_benchmarks_are_vlmeval_readable(tmp_path, monkeypatch):
    from stages.config import load_profile
    from stages.vlmeval_compat import build_vlmeval_dataset

    monkeypatch.setattr(download, "BENCHMARK_DIR", tmp_path / "bench")
    _, profile = load_profile(name="tiny")
    rows = download.download_benchmarks(profile.benchmarks)
    assert rows == {"SatoriTiny_MMBench": 48, "SatoriTiny_MMStar": 24}
    dataset = build_vlmeval_dataset("SatoriTiny_MMBench", tmp_path / "bench")
    assert type(dataset).__name__ == "CustomMCQDataset"
    assert len(dataset) == 48
