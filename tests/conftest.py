"""Shared fixtures. Tests mirror the source tree: tests/stages/test_<module>.py, tests/flows/..."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from satori.core.config import REPO_ROOT
from satori.core.prompt import system_prompt


README_MARKER = re.compile(r"<!-- commands: (?P<name>[\w-]+)(?:, not run: (?P<reason>[^>]+?))? -->\n"
                           r"(?:<!-- generated: [\w-]+ -->\n)?(?P<indent> *)```(?:bash|console)?\n(?P<body>.*?)```", re.DOTALL)
NOT_RUN_LINE = "# not run by the tests:"


def readme_blocks() -> dict[str, dict]:
    """The README's command blocks by the name its `<!-- commands: NAME -->` marker gives: body, reason not run."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return {m["name"]: {"body": m["body"], "reason": m["reason"], "at": m.start()} for m in README_MARKER.finditer(text)}


def readme_commands(name: str) -> list[str]:
    """The commands of the README's block NAME as a user types them: a console block's `$ ` lines, a bash block's
    lines; comments and the lines marked `# not run by the tests: ...` dropped."""
    block = readme_blocks()[name]
    assert block["reason"] is None, f"README block {name} is marked not run: {block['reason']}"
    lines = [line.strip() for line in block["body"].splitlines()]
    if any(line.startswith("$ ") for line in lines):
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    return [line.split("  #", 1)[0].rstrip() for line in lines
            if line and not line.startswith("#") and NOT_RUN_LINE not in line]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL built without the warm start (seconds): for loading and plumbing tests."""
    from satori.data import synthetic
    from satori.data.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(
        out,
        seed=0,
        hidden_size=32,
        num_layers=2,
        bpe_vocab_size=1000,
        min_pixels=3136,
        max_pixels=50176,
        corpus=synthetic.tokenizer_corpus(system_prompt(REPO_ROOT / "prompt.txt"), rows=40),
    )
    return out


@pytest.fixture
def swift_pixel_limits(monkeypatch):
    """Set MIN_PIXELS / MAX_PIXELS as the train stage does, for ms-swift's next get_processor. ms-swift turns
    them into token counts and writes those into qwen_vl_utils once per process; both are undone after the
    test, so every test's limits are read anew."""
    from qwen_vl_utils import vision_process

    def set_limits(min_pixels: int, max_pixels: int) -> None:
        monkeypatch.setenv("USE_HF", "1")
        monkeypatch.setenv("MIN_PIXELS", str(min_pixels))
        monkeypatch.setenv("MAX_PIXELS", str(max_pixels))
        for name in ("IMAGE_MIN_TOKEN_NUM", "IMAGE_MAX_TOKEN_NUM"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.setattr(vision_process, name, getattr(vision_process, name))
        # Absent after the test whether or not it was before: ms-swift patches again on its next call.
        monkeypatch.setattr(vision_process, "_patch", True, raising=False)
        monkeypatch.delattr(vision_process, "_patch")

    return set_limits


def copy_checkout(dest: Path) -> Path:
    """The project's files (tracked and untracked-but-not-ignored) copied to dest, as a fresh git repo."""
    from satori.run_folders import checkout_files

    for rel in checkout_files(REPO_ROOT):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest / rel)
    # Outputs recorded by a developer's run must not make the copy look up to date.
    (dest / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "test checkout"], cwd=dest, check=True)
    return dest


@pytest.fixture
def isolated_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A per-test MLflow store and Prefect home, so tests never touch the developer's."""
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


@pytest.fixture
def use_profile(tmp_path, monkeypatch, isolated_env):
    """Run a stage as DVC would, in tmp_path: a params.yaml there with the named profile active and
    the given sections replaced (dicts), prompt.txt beside it, the working directory set to it."""
    import yaml

    from satori.core.config import read_params

    def write(name: str = "tiny", **sections) -> Path:
        raw = read_params(REPO_ROOT / "params.yaml")
        profile = dict(raw[name])
        profile.update(sections)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": name, name: profile}, sort_keys=False))
        shutil.copy(REPO_ROOT / "prompt.txt", tmp_path / "prompt.txt")
        monkeypatch.chdir(tmp_path)
        return tmp_path

    return write


def predicted_letter(prediction: str, row) -> str | None:
    """The option a prediction names: a bare letter, "B." / "B)" / "(B)" first, or an option's exact text."""
    import re

    text = str(prediction).strip()
    match = re.fullmatch(r"\(?([A-D])\)?(?:[.):]\s*.*)?", text, re.DOTALL)
    if match:
        return match.group(1)
    options = {letter: str(row[letter]).strip().lower() for letter in "ABCD" if letter in row and str(row[letter]) != "nan"}
    named = [letter for letter, option in options.items() if option == text.lower()]
    return named[0] if len(named) == 1 else None


def accuracy_from_predictions(report_dir: Path, label: str, benchmark: str) -> float:
    """MMStar-style: the share of rows whose prediction names the answer. MMBench-style (circular): a question
    counts only if every rotation of it (index % 1e6) is answered right."""
    import pandas as pd

    table = pd.read_csv(report_dir / f"{label}_satori-{label}_{benchmark}.tsv", sep="\t")
    right = [predicted_letter(row["prediction"], row) == str(row["answer"]).strip() for _, row in table.iterrows()]
    if "mmbench" not in benchmark.lower():
        return sum(right) / len(right)
    by_question: dict[int, bool] = {}
    for index, ok in zip(table["index"], right):
        by_question[int(index) % 1_000_000] = by_question.get(int(index) % 1_000_000, True) and ok
    return sum(by_question.values()) / len(by_question)


def pipeline_env(work: Path, **extra: str) -> dict[str, str]:
    """The environment of a pipeline run in a test: its own MLflow store and Prefect home in work, offline,
    this interpreter's folder first on PATH (the stages call `python`)."""

    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PREFECT_HOME": str(work / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **extra,
    }


GIT_STATUS_AFTER_RUN = "git-status-after-run.txt"  # beside pipeline_run's checkout
FAKE_TOKEN = "hf_" + uuid.uuid4().hex  # made at run time, so no file holds it unless it leaked


def run_summary(folder: Path) -> dict:
    """What the flow returned for the run in folder (flows.pipeline.RUN_SUMMARY)."""
    from flows.pipeline import RUN_SUMMARY

    return json.loads((folder / RUN_SUMMARY).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The README's `make run`, typed as is, in a fresh copy of the checkout, once for the session (the end-to-end
    and the learning tests read it), tracked by a shared MLflow tracking server (`mlflow server` on 127.0.0.1), as a
    team beyond one machine would."""
    work = tmp_path_factory.mktemp("e2e")
    repo = copy_with_venv(work / "checkout")  # the MLflow server's files lie beside it, not in it
    make_run = readme_commands("quickstart")[0]
    with mlflow_server(work / "server") as uri:
        env = _env(work, uri)
        proc = subprocess.run(["bash", "-c", make_run], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
        log = proc.stdout + proc.stderr
        (work / "pipeline.log").write_text(log)
        assert proc.returncode == 0, log[-6000:]
        # What `git status` shows right after the run, before any test changes the copy (test_end_to_end reads it).
        status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
        (work / GIT_STATUS_AFTER_RUN).write_text(status.stdout)
        yield repo, env, run_summary(repo), log


def copy_with_venv(dest: Path) -> Path:
    """copy_checkout, with this checkout's installed .venv linked in, so that the README's `make` targets run there as
    typed. The copied files keep their times, so `make` finds the install up to date, as it is; were it not (a
    pyproject.toml or lock newer than the install), `make` would reinstall this checkout's .venv from the copy."""
    repo = copy_checkout(dest)
    (repo / ".venv").symlink_to(REPO_ROOT / ".venv")
    stale = subprocess.run(["make", "-q", "install"], cwd=repo, capture_output=True)
    assert stale.returncode == 0, "the .venv is older than pyproject.toml or locks/: run `make install` first"
    return repo


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on a free 127.0.0.1 port, its store and artifacts in folder; stopped afterwards."""
    folder.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        stdout=(folder / "server.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{uri}/health", server, folder / "server.log")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Poll url until it answers; fail with the server's log if the server dies or the time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds:.0f} s"
            time.sleep(0.5)


def _env(work: Path, tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ)
    from satori.core.config import REPO_ROOT
    from satori.core.lineage import code_revision

    env.update(
        # The copy is a new git repository: the card names the revision of the checkout it was copied from.
        SATORI_CODE_REVISION=code_revision(REPO_ROOT),
        MLFLOW_TRACKING_URI=tracking_uri,
        PREFECT_HOME=str(work / "prefect"),
        HF_TOKEN=FAKE_TOKEN,
        HF_HUB_OFFLINE="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


# `make test` runs the suite in two processes (pytest-xdist). A pipeline run is made once per process that asks
# for it, so the tests that share one go to one process: the modules on the session's default run
# (pipeline_run; tests/lineage holds this list equal to the modules that ask for it), and each other module
# whole (its module-scoped fixtures: the rehearsal, the simulated machines). pytest-xdist's own
# `--dist loadgroup` cannot do it under pytest 9 (it renames node ids through `_nodeid`, which pytest 9 no
# longer reads), so the grouping is a scheduler of its own.
PIPELINE_RUN_MODULES = ("tests/test_end_to_end.py", "tests/test_learning.py", "tests/test_multi_machine.py")


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class PipelineRunScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "pipeline_run" if module in PIPELINE_RUN_MODULES else module

    return PipelineRunScopes(config, log)
