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
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from stages import synthetic, tracking
from stages.config import REPO_ROOT, BenchmarksParams, DownloadParams, Profile, load_profile
from stages.tiny_model import build_tiny_model
from stages.transient import report_transient

RAW_DIR = REPO_ROOT / "data" / "raw"
BASE_MODEL_DIR = REPO_ROOT / "models" / "base"
BENCHMARK_DIR = REPO_ROOT / "data" / "benchmarks"
SOURCE_FILE = "SOURCE.json"  # provenance of a downloaded folder: repo, revision, commit
METRICS_FILE = REPO_ROOT / "reports" / "download.json"


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder that replaces `final` only if the block succeeds."""
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def write_source(folder: Path, **provenance: str | None) -> None:
    (folder / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def read_source(folder: Path) -> dict:
    path = folder / SOURCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def hub_snapshot(repo_id: str, revision: str, repo_type: str, dest: Path, local_mirror: str | None) -> str:
    """Fill `dest` from a local mirror folder or the Hub at `revision`; returns the commit used."""
    if local_mirror:
        mirror = Path(local_mirror).expanduser()
        if not mirror.is_dir():
            raise FileNotFoundError(f"local_mirror {mirror} is not a folder")
        shutil.copytree(mirror, dest, dirs_exist_ok=True)
        return read_source(mirror).get("commit") or revision
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=repo_id, repo_type=repo_type, revision=revision, local_dir=dest)
    commit = _resolved_commit(repo_id, revision, repo_type)
    return commit or revision


def _resolved_commit(repo_id: str, revision: str, repo_type: str) -> str | None:
    """The commit hash a revision points at, or None offline."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, OfflineModeIsEnabled

    try:
        return HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError):
        return None


def download_dataset(params: DownloadParams) -> int:
    with atomic_dir(RAW_DIR) as out:
        if params.source == "synthetic":
            synthetic.write_vqa_dataset(out, rows=params.synthetic.rows, seed=params.synthetic.seed)
            write_source(out, repo_id="synthetic", revision=f"seed-{params.synthetic.seed}", commit=None)
        else:
            hub = params.hub
            commit = hub_snapshot(hub.repo_id, hub.revision, "dataset", out, hub.local_mirror)
            write_source(out, repo_id=hub.repo_id, revision=hub.revision, commit=commit)
    return sum(1 for p in RAW_DIR.rglob("*") if p.is_file())


def download_base_model(profile: Profile) -> None:
    params = profile.base_model
    with atomic_dir(BASE_MODEL_DIR) as out:
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
            commit = hub_snapshot(params.repo_id, params.revision, "model", out, None)
            write_source(out, repo_id=params.repo_id, revision=params.revision, commit=commit)


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


def _fetch_official_tsv(name: str, mirror: str | None, out: Path) -> None:
    """Copy an official TSV from the mirror folder, or let VLMEvalKit download (and md5-check) it."""
    if mirror:
        source = Path(mirror).expanduser() / f"{name}.tsv"
        if not source.exists():
            raise FileNotFoundError(f"benchmarks.mirror has no {source.name}: expected {source}")
        shutil.copy2(source, out / f"{name}.tsv")
        return
    from stages.vlmeval_compat import build_vlmeval_dataset

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
        metrics = {"raw_files": files, **{f"benchmark_rows.{k}": v for k, v in bench_rows.items()}}
        METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
        METRICS_FILE.write_text(json.dumps({**metrics, "source": source}, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics(metrics)
        tracking.log_artifact(METRICS_FILE)


if __name__ == "__main__":
    main()
