from __future__ import annotations

import json
import shutil

import pytest

from satori.core import files
from satori.core import hub
from satori.evaluation.benchmark_files import fetch_official_tsv
from satori.core.files import file_md5
from satori.core.config import REPO_ROOT, DownloadParams, HubDatasetParams
from stages import fetch_base_model, fetch_benchmarks, fetch_dataset


def test_atomic_dir_leaves_nothing_when_the_block_fails(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("previous complete output")
    with pytest.raises(RuntimeError):
        with files.atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("network died")
    assert (final / "old.txt").read_text() == "previous complete output"
    assert not (final / "half.txt").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_atomic_dir_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with files.atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_mirror(tmp_path, commit=COMMIT, rows=8):
    """A folder laid out like a Hub snapshot of VQA-Verify, with the manifest our download writes."""
    from satori.data import synthetic

    mirror = tmp_path / "mirror"
    synthetic.write_vqa_dataset(mirror, rows=rows, seed=1)
    files.write_source(
        mirror, repo_id="justairr/VQA-Verify", revision=commit, commit=commit, files=files.file_manifest(mirror)
    )
    return mirror


def run_fetch_dataset(use_profile, params: DownloadParams) -> dict:
    """The fetch_dataset stage, as DVC runs it, in a folder whose params.yaml holds these download params."""
    folder = use_profile("paper", download=params.model_dump())
    fetch_dataset.main(["--mirror-manifest", "m.json", "--out", "raw", "--metrics", "reports/fetch_dataset.json"])
    return json.loads((folder / "reports/fetch_dataset.json").read_text())


def hub_params(revision=COMMIT, mirror=None, repo_id="justairr/VQA-Verify"):
    return DownloadParams(
        source="hub", hub=HubDatasetParams(repo_id=repo_id, revision=revision, local_mirror=mirror and str(mirror))
    )


def test_paper_dataset_from_a_local_mirror_offline(use_profile, tmp_path, monkeypatch):
    """The paper download path, with HF_HUB_OFFLINE=1, against a folder laid out like a Hub snapshot."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mirror = make_mirror(tmp_path)
    report = run_fetch_dataset(use_profile, hub_params(mirror=mirror))
    assert report["files"] == 8 + 1  # 8 images and data.jsonl (SOURCE.json, our provenance, not counted)
    assert (tmp_path / "raw/data.jsonl").read_text() == (mirror / "data.jsonl").read_text()
    source = json.loads((tmp_path / "raw/SOURCE.json").read_text())
    assert (source["repo_id"], source["revision"], source["commit"]) == ("justairr/VQA-Verify", COMMIT, COMMIT)
    assert source["files"]["data.jsonl"] == (mirror / "data.jsonl").stat().st_size
    assert len(source["files"]) == 9


def test_a_branch_name_is_refused_with_how_to_pin(use_profile, tmp_path, monkeypatch):
    with pytest.raises(hub.DownloadError) as err:
        run_fetch_dataset(use_profile, hub_params(revision="main", mirror=make_mirror(tmp_path)))
    message = str(err.value)
    assert message.startswith("download.hub.revision: 'main' is not a commit hash")
    assert "HfApi().repo_info('justairr/VQA-Verify', repo_type='dataset', revision='main').sha" in message
    assert not (tmp_path / "raw").exists()


def test_files_missing_from_the_mirror_are_named(use_profile, tmp_path, monkeypatch):
    mirror = make_mirror(tmp_path)
    (mirror / "images/000003.png").unlink()
    (mirror / "images/000005.png").unlink()
    with pytest.raises(hub.DownloadError) as err:
        run_fetch_dataset(use_profile, hub_params(mirror=mirror))
    message = str(err.value)
    assert "lacks 2 file(s) of its manifest: images/000003.png, images/000005.png" in message
    assert f"hf download justairr/VQA-Verify --repo-type dataset --revision {COMMIT}" in message
    assert "download.hub.local_mirror: DIR" in message
    assert not (tmp_path / "raw").exists()


def test_a_mirror_of_another_commit_is_refused(use_profile, tmp_path, monkeypatch):
    mirror = make_mirror(tmp_path, commit="f" * 40)
    with pytest.raises(hub.DownloadError, match=f"holds commit {'f' * 40}, params.yaml pins {COMMIT}"):
        run_fetch_dataset(use_profile, hub_params(mirror=mirror))


def test_missing_mirror_is_a_clear_error(use_profile, tmp_path, monkeypatch):
    with pytest.raises(hub.DownloadError, match="local_mirror .*nowhere is not a folder"):
        run_fetch_dataset(use_profile, hub_params(mirror=tmp_path / "nowhere"))
    assert not (tmp_path / "raw").exists()


def test_offline_without_the_files_in_the_cache_says_how_to_fetch_them(use_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(hub.DownloadError, match="is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        run_fetch_dataset(use_profile, hub_params())
    assert not (tmp_path / "raw").exists()


def _http_error(cls, status):
    import httpx

    request = httpx.Request("GET", "https://huggingface.co/api/datasets/x")
    return cls("boom", response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    "error_class, status, sentence",
    [
        ("GatedRepoError", 403, "is gated: accept its terms at https://huggingface.co/datasets/justairr/VQA-Verify"),
        ("RepositoryNotFoundError", 404, "was not found on the Hub: check the name, or, if it is private"),
        ("RevisionNotFoundError", 404, f"revision {COMMIT} does not exist in justairr/VQA-Verify"),
        ("HfHubHTTPError", 401, "the Hub refused the token for justairr/VQA-Verify (401)"),
    ],
)
def test_hub_errors_become_one_clear_sentence(use_profile, tmp_path, monkeypatch, error_class, status, sentence):
    import huggingface_hub
    from huggingface_hub import errors

    def refuse(*args, **kwargs):
        raise _http_error(getattr(errors, error_class), status)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(hub.DownloadError) as err:
        run_fetch_dataset(use_profile, hub_params())
    assert sentence in str(err.value)


def test_transient_failures_are_retried_with_backoff_and_resume_the_partial_folder(use_profile, tmp_path, monkeypatch):
    """As snapshot_download does: an interrupted attempt leaves an incomplete file in .cache, the next one
    completes it; the output then holds the repository's files only."""
    import huggingface_hub

    calls, sleeps = [], []

    def flaky(repo_id, *, repo_type, revision, local_dir):
        calls.append(local_dir)
        incomplete = local_dir / ".cache/huggingface/download/data.jsonl.incomplete"
        if len(calls) < 3:
            incomplete.parent.mkdir(parents=True, exist_ok=True)
            with incomplete.open("a") as f:
                f.write("{}")  # half of the file
            raise _http_error(huggingface_hub.errors.HfHubHTTPError, 503)
        assert incomplete.read_text() == "{}{}"  # the earlier attempts' bytes are resumed, not refetched
        (local_dir / "data.jsonl").write_text(incomplete.read_text()[:2] + "\n")
        incomplete.unlink()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", flaky)
    monkeypatch.setattr(hub.time, "sleep", sleeps.append)
    run_fetch_dataset(use_profile, hub_params())
    assert len(calls) == 3 and sleeps == [2.0, 8.0]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["SOURCE.json", "data.jsonl"]


def test_a_partial_folder_of_another_revision_is_discarded(use_profile, tmp_path, monkeypatch):
    """A partial download of revision A must not leak into the output of revision B."""
    import huggingface_hub

    def dies(repo_id, *, repo_type, revision, local_dir):
        (local_dir / "only-in-revision-a.parquet").write_text("a")
        raise KeyboardInterrupt

    def completes(repo_id, *, repo_type, revision, local_dir):
        (local_dir / "data.jsonl").write_text("{}\n")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", dies)
    with pytest.raises(KeyboardInterrupt):
        run_fetch_dataset(use_profile, hub_params(revision="a" * 40))
    assert (tmp_path / ".raw.partial/only-in-revision-a.parquet").exists()  # kept: revision A would resume it
    monkeypatch.setattr(huggingface_hub, "snapshot_download", completes)
    run_fetch_dataset(use_profile, hub_params(revision="b" * 40))
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["SOURCE.json", "data.jsonl"]
    assert not list(tmp_path.glob(".raw.partial*"))


def test_an_interrupted_download_leaves_no_output_but_keeps_its_partial_folder(use_profile, tmp_path, monkeypatch):
    import huggingface_hub

    def dies(repo_id, *, repo_type, revision, local_dir):
        (local_dir / "half.parquet").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", dies)
    with pytest.raises(KeyboardInterrupt):
        run_fetch_dataset(use_profile, hub_params())
    assert not (tmp_path / "raw").exists()
    assert (tmp_path / ".raw.partial/half.parquet").exists()


def test_synthetic_benchmarks_are_vlmeval_readable(tmp_path, use_profile):
    from satori.evaluation.vlmeval_compat import build_vlmeval_dataset

    use_profile("tiny")
    fetch_benchmarks.main(["--mirror-manifest", "m.json", "--out", "bench", "--metrics", "bench.json"])
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    # 32 questions each; the color_cue task keeps one option order (the colour decides the letter): no rotations.
    assert rows == {"SatoriTiny_MMBench": 32, "SatoriTiny_MMStar": 32}
    dataset = build_vlmeval_dataset("SatoriTiny_MMBench", tmp_path / "bench")
    assert type(dataset).__name__ == "CustomMCQDataset"
    assert len(dataset) == 32


def test_official_benchmark_tsv_from_a_mirror_is_md5_checked(tmp_path):
    from satori.evaluation.vlmeval_compat import official_tsv

    url, md5 = official_tsv("MMStar")
    assert url.endswith("MMStar.tsv") and len(md5) == 32
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(hub.DownloadError) as err:
        fetch_official_tsv("MMStar", str(mirror), out)
    assert f"benchmarks.mirror has no MMStar.tsv (looked for {mirror / 'MMStar.tsv'})" in str(err.value)
    assert f"download {url} (md5 {md5})" in str(err.value)
    (mirror / "MMStar.tsv").write_text("index\tquestion\n1\tq\n")
    with pytest.raises(hub.DownloadError) as err:
        fetch_official_tsv("MMStar", str(mirror), out)
    actual = file_md5(mirror / "MMStar.tsv")
    assert f"has md5 {actual}, but VLMEvalKit expects {md5} for MMStar" in str(err.value)
    assert not (out / "MMStar.tsv").exists()


@pytest.mark.parametrize("name", ["MMStar", "MMMU_DEV_VAL"])
def test_official_benchmark_tsv_from_a_mirror_is_md5_checked_for_every_offline_benchmark(tmp_path, name):
    """MMMU, of the paper's table, comes from a mirror folder as MMBench and MMStar do, checked against
    VLMEvalKit's own md5 for it."""
    from satori.evaluation.vlmeval_compat import official_tsv

    url, md5 = official_tsv(name)
    assert url.endswith(f"{name}.tsv") and len(md5) == 32
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    mirror.mkdir()
    out.mkdir()
    (mirror / f"{name}.tsv").write_text("index\tquestion\n1\tq\n")
    with pytest.raises(hub.DownloadError, match=f"has md5 {file_md5(mirror / f'{name}.tsv')}, but VLMEvalKit expects {md5} for {name}"):
        fetch_official_tsv(name, str(mirror), out)


def test_official_benchmark_offline_without_a_mirror_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        hub.DownloadError, match=r"MMBench_DEV_EN.tsv is not here and HF_HUB_OFFLINE=1.*md5 [0-9a-f]{32}"
    ):
        fetch_official_tsv("MMBench_DEV_EN", None, tmp_path)


def test_paper_base_model_from_a_local_mirror_and_how_to_fetch_it(tmp_path, monkeypatch, tiny_model_dir, use_profile):
    from satori.core.config import load_profile

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _, paper = load_profile(REPO_ROOT / "params.yaml", name="paper")
    pinned = paper.base_model.model_copy(update={"revision": COMMIT})
    use_profile("paper", base_model=pinned.model_dump())
    with pytest.raises(hub.DownloadError) as err:  # neither a mirror nor the cache has it
        fetch_base_model.main(["--mirror-manifest", "m.json", "--prompt", "prompt.txt", "--out", "base"])
    assert "set base_model.local_mirror: DIR in params.yaml" in str(err.value)

    mirror = tmp_path / "mirror"
    shutil.copytree(tiny_model_dir, mirror)
    (mirror / ".cache/huggingface").mkdir(parents=True)
    (mirror / ".cache/huggingface/x.metadata").write_text("a timestamp")
    use_profile("paper", base_model=pinned.model_copy(update={"local_mirror": str(mirror)}).model_dump())
    fetch_base_model.main(["--mirror-manifest", "m.json", "--prompt", "prompt.txt", "--out", "base"])
    assert not (tmp_path / "base/.cache").exists()  # huggingface_hub's timestamped metadata is not an output
    source = json.loads((tmp_path / "base/SOURCE.json").read_text())
    assert (source["repo_id"], source["commit"]) == ("Qwen/Qwen2.5-VL-3B-Instruct", COMMIT)
    assert (tmp_path / "base/model.safetensors").read_bytes() == (mirror / "model.safetensors").read_bytes()
