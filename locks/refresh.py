"""Refresh the install locks from pyproject.toml (`make lock`): every package, its exact version and its hashes.

uv (`uv pip compile --generate-hashes`, pinned in the `lock` extra) resolves for CPython 3.11 on Linux x86-64
whatever machine runs it, from the index's metadata alone (no multi-GB download), and keeps the versions of the
existing lock where they still satisfy pyproject.toml (its preferences), so a refresh moves only what must move.
pip-tools' pip-compile resolves for the machine it runs on and downloads what lacks metadata: it could not write
the GPU lock here. The locks are plain requirement files: uv installs them (`make install`), and pip could.

    locks/cpu.txt    every package of `make install` but torch's build, with hashes (installed --require-hashes)
    locks/uv.txt     uv's entry of cpu.txt: pip installs uv from it, then uv the rest (39 s cold, pip 162 s)
    locks/torch.txt  torch, torchvision and what only their build needs (CUDA libraries, triton): versions, no
                     hashes. One version of torch is several files: PyPI's CUDA wheel, the CPU index's `+cpu`
                     wheel, a machine's own copy. No hash holds for all of them; the version does (`==2.14.1`
                     matches `2.14.1+cpu`). `make install` takes it as a constraint, so a `+cpu` build needs no CUDA.
    locks/gpu.txt    the GPU machines' environment (internet, CUDA): the `gpu` extra, vLLM and torch at the version
                     vLLM pins, the rest at cpu.txt's versions wherever they agree (GPU_DIFFERS says where and why).

    .venv/bin/python locks/refresh.py          # both locks (make lock)
    .venv/bin/python locks/refresh.py --check  # exit 1 when a lock was written from another pyproject.toml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
CPU_LOCK, TORCH_LOCK, GPU_LOCK = LOCKS / "cpu.txt", LOCKS / "torch.txt", LOCKS / "gpu.txt"
UV_LOCK = LOCKS / "uv.txt"  # uv's own entry of cpu.txt: `make install` installs uv from it with pip, then the rest with uv
DIFFERENCES = LOCKS / "gpu_differences.md"  # the README's generated block gpu-lock-differences
PYTHON_VERSION, PLATFORM = "3.11", "x86_64-manylinux_2_28"
INDEX = "https://pypi.org/simple"
CPU_EXTRAS = ("test", "lock")
GPU_EXTRAS = ("gpu", "test", "lock")
# torch's build: these differ between a CUDA and a CPU build of one torch version (locks/torch.txt).
TORCH_BUILD = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
GPU_REQUIREMENTS = ("vllm==0.33.0",)  # the rollout engine (README: vLLM); 0.34 needs huggingface-hub 2
# Where the GPU lock differs from cpu.txt, each for the reason beside it: the requirement that replaces
# pyproject.toml's pin there (None: not a direct dependency); the resolver picks the newest version that fits,
# preferring cpu.txt's. tests/locks/test_locks.py holds the GPU lock to differ from cpu.txt only in these names.
GPU_DIFFERS = {
    "torch": ("torch", "vLLM 0.33.0 pins torch==2.14.0"),
    "torchvision": ("torchvision", "vLLM 0.33.0 pins torchvision==0.29.0"),
    "numpy": ("numpy>=2", "vLLM 0.33.0 needs mistral-common, which caps numpy below 2.4 on Python < 3.13"),
    "fastapi": (None, "vLLM 0.33.0 caps fastapi below 0.137"),
    "prefect": ("prefect>=3", "prefect 3.8 and later need fastapi 0.139 or later, which vLLM 0.33.0 refuses"),
    "apprise": ("apprise", "prefect 3.8.4 and earlier cap apprise below 2"),
    "python-slugify": (None, "prefect 3.8.7 and earlier cap python-slugify below 9"),
    "packaging": (None, "prefect 3.8.4 and earlier cap packaging below 26.3"),
}
HEADER = """\
# {what}
# Written by `make lock` (locks/refresh.py) from pyproject.toml; do not edit by hand.
# pyproject.toml dependencies sha256: {digest}
"""
UV_COMPILE = ["uv", "pip", "compile", "--quiet", "--generate-hashes", "--no-header", "--python-version",
              PYTHON_VERSION, "--python-platform", PLATFORM, "--index-url", INDEX]  # fmt: skip


def normal(name: str) -> str:
    """PEP 503's normal form of a project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies_digest(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """What a lock is written from: pyproject.toml's dependencies and optional dependencies."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    chosen = {"dependencies": project["dependencies"], "optional": project.get("optional-dependencies", {})}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()


def entries(text: str) -> list[tuple[str, str, str]]:
    """A compiled requirements text's entries: (normal name, version, the entry's lines with its hashes)."""
    found = []
    for block in re.split(r"\n(?=[A-Za-z0-9])", text.strip()):
        first = block.splitlines()[0]
        pinned = re.match(r"^([A-Za-z0-9][A-Za-z0-9._\-\[\],]*)==([^\s;\\]+)", first)
        if not pinned:
            raise SystemExit(f"unexpected line in uv's output: {first!r}")
        found.append((normal(pinned[1].split("[")[0]), pinned[2], block))
    return found


def locked_versions(path: Path) -> dict[str, str]:
    """A lock file's packages: normal name -> exact version."""
    text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    return {name: version for name, version, _ in entries(text)}


def compile_lock(inputs: list[Path], extras: tuple[str, ...], preferred: str) -> str:
    """uv's lock of `inputs` (the extras of pyproject.toml), preferring the versions in `preferred`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.txt"
        out.write_text(preferred, encoding="utf-8")  # uv keeps an output file's versions where they still fit
        cmd = [*UV_COMPILE, *map(str, inputs), "-o", str(out)]
        for extra in extras:
            cmd += ["--extra", extra]
        subprocess.run([sys.executable, "-m", *cmd], check=True, cwd=ROOT)
        text = out.read_text(encoding="utf-8")
    # uv annotates each package with what requires it; a temporary input's path means nothing to a reader.
    return re.sub(r"-r \S+/gpu-requirements\.txt", "locks/refresh.py's GPU requirements", text)


def current(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def write_cpu(digest: str) -> str:
    """locks/cpu.txt and locks/torch.txt; returns the whole resolution (the GPU lock's preferences)."""
    text = compile_lock([ROOT / "pyproject.toml"], CPU_EXTRAS, current(CPU_LOCK) + current(TORCH_LOCK))
    resolved = entries(text)
    hashed = [block for name, _, block in resolved if not TORCH_BUILD.match(name)]
    build = [f"{name}=={version}" for name, version, _ in resolved if TORCH_BUILD.match(name)]
    CPU_LOCK.write_text(HEADER.format(what="Every package of `make install` but torch's build (locks/torch.txt), "
                                           "with its hashes.", digest=digest) + "\n".join(hashed) + "\n",
                        encoding="utf-8")  # fmt: skip
    UV_LOCK.write_text(HEADER.format(what="uv, which `make install` installs the other locks with (its entry of "
                                          "locks/cpu.txt).", digest=digest)
                       + "".join(block for name, _, block in resolved if name == "uv") + "\n", encoding="utf-8")  # fmt: skip
    TORCH_LOCK.write_text(HEADER.format(what="torch's build, versions only (a constraint of `make install`): the CUDA "
                                             "and CPU builds of one version are different files.", digest=digest)
                          + "\n".join(build) + "\n", encoding="utf-8")  # fmt: skip
    return text


def write_gpu(digest: str, cpu_resolution: str) -> None:
    """locks/gpu.txt: pyproject's pins but GPU_DIFFERS' names, its gpu extra and vLLM, hashed, torch included."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # pyproject.toml's own pins stand (an input that is pyproject.toml would hold GPU_DIFFERS' names to them),
    # but GPU_DIFFERS' replace theirs.
    name = lambda req: normal(re.split(r"[=<>!~ ;\[]", req, maxsplit=1)[0])  # noqa: E731
    required = [GPU_DIFFERS[name(req)][0] if name(req) in GPU_DIFFERS else req for req in project["dependencies"]]
    for extra in GPU_EXTRAS:
        required += project["optional-dependencies"][extra]
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "gpu-requirements.txt"
        requirements.write_text("\n".join([*required, *GPU_REQUIREMENTS]) + "\n", encoding="utf-8")
        text = compile_lock([requirements], (), current(GPU_LOCK) or cpu_resolution)
    GPU_LOCK.write_text(HEADER.format(what="The GPU machines' environment (README: Installs), with hashes; install: "
                                           "pip install --require-hashes --no-deps -r locks/gpu.txt && pip install "
                                           "--no-deps -e .", digest=digest) + text.strip() + "\n",
                        encoding="utf-8")  # fmt: skip


def write_differences() -> None:
    """The README's table of where the GPU lock differs from the CPU lock (locks/gpu_differences.md)."""
    cpu, gpu = {**locked_versions(CPU_LOCK), **locked_versions(TORCH_LOCK)}, locked_versions(GPU_LOCK)
    lines = ["| package | CPU lock | GPU lock | why |", "|---|---|---|---|"]
    for name, (_, why) in sorted(GPU_DIFFERS.items()):
        lines.append(f"| {name} | {cpu.get(name, '-')} | {gpu.get(name, '-')} | {why} |")
    DIFFERENCES.write_text("\n".join(lines) + "\n", encoding="utf-8")


def stale_locks(digest: str) -> list[str]:
    """The locks not written from today's pyproject.toml's dependencies."""
    line = f"# pyproject.toml dependencies sha256: {digest}"
    return [path.name for path in (CPU_LOCK, UV_LOCK, TORCH_LOCK, GPU_LOCK) if line not in current(path).splitlines()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when a lock is stale; writes nothing")
    args = parser.parse_args(argv)
    digest = dependencies_digest()
    if args.check:
        stale = stale_locks(digest)
        if stale:
            raise SystemExit(f"locks/{', locks/'.join(stale)}: written from another pyproject.toml; run `make lock`")
        print("locks: up to date with pyproject.toml")
        return
    write_gpu(digest, write_cpu(digest))
    write_differences()
    print(f"wrote {CPU_LOCK.relative_to(ROOT)} ({len(locked_versions(CPU_LOCK))} packages), "
          f"{TORCH_LOCK.relative_to(ROOT)} ({len(locked_versions(TORCH_LOCK))}), "
          f"{GPU_LOCK.relative_to(ROOT)} ({len(locked_versions(GPU_LOCK))})")  # fmt: skip


if __name__ == "__main__":
    main()
