"""Stage 1, download: the dataset, the base model and the benchmark TSVs.

tiny:  writes the synthetic VQA-Verify-shaped dataset, builds the tiny model and
       writes the synthetic MMBench/MMStar-shaped TSVs, all from seeds.
paper: snapshot_download of the dataset and the base model at pinned revisions
       (or a local mirror / the local HF cache when offline), and the official
       benchmark TSVs from a mirror folder or VLMEvalKit's own download.

Every output is written to a temporary sibling and renamed into place at the
end, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from stages import synthetic, tracking
from stages.config import REPO_ROOT, BenchmarksParams, DownloadParams, Profile, load_profile
from stages.tiny_model import build_tiny_model
from stages.transient import is_transient, report_transient

RAW_DIR = REPO_ROOT / "data" / "raw"
BASE_MODEL_DIR = REPO_ROOT / "models" / "base"
BENCHMARK_DIR = REPO_ROOT / "data" / "benchmarks"
SOURCE_FILE = "SOURCE.json"  # provenance of a downloaded folder: repo, revision, commit
METRICS_FILE = REPO_ROOT / "reports" / "download.json"


COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
DOWNLOAD_ATTEMPTS = 4  # then the stage fails, marked transient, and Prefect's own retries take over
FIRST_RETRY_DELAY_S = 2.0


class DownloadError(RuntimeError):
    """A download that cannot succeed as configured; the message says what to do."""


@contextlib.contextmanager
def atomic_dir(final: Path, *, resume: bool = False) -> Iterator[Path]:
    """A temporary sibling folder that replaces `final` only if the block succeeds.

    On failure it is deleted, unless `resume`: then it is kept (hidden, git-ignored) and the next
    attempt starts from what it holds, which is how an interrupted Hub download resumes.
    """
    tmp = final.with_name(f".{final.name}.partial")
    if not resume:
        shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        if not resume:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def write_source(folder: Path, **provenance) -> None:
    (folder / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def read_source(folder: Path) -> dict:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def file_manifest(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under folder (huggingface_hub's .cache metadata excluded)."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != SOURCE_FILE and ".cache" not in p.relative_to(folder).parts
    }


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, at call time (tests and flows set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def require_pinned(repo_id: str, revision: str, repo_type: str, param: str) -> None:
    """Refuse a branch or tag: it moves, and a rerun would silently train on other data."""
    if COMMIT_HASH.fullmatch(revision):
        return
    lookup = f"HfApi().repo_info('{repo_id}', repo_type='{repo_type}', revision='{revision}').sha"
    raise DownloadError(
        f"{param}: {revision!r} is not a commit hash. A branch or tag moves, so the run would not be "
        f"reproducible. Pin it: on a machine with Hub access run "
        f'`python -c "from huggingface_hub import HfApi; print({lookup})"` and put the 40-character '
        f"hash in params.yaml."
    )


def hub_snapshot(repo_id: str, revision: str, repo_type: str, dest: Path, local_mirror: str | None, param: str) -> dict:
    """Fill `dest` with the repo at a pinned commit, from a mirror folder, the local cache or the Hub.

    Returns the provenance written to SOURCE.json: repo, revision, commit and the file manifest.
    """
    require_pinned(repo_id, revision, repo_type, param)
    fetch = (
        f"On a machine with access: `hf download {repo_id} --repo-type {repo_type} --revision {revision} "
        f"--local-dir DIR`, copy DIR here and set {param.rsplit('.', 1)[0]}.local_mirror: DIR in params.yaml."
    )
    if local_mirror:
        _copy_mirror(Path(local_mirror).expanduser(), dest, revision, fetch)
    elif hub_offline():
        _copy_from_cache(repo_id, revision, repo_type, dest, fetch)
    else:
        _download(repo_id, revision, repo_type, dest)
    return {"repo_id": repo_id, "revision": revision, "commit": revision, "files": file_manifest(dest)}


def _copy_mirror(mirror: Path, dest: Path, revision: str, fetch: str) -> None:
    if not mirror.is_dir():
        raise DownloadError(f"local_mirror {mirror} is not a folder. {fetch}")
    source = read_source(mirror)
    if source.get("commit") and source["commit"] != revision:
        raise DownloadError(f"local_mirror {mirror} holds commit {source['commit']}, params.yaml pins {revision}")
    expected = source.get("files") or {}
    missing = sorted(name for name in expected if not (mirror / name).is_file())
    if missing:
        listed = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DownloadError(f"local_mirror {mirror} lacks {len(missing)} file(s) of its manifest: {listed}. {fetch}")
    shutil.copytree(mirror, dest, dirs_exist_ok=True)


def _copy_from_cache(repo_id: str, revision: str, repo_type: str, dest: Path, fetch: str) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise DownloadError(
            f"{repo_id}@{revision} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading it. {fetch}"
        ) from None
    shutil.copytree(cached, dest, dirs_exist_ok=True)


def _download(repo_id: str, revision: str, repo_type: str, dest: Path) -> None:
    """snapshot_download into dest (resuming what an earlier attempt left), retried with backoff."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    for attempt in range(DOWNLOAD_ATTEMPTS):
        try:
            snapshot_download(repo_id, repo_type=repo_type, revision=revision, local_dir=dest)
            return
        except GatedRepoError:
            raise DownloadError(
                f"{repo_id} is gated: accept its terms at {page} with your account, then give that account's "
                f"token (HF_TOKEN or `hf auth login`)"
            ) from None
        except RepositoryNotFoundError:
            raise DownloadError(
                f"{repo_id} was not found on the Hub: check the name, or, if it is private, give a token that "
                f"can read it (HF_TOKEN or `hf auth login`)"
            ) from None
        except RevisionNotFoundError:
            raise DownloadError(f"revision {revision} does not exist in {repo_id} ({page}/commits/main)") from None
        except HfHubHTTPError as err:
            if getattr(err.response, "status_code", None) == 401:
                raise DownloadError(
                    f"the Hub refused the token for {repo_id} (401): renew it (HF_TOKEN or `hf auth login`)"
                ) from None
            if not is_transient(err) or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise
        except Exception as err:
            if not is_transient(err) or attempt == DOWNLOAD_ATTEMPTS - 1:
                raise
        delay = FIRST_RETRY_DELAY_S * 4**attempt
        print(f"download of {repo_id} failed transiently; retry {attempt + 1} in {delay:.0f} s", flush=True)
        time.sleep(delay)


def download_dataset(params: DownloadParams) -> int:
    with atomic_dir(RAW_DIR, resume=params.source == "hub") as out:
        if params.source == "synthetic":
            synthetic.write_vqa_dataset(out, rows=params.synthetic.rows, seed=params.synthetic.seed)
            write_source(out, repo_id="synthetic", revision=f"seed-{params.synthetic.seed}", commit=None)
        else:
            hub = params.hub
            source = hub_snapshot(hub.repo_id, hub.revision, "dataset", out, hub.local_mirror, "download.hub.revision")
            write_source(out, **source)
    return sum(1 for p in RAW_DIR.rglob("*") if p.is_file())


def download_base_model(profile: Profile) -> None:
    params = profile.base_model
    with atomic_dir(BASE_MODEL_DIR, resume=params.source == "hub") as out:
        if params.source == "tiny":
            tiny, vision = params.tiny, profile.vision
            losses = build_tiny_model(
                out,
                seed=tiny.seed,
                hidden_size=tiny.hidden_size,
                num_layers=tiny.num_layers,
                bpe_vocab_size=tiny.bpe_vocab_size,
                min_pixels=profile.vision.min_pixels,
                max_pixels=profile.vision.max_pixels,
                corpus=synthetic.tokenizer_corpus(),
                warmup_examples=synthetic.warmup_examples(tiny.warmup_examples, tiny.seed, vision.seen_size),
                warmup_steps=tiny.warmup_steps,
                warmup_batch_size=tiny.warmup_batch_size,
                warmup_lr=tiny.warmup_lr,
            )
            tracking.log_metrics({"tiny_model.warmup_final_loss": losses[-1]} if losses else {})
            write_source(out, repo_id="tiny-qwen2.5-vl", revision=f"seed-{tiny.seed}", commit=None)
        else:
            source = hub_snapshot(
                params.repo_id, params.revision, "model", out, params.local_mirror, "base_model.revision"
            )
            write_source(out, **source)


def download_benchmarks(params: BenchmarksParams) -> dict[str, int]:
    rows: dict[str, int] = {}
    with atomic_dir(BENCHMARK_DIR) as out:
        for spec in params.items:
            tsv = out / f"{spec.name}.tsv"
            if spec.kind == "official":
                _fetch_official_tsv(spec.name, params.mirror, out)
                import pandas as pd

                rows[spec.name] = len(pd.read_csv(tsv, sep="\t", usecols=["index"]))
                continue
            bench_rows = synthetic.benchmark_rows(
                questions=spec.questions,
                seed=spec.seed,
                circular=spec.kind == "synthetic_mmbench",
                category_column="l2-category" if spec.kind == "synthetic_mmbench" else "l2_category",
            )
            synthetic.write_benchmark_tsv(tsv, bench_rows)
            rows[spec.name] = len(bench_rows)
    return rows


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_official_tsv(name: str, mirror: str | None, out: Path) -> None:
    """The official TSV with VLMEvalKit's md5, from the mirror folder, else through VLMEvalKit's download.

    VLMEvalKit silently re-downloads a TSV whose md5 differs from the one it holds, and fails
    obscurely offline; this says which file, which md5 and where to get it instead.
    """
    from stages.vlmeval_compat import build_vlmeval_dataset, official_tsv

    url, md5 = official_tsv(name)
    get_it = f"download {url} (md5 {md5}) on a machine with access, into the folder set as benchmarks.mirror"
    if mirror:
        source = Path(mirror).expanduser() / f"{name}.tsv"
        if not source.is_file():
            raise DownloadError(f"benchmarks.mirror has no {source.name} (looked for {source}): {get_it}")
        actual = file_md5(source)
        if md5 and actual != md5:
            raise DownloadError(
                f"{source} has md5 {actual}, but VLMEvalKit expects {md5} for {name} (it would try to re-download "
                f"it): {get_it}"
            )
        shutil.copy2(source, out / f"{name}.tsv")
        return
    if hub_offline():
        raise DownloadError(f"{name}.tsv is not here and HF_HUB_OFFLINE=1 forbids downloading it: {get_it}")
    build_vlmeval_dataset(name, data_root=out)


@report_transient
def main() -> None:
    name, profile = load_profile()
    logged = {section: getattr(profile, section).model_dump() for section in ("download", "base_model", "benchmarks")}
    with tracking.stage_run("download", profile.mlflow_experiment, name, logged):
        files = download_dataset(profile.download)
        download_base_model(profile)
        bench_rows = download_benchmarks(profile.benchmarks)
        source = read_source(RAW_DIR)
        metrics = {"raw_files": files, "benchmark_rows": bench_rows}
        METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
        METRICS_FILE.write_text(json.dumps({**metrics, "source": source}, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics(metrics)
        tracking.log_artifact(METRICS_FILE)


if __name__ == "__main__":
    main()
