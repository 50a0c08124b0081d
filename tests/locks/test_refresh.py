"""The install locks (locks/refresh.py): written from today's pyproject.toml, every package pinned and hashed, the
environment the tests run in is the lock, and the GPU lock differs from the CPU lock only where it says why.

Parsed here with a regex of the lock format, not with refresh.py's parser."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from satori.core.config import REPO_ROOT

LOCKS = REPO_ROOT / "locks"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of a requirements file in pip's hash format."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        pinned = PIN.match(line)
        if pinned:
            current = normal(pinned[1])
            assert current not in entries, f"{path.name}: {current} locked twice"
            entries[current] = (pinned[2], [])
        elif line.strip().startswith("--hash=sha256:"):
            entries[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        else:
            assert not line.strip() or line.lstrip().startswith("#"), f"{path.name}: unexpected line {line!r}"
    return entries


def pyproject_pins(*groups: str) -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"]) if "main" in groups else []
    for group in groups:
        requirements += project["optional-dependencies"].get(group, [])
    pins = {}
    for requirement in requirements:
        pinned = PIN.match(requirement)
        assert pinned, f"pyproject.toml: {requirement!r} is not pinned to one version"
        pins[normal(pinned[1])] = pinned[2]
    return pins


def cpu_lock() -> dict[str, str]:
    return {name: version for path in ("cpu.txt", "torch.txt") for name, (version, _) in lock_entries(LOCKS / path).items()}


def test_every_direct_pin_is_locked_at_its_version() -> None:
    locked = cpu_lock()
    for name, version in pyproject_pins("main", "test", "lock").items():
        assert locked.get(name) == version, f"pyproject.toml pins {name}=={version}; the CPU lock has {locked.get(name)}"
    gpu = {name: version for name, (version, _) in lock_entries(LOCKS / "gpu.txt").items()}
    for name, version in pyproject_pins("gpu").items():
        assert gpu.get(name) == version, f"pyproject.toml pins {name}=={version}; the GPU lock has {gpu.get(name)}"


def test_the_locks_name_this_pyproject_and_a_changed_pin_is_caught(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(LOCKS / "refresh.py"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # A copy whose pyproject.toml moved one pin (and one that added a range) is stale: `make install` stops there.
    shutil.copytree(LOCKS, tmp_path / "locks")
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for changed in (text.replace('"shapely==2.2.0"', '"shapely==2.1.0"'),
                    text.replace('"psutil==7.2.2",', '"psutil==7.2.2",\n    "rich>=13",')):  # fmt: skip
        assert changed != text
        (tmp_path / "pyproject.toml").write_text(changed, encoding="utf-8")
        done = subprocess.run([sys.executable, str(tmp_path / "locks" / "refresh.py"), "--check"], capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 1
        assert "locks/cpu.txt, locks/uv.txt, locks/torch.txt, locks/gpu.txt: written from another pyproject.toml" in done.stderr


def test_every_locked_package_has_one_version_and_hashes_but_torch_s_build() -> None:
    cpu, torch_build, gpu = (lock_entries(LOCKS / name) for name in ("cpu.txt", "torch.txt", "gpu.txt"))
    for name, (version, hashes) in {**cpu, **gpu}.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{name}=={version}: no sha256 hash"
    assert {"torch", "torchvision"} <= set(torch_build)
    for name, (version, hashes) in torch_build.items():
        # torch's build: a CUDA and a CPU wheel of one version are different files; only the version holds for both.
        assert re.fullmatch(r"torch|torchvision|triton|nvidia-.*|cuda-.*", name) and not hashes, name
    assert not set(cpu) & set(torch_build)
    # uv, which `make install` installs first (with pip) and the rest with: cpu.txt's own entry, hashes and all.
    assert lock_entries(LOCKS / "uv.txt") == {"uv": cpu["uv"]}


def test_the_environment_is_the_lock() -> None:
    """What `make install` installed: every locked package at its version (torch's local build label aside), and
    nothing beside the lock but the project and pip."""
    installed = {normal(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    locked = cpu_lock()
    wrong = {name: (version, installed.get(name)) for name, version in locked.items()
             if installed.get(name, "").split("+")[0] != version}  # fmt: skip
    assert not wrong, f"locked -> installed: {wrong}"
    assert set(installed) - set(locked) <= {"satori-pipeline", "pip"}, sorted(set(installed) - set(locked))


def test_the_gpu_lock_differs_from_the_cpu_lock_only_where_it_says_why() -> None:
    sys.path.insert(0, str(LOCKS))
    try:
        import refresh
    finally:
        sys.path.remove(str(LOCKS))
    cpu = cpu_lock()
    gpu = {name: version for name, (version, _) in lock_entries(LOCKS / "gpu.txt").items()}
    differ = {name for name in set(cpu) & set(gpu) if cpu[name] != gpu[name]}
    assert differ == set(refresh.GPU_DIFFERS), (differ, set(refresh.GPU_DIFFERS))
    assert gpu["vllm"] == "0.33.0" and gpu["torch"] == "2.14.0" and gpu["torchvision"] == "0.29.0"
    assert {"deepspeed", "nvidia-ml-py"} <= set(gpu)


def test_the_gpu_bundle_takes_its_versions_from_the_lock() -> None:
    locked = cpu_lock()
    lines = (REPO_ROOT / "benchmarks" / "gpu_bundle.txt").read_text(encoding="utf-8").splitlines()
    for line in (line.strip() for line in lines if line.strip() and not line.startswith("#")):
        name, version = line.split("==")
        assert locked.get(normal(name)) == version, f"gpu_bundle.txt {line}; the lock has {locked.get(normal(name))}"


def test_make_lock_installs_the_lock_extra_s_uv() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"uv=={pyproject_pins('lock')['uv']}" in makefile


def test_make_lock_rewrites_the_committed_locks(tmp_path: Path) -> None:
    """`make lock` (as the README types it, in a copy) resolves the same versions: the committed locks are what the
    tool makes of pyproject.toml, not a hand edit. Needs the package index, as `make lock` does."""
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, copy / name)
    shutil.copytree(LOCKS, copy / "locks")
    done = subprocess.run(["make", "lock", f"VENV={Path(sys.executable).parent.parent}"], cwd=copy,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("cpu.txt", "uv.txt", "torch.txt", "gpu.txt"):
        versions = lambda root: {n: v for n, (v, _) in lock_entries(root / "locks" / name).items()}  # noqa: E731
        assert versions(copy) == versions(REPO_ROOT), name
    assert (copy / "locks/gpu_differences.md").read_text() == (LOCKS / "gpu_differences.md").read_text()
