"""Shared fixtures. Tests mirror the source tree: tests/stages/test_<module>.py, tests/flows/..."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from satori.config import REPO_ROOT, system_prompt


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL built without the warm start (seconds): for loading and plumbing tests."""
    from satori import synthetic
    from satori.tiny_model import build_tiny_model

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


def copy_checkout(dest: Path) -> Path:
    """The project's files (tracked and untracked-but-not-ignored) copied to dest, as a fresh git repo."""
    from flows.pipeline import checkout_files

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

    from satori.config import read_params

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
    import sys

    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PREFECT_HOME": str(work / "prefect"),
        "HF_HUB_OFFLINE": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **extra,
    }
