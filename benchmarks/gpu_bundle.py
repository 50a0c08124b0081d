"""Download the GPU bundle: the wheels of benchmarks/gpu_bundle.txt for one Python and platform, and print
their sizes and their total with the tracked tree's (what travels to the GPU machine: at most 60 MiB).

    python -m benchmarks.gpu_bundle                         # CPython 3.12 manylinux x86_64 into .whl/ (make gpu-bundle)
    python -m benchmarks.gpu_bundle --python-version 3.11 --dest DIR     # the same list for the CPU rehearsal

On the GPU machine: `pip install --no-index --no-deps --target DIR .whl/*.whl`, then PYTHONPATH=DIR.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from satori.core.config import REPO_ROOT

REQUIREMENTS = REPO_ROOT / "benchmarks" / "gpu_bundle.txt"
LIMIT_MIB = 60
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pinned() -> list[str]:
    lines = REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def download(dest: Path, python_version: str) -> list[Path]:
    """Exactly the pinned wheels (no dependencies resolved: the list is the whole bundle), dest emptied first."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    abi = "cp" + python_version.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *pinned()], check=True)
    return sorted(dest.glob("*.whl"))


def tracked_bytes() -> int:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return sum((REPO_ROOT / rel).stat().st_size for rel in listed.decode().split("\0") if rel and (REPO_ROOT / rel).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=REPO_ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12")
    args = parser.parse_args()
    wheels = download(args.dest, args.python_version)
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    wanted = {req.split("==")[0].lower().replace("_", "-") for req in pinned()}
    if names != wanted:
        raise SystemExit(f"the bundle lacks {sorted(wanted - names)} or holds extra {sorted(names - wanted)}")
    mib = 1024 * 1024
    for wheel in wheels:
        print(f"{wheel.stat().st_size / mib:7.2f} MiB  {wheel.name}")
    wheel_total = sum(w.stat().st_size for w in wheels)
    tree = tracked_bytes()
    print(f"{wheel_total / mib:7.2f} MiB  {len(wheels)} wheels in {args.dest}")
    print(f"{tree / mib:7.2f} MiB  the tracked tree")
    print(f"{(wheel_total + tree) / mib:7.2f} MiB  in all (limit {LIMIT_MIB} MiB)")
    if wheel_total + tree > LIMIT_MIB * mib:
        raise SystemExit(f"the bundle and the tree come to more than {LIMIT_MIB} MiB")


if __name__ == "__main__":
    main()
