"""Rehearse the GPU machine on this one: run the GPU check's CPU mode where Python sees only that machine's
packages plus the GPU bundle, so a package missing from the bundle fails here, not in a GPU session.

    python -m benchmarks.gpu_rehearsal --folder .runs/gpu_rehearsal

The environment: a bare venv (no site-packages of its own) whose PYTHONPATH holds
- gpu_machine/: links to the installed packages of this interpreter that the GPU machine also has
  (../shared/gpu-machine/packages.txt; torch is the same cu130 build, run on the CPU), none of the bundle's;
- bundle/: the bundle's wheels for this Python, installed as on the GPU machine
  (`pip install --no-index --no-deps --target`);
- the checkout (the tree travels with the check).
This machine has no CPU build of torch for CPython 3.12, so the rehearsal runs this interpreter's version
(3.11) with the bundle's wheels built for it; the same pins are fetched for 3.12 by `make gpu-bundle`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_bundle import download, pinned
from satori.core.config import REPO_ROOT

GPU_MACHINE_PACKAGES = REPO_ROOT.parent / "shared" / "gpu-machine" / "packages.txt"


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def gpu_machine_names(path: Path = GPU_MACHINE_PACKAGES) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {normalized(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def link_gpu_machine_packages(dest: Path, allowed: set[str]) -> list[str]:
    """Link every installed distribution named in `allowed` (its top-level files and its metadata) into dest."""
    dest.mkdir(parents=True)
    linked = []
    for dist in importlib.metadata.distributions():
        name = normalized(dist.metadata["Name"])
        if name not in allowed or not dist.files:
            continue
        site = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files if not str(f).startswith("..")}
        for top in sorted(tops):
            source, target = site / top, dest / top
            if source.exists() and not target.exists() and top != "__pycache__":
                target.symlink_to(source)
        linked.append(name)
    return sorted(linked)


def build(folder: Path) -> tuple[Path, dict[str, str]]:
    """The rehearsal's interpreter and environment, built afresh in folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bundle_names = {normalized(req.split("==")[0]) for req in pinned()}
    linked = link_gpu_machine_packages(folder / "gpu_machine", gpu_machine_names() - bundle_names)
    print(f"[rehearsal] {len(linked)} of the GPU machine's packages linked from {sys.prefix}", flush=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = download(folder / "wheels", version)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target",
         str(folder / "bundle"), *map(str, wheels)],
        check=True,
    )  # fmt: skip
    print(f"[rehearsal] {len(wheels)} bundle wheels installed with --no-deps", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True)
    env = {
        "PATH": f"{folder / 'venv' / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(folder),
        "PYTHONPATH": os.pathsep.join(str(p) for p in (folder / "bundle", folder / "gpu_machine", REPO_ROOT)),
        "HF_HUB_OFFLINE": "1",
        "PYTHONNOUSERSITE": "1",
    }
    return folder / "venv" / "bin" / "python", env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / ".runs" / "gpu_rehearsal")
    parser.add_argument("--cycles", type=int, default=2)
    args = parser.parse_args()
    python, env = build(args.folder)
    env["OUT"] = str(args.folder / "out")
    check = [str(python), "-m", "benchmarks.gpu_check", "--cpu", "--cycles", str(args.cycles),
             "--folder", str(args.folder / "check"), "--questions", "16"]  # fmt: skip
    subprocess.run(check, cwd=REPO_ROOT, env=env, check=True)


if __name__ == "__main__":
    main()
