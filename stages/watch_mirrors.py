"""Stage: what the mirror folders the fetch stages read hold, one manifest (file -> md5) per fetch stage.

DVC cannot take a folder named in params.yaml as a dependency, so this stage runs on every `dvc repro`
(`always_changed` in dvc.yaml) and each fetch stage depends on its manifest: an edit in a mirror
re-runs the stage that reads it, and an untouched mirror leaves it skipped. A fetch stage that reads
no mirror (synthetic data, the tiny model, the Hub itself) gets a manifest that says so. The manifest
holds no folder path, so the same files in another place are the same input.

python -m stages.watch_mirrors --work .work/watch_mirrors --out-dataset data/mirrors/dataset.json
    --out-base-model data/mirrors/base_model.json --out-benchmarks data/mirrors/benchmarks.json
"""

from __future__ import annotations

from pathlib import Path

from satori import tracking
from satori.evaluation.benchmark_files import mirrored_tsv
from satori.core.files import content_digests, write_json
from satori.core.hub import mirror_path, mirrored_files
from satori.stage import Stage, run_main

READS = ("download", "base_model", "benchmarks")
NO_MIRROR = {"mirror": None, "files": None}  # the fetch stage reads no mirror


def manifest(param: str, files: dict[str, Path] | None, state_file: Path) -> dict:
    """{"mirror": the param naming it, "files": name -> md5 (null: no such folder, the fetch stage says so)}."""
    present = {name: path for name, path in (files or {}).items() if path.is_file()}
    if files is not None:
        tracking.say(f"{param}: {len(present)} of {len(files)} file(s) present")
    digests = content_digests(present, state_file)
    return {"mirror": param, "files": {name: digests.get(name) for name in files} if files is not None else None}


def main(argv: list[str] | None = None) -> None:
    stage = Stage(
        __file__,
        __doc__,
        argv,
        READS,
        work="the md5 of each mirror file by size and modification time, so an unchanged file is not read again",
        out_dataset="",
        out_base_model="",
        out_benchmarks="",
    )
    args = stage.args
    download, base_model, benchmarks = (stage.read(section) for section in READS)
    state = args.work / "digests.json"
    # No MLflow run: this stage runs on every repro, and what it finds shows as the fetch stages it re-runs.
    hub_mirrors = {
        args.out_dataset: ("download.hub.local_mirror", download.source == "hub" and download.hub.local_mirror),
        args.out_base_model: ("base_model.local_mirror", base_model.source == "hub" and base_model.local_mirror),
    }
    for out, (param, mirror) in hub_mirrors.items():
        folder = mirror_path(mirror, param) if mirror else None
        files = mirrored_files(folder) if folder and folder.is_dir() else None
        write_json(out, manifest(param, files, state) if folder else NO_MIRROR)
    official = [spec.name for spec in benchmarks.items if spec.kind == "official"]
    if benchmarks.mirror and official:
        tsvs = {f"{name}.tsv": mirrored_tsv(benchmarks.mirror, name) for name in official}
        write_json(args.out_benchmarks, manifest("benchmarks.mirror", tsvs, state))
    else:
        write_json(args.out_benchmarks, NO_MIRROR)


if __name__ == "__main__":
    run_main(main)
