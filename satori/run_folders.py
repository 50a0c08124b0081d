"""Run folders: a run of another profile, or of a variant (`--set`), in its own copy of the checkout under
.runs/<name>, and one run at a time per folder. No Prefect here: the flow, its tests and scripts share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from satori import tracking
from satori.core.config import PARAMS_FILE, load_profile, profile_names, read_params, validate_profile
from satori.core.errors import InputError, ParamsError
from satori.core.lineage import CODE_REVISION_ENV, code_revision

RUNS_DIR = ".runs"  # copies of the checkout, one per other profile (git-ignored)
LOCK_FILE = ".satori-run.lock"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a folder under .runs/, and an MLflow run name


class RunRequestError(InputError, ValueError):
    """A --profile, --set or --name a run cannot start with; the message names it (one line, exit 2)."""


class RunLocked(RuntimeError):
    """Another pipeline run holds the folder."""



@contextlib.contextmanager
def run_lock(folder: Path, profile: str) -> Iterator[None]:
    """Hold folder's run lock for the block; raise RunLocked at once if another run holds it."""
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(
            f"another pipeline run ({holder}) is running in {folder}; wait for it to finish, or run another "
            f"profile, which gets a folder of its own"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, profile {profile}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.seek(0)
        handle.truncate()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def checkout_files(checkout: Path) -> list[str]:
    """The files of the checkout as git sees them: tracked, and untracked but not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=checkout,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [rel for rel in listed.split("\0") if rel and (checkout / rel).is_file()]


def set_profile_line(text: str, name: str) -> str:
    """params.yaml text with its `profile:` line (the one switch) set to name, the rest as written."""
    new_text, count = re.subn(r"(?m)^profile:\s*\S+", f"profile: {name}", text, count=1)
    if count != 1:
        raise ValueError("params.yaml has no top-level 'profile:' line to switch")
    return new_text


def with_overrides(text: str, profile: str, overrides: list[str]) -> str:
    """params.yaml text with `section.key=value` overrides set in the profile (values read as YAML),
    checked as the stages will check them. The file is rewritten whole (anchors expanded)."""
    import yaml

    data = yaml.safe_load(text)
    for override in overrides:
        dotted, sep, value = override.partition("=")
        keys = dotted.strip().split(".")
        if not sep or not all(keys):
            raise RunRequestError(f"--set {override!r}: expected section.key=value, e.g. train.learning_rate=5e-4")
        node = data[profile]
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise RunRequestError(f"--set {override!r}: profile {profile!r} has no section {key!r}")
            node = node[key]
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise RunRequestError(f"--set {override!r}: the value is not YAML ({' '.join(str(err).split())})") from None
        if isinstance(parsed, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", parsed.strip()):
            parsed = float(parsed)  # YAML 1.1 (PyYAML) reads 5e-4 as a string; a user means the number
        node[keys[-1]] = parsed
    try:
        validate_profile(profile, data[profile])
    except ParamsError as err:
        # One line: the keys that failed, each with its reason (ParamsError lists them a line each).
        reasons = "; ".join(line.strip() for line in str(err).splitlines()[1:]) or str(err)
        raise RunRequestError(f"--set {' '.join(overrides)}: {reasons}") from None
    return yaml.safe_dump(data, sort_keys=False)


def prepare_run_dir(checkout: Path, profile: str, overrides: list[str] | None = None, name: str | None = None) -> Path:
    """checkout/.runs/<name, or profile>: a copy of the checkout's files with that profile active and
    the overrides set in it (see with_overrides).

    Outputs and dvc.lock of earlier runs of the profile stay (DVC re-runs only what changed);
    files whose content did not change are not rewritten. DVC there shares the checkout's cache
    and does not touch git (no_scm): the copy is not a git repository.
    """
    check_run_request(checkout, profile, overrides, name)
    name = name or profile
    dest = checkout / RUNS_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    with run_lock(dest, profile):
        for rel in checkout_files(checkout):
            if rel == "dvc.lock" or rel.startswith("reports/"):
                continue  # the results of this checkout's profile, not of this one
            data = (checkout / rel).read_bytes()
            if rel == PARAMS_FILE.as_posix():
                text = set_profile_line(data.decode("utf-8"), profile)
                data = (with_overrides(text, profile, overrides) if overrides else text).encode("utf-8")
            target = dest / rel
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        write_run_dir_config(checkout, dest)
    return dest


def write_run_dir_config(checkout: Path, dest: Path) -> None:
    """dest's .dvc/config.local: the checkout's own (its remotes, say), with the checkout's cache and no git."""
    import configparser

    config = configparser.ConfigParser()
    config.read(checkout / ".dvc" / "config.local", encoding="utf-8")
    config.read_dict({"core": {"no_scm": "true"}, "cache": {"dir": str((checkout / ".dvc" / "cache").resolve())}})
    with (dest / ".dvc" / "config.local").open("w", encoding="utf-8") as f:
        config.write(f)


def check_run_request(checkout: Path, profile: str | None, overrides: list[str] | None, name: str | None) -> None:
    """RunRequestError, naming the flag, unless a run of this profile, overrides and name can start: checked
    before anything starts (no Prefect server, no folder, no MLflow run)."""
    if overrides and not name:
        raise RunRequestError("--set needs --name: the folder under .runs/ the variant runs in")
    raw = read_params(checkout / PARAMS_FILE)
    allowed = profile_names(raw)
    if profile is not None and profile not in allowed:
        raise RunRequestError(f"unknown profile {profile!r}; params.yaml defines {allowed}")
    for value in (name, profile):
        if value is not None and not RUN_NAME.fullmatch(value):
            raise RunRequestError(f"run folder name {value!r}: use letters, digits, '_', '-' and '.'")
    if overrides:
        text = (checkout / PARAMS_FILE).read_text(encoding="utf-8")
        with_overrides(text, profile or load_profile(checkout / PARAMS_FILE)[0], overrides)


def run_folder(
    checkout: Path, profile: str | None, overrides: list[str] | None, name: str | None
) -> tuple[Path, str, Any, str]:
    """(folder, profile, its params, revision) of a run from checkout: itself for its active profile, else
    .runs/<name>."""
    check_run_request(checkout, profile, overrides, name)
    active, _ = load_profile(checkout / PARAMS_FILE)
    profile = profile or active
    folder = checkout
    if profile != active or overrides or (name and name != profile):
        # This checkout's revision, and its MLflow store: the copy has no git history and would open its own.
        os.environ.setdefault(CODE_REVISION_ENV, code_revision(checkout))
        os.environ.setdefault("MLFLOW_TRACKING_URI", tracking.tracking_uri())
        folder = prepare_run_dir(checkout, profile, overrides, name)
    profile, params = load_profile(folder / PARAMS_FILE)
    return folder, profile, params, os.environ.get(CODE_REVISION_ENV) or code_revision(checkout)
