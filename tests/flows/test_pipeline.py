from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows import console as console_filters
from flows import pipeline, stage_runner
from satori import run_folders
from satori import tracking
from satori.core.config import REPO_ROOT, load_profile

PARAMS_FILE = REPO_ROOT / "params.yaml"


def test_set_profile_line_switches_only_the_switch():
    import yaml

    before = PARAMS_FILE.read_text()
    active = yaml.safe_load(before)["profile"]
    other = next(name for name in ("paper", "rehearsal") if name != active)
    after = run_folders.set_profile_line(before, other)
    assert yaml.safe_load(after) == {**yaml.safe_load(before), "profile": other}
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [(f"profile: {active}", f"profile: {other}")]  # one line, the rest byte for byte
    with pytest.raises(ValueError, match="no top-level 'profile:' line"):
        run_folders.set_profile_line("tiny: {}\n", "paper")


def dvc_folder(folder, dvc_yaml=None):
    """folder as a DVC project without git, holding this checkout's dvc.yaml or the one given."""
    (folder / ".dvc").mkdir()
    (folder / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    (folder / "dvc.yaml").write_text(dvc_yaml or (REPO_ROOT / "dvc.yaml").read_text())


def git_checkout(tmp_path):
    from tests.conftest import copy_checkout

    repo = copy_checkout(tmp_path / "checkout")
    (repo / "data/raw").mkdir(parents=True)
    (repo / "data/raw/keep.txt").write_text("the active profile's output")
    return repo


def git_status(repo):
    import subprocess

    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout


def test_another_profile_runs_in_a_copy_and_leaves_the_checkout_as_it_was(tmp_path):
    repo = git_checkout(tmp_path)
    before = git_status(repo)
    run_dir = run_folders.prepare_run_dir(repo, "paper")
    assert run_dir == repo / ".runs/paper"
    assert load_profile(run_dir / "params.yaml")[0] == "paper"
    assert load_profile(repo / "params.yaml")[0] == "tiny"
    assert git_status(repo) == before  # .runs/ is git-ignored; no tracked file changed
    assert (repo / "data/raw/keep.txt").read_text() == "the active profile's output"
    assert "no_scm = true" in (run_dir / ".dvc/config.local").read_text()
    assert (run_dir / "stages/train.py").read_bytes() == (repo / "stages/train.py").read_bytes()
    assert not (run_dir / "dvc.lock").exists()  # this checkout's results are not the profile's
    with pytest.raises(ValueError, match=r"unknown profile 'huge'; params.yaml defines \['paper', 'paper_official', 'rehearsal', 'rehearsal_lora', 'tiny'\]"):
        run_folders.prepare_run_dir(repo, "huge")


def test_a_variant_sets_its_params_in_its_own_copy_only(tmp_path):
    repo = git_checkout(tmp_path)
    before = git_status(repo)
    overrides = ["train.reward_control=invert", "train.learning_rate=5e-4", "download.synthetic.rows=64"]
    run_dir = run_folders.prepare_run_dir(repo, "tiny", overrides, "control")
    assert run_dir == repo / ".runs/control"
    name, variant = load_profile(run_dir / "params.yaml")
    _, tiny = load_profile(repo / "params.yaml", "tiny")
    assert name == "tiny"
    assert (variant.train.reward_control, variant.train.learning_rate, variant.download.synthetic.rows) == (
        "invert", 5e-4, 64
    )
    # Everything else as the profile says: the stages the overrides do not reach are the same DVC stages.
    assert variant.base_model == tiny.base_model and variant.benchmarks == tiny.benchmarks
    assert variant.train.model_copy(update={"reward_control": None, "learning_rate": tiny.train.learning_rate}) == (
        tiny.train.model_copy(update={"reward_control": None})
    )
    assert git_status(repo) == before and load_profile(repo / "params.yaml")[0] == "tiny"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rate", "expected section.key=value"),
        ("nowhere.key=1", "profile 'tiny' has no section 'nowhere'"),
        ("train.max_steps=true", r"tiny\.train\.max_steps"),
        ("train.reward_control=upside_down", r"tiny\.train\.reward_control"),
        ("train.no_such_key=1", r"tiny\.train\.no_such_key"),
    ],
)
def test_a_bad_override_is_refused_before_anything_runs_naming_the_key(tmp_path, override, message):
    repo = git_checkout(tmp_path)
    with pytest.raises(ValueError, match=message):
        run_folders.prepare_run_dir(repo, "tiny", [override], "bad")
    assert not (repo / ".runs/bad/params.yaml").exists()
    with pytest.raises(ValueError, match="needs --name"):
        pipeline.satori_pipeline.fn(profile="learn", overrides=["train.learning_rate=1e-4"])


def test_a_second_run_in_the_same_folder_fails_at_once_in_one_sentence(tmp_path):
    import time

    with run_folders.run_lock(tmp_path, "tiny"):
        start = time.monotonic()
        with pytest.raises(run_folders.RunLocked) as err:
            with run_folders.run_lock(tmp_path, "paper"):
                pass
        assert time.monotonic() - start < 2
    message = str(err.value)
    assert message.startswith(f"another pipeline run (pid {__import__('os').getpid()}, profile tiny, since ")
    assert message.count("\n") == 0 and "wait for it to finish" in message
    with run_folders.run_lock(tmp_path, "paper"):  # released: the next run proceeds
        pass


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self):
        raise self.exc


def test_only_transient_failures_are_retried():
    assert pipeline.retry_if_transient(None, None, _State(pipeline.TransientStageError("503"))) is True
    assert pipeline.retry_if_transient(None, None, _State(pipeline.StageError("bad revision"))) is False
    assert pipeline.retry_if_transient(None, None, _State(KeyError("bug"))) is False


def test_transient_classification():
    import httpx

    from satori.core.transient import is_transient

    assert is_transient(httpx.ConnectTimeout("timed out"))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ValueError("revision 'mian' not found"))
    try:
        try:
            raise TimeoutError("read timed out")
        except TimeoutError as inner:
            raise RuntimeError("snapshot failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


def test_the_flow_runs_the_stages_in_order_under_one_parent_run(isolated_env, monkeypatch, tmp_path):
    """The Prefect flow itself (a real temporary Prefect server), with `dvc repro` stubbed out."""
    import json

    import mlflow

    calls = []

    def fake_repro(stage, folder):
        import os

        calls.append((stage, os.environ.get("SATORI_PARENT_RUN_ID")))
        return stage != "fetch_dataset"

    evaluation = {"B": {"base": 0.5, "trained": 0.75, "delta": 0.25}}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "evaluate.json").write_text(json.dumps(evaluation))
    monkeypatch.setattr(pipeline, "repro", fake_repro)
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    dvc_folder(tmp_path)
    import yaml

    listed = list(yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"])  # already in an order they can run
    artifacts = []
    monkeypatch.setattr(pipeline, "create_markdown_artifact", lambda markdown, key: artifacts.append((key, markdown)))
    result = pipeline.satori_pipeline()
    ((key, markdown),) = artifacts
    assert key == "satori-tiny" and "| B | 50.0 | 75.0 | +25.0 |" in markdown
    assert "| fetch_dataset | cached (DVC found it up to date) |" in markdown and "| train | ran |" in markdown
    assert result["mlflow_run_id"] in markdown
    assert [stage for stage, _ in calls] == listed
    assert {parent for _, parent in calls} == {result["mlflow_run_id"]}
    assert result["ran"] == {stage: stage != "fetch_dataset" for stage in listed}
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(result["mlflow_run_id"])
    # Its metrics and curves come from the record_run stage (stubbed here; tests/satori/tracking/test_tracking.py).
    assert parent.data.tags["satori.launched_by"] == "flow" and parent.data.tags["satori.pipeline"] == "true"
    assert parent.data.params["train.learning_rate"] == str(load_profile(tmp_path / "params.yaml")[1].train.learning_rate)


def test_prefect_yaml_deploys_the_flow_on_a_valid_schedule():
    import importlib
    from datetime import datetime

    import yaml
    from cronsim import CronSim

    from satori.core.config import REPO_ROOT, profile_names, read_params

    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployment = next(d for d in spec["deployments"] if d["name"] == "satori-paper-weekly")
    module_path, function = deployment["entrypoint"].split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    assert getattr(module, function) is pipeline.satori_pipeline
    assert deployment["parameters"]["profile"] in profile_names(read_params())
    (schedule,) = deployment["schedules"]
    first = next(CronSim(schedule["cron"], datetime(2026, 1, 1)))
    assert first.weekday() == 6 and first.hour == 2  # Sunday 02:00
    # Created paused while the paper profile pins no revisions (every run would fail at fetch), active once it does.
    from satori.core.config import load_profile
    from satori.core.hub import COMMIT_HASH

    _, paper = load_profile(REPO_ROOT / "params.yaml", name=deployment["parameters"]["profile"])
    pinned = all(COMMIT_HASH.fullmatch(r) for r in (paper.download.hub.revision, paper.base_model.revision))
    assert schedule.get("active", True) is pinned


def test_failures_are_classified_permanent_or_transient():
    import socket

    import httpx
    import requests
    from huggingface_hub.errors import HfHubHTTPError

    from satori.core.transient import is_transient

    def http(status):
        request = httpx.Request("GET", "https://huggingface.co/api/x")
        return HfHubHTTPError("boom", response=httpx.Response(status, request=request))

    def wrapped(outer, inner):
        try:
            try:
                raise inner
            except BaseException as cause:
                raise outer from cause
        except BaseException as err:
            return err

    dns = wrapped(httpx.ConnectError("[Errno -2] Name or service not known"), socket.gaierror(-2, "Name or service not known"))
    permanent = [
        dns,
        requests.ConnectionError("Failed to resolve 'huggingface.invalid' ([Errno -2] Name or service not known)"),
        wrapped(httpx.ConnectError("connect failed"), ConnectionRefusedError(111, "Connection refused")),
        http(401), http(403), http(404),
    ]  # fmt: skip
    transient = [httpx.ReadTimeout("timed out"), TimeoutError(), ConnectionResetError(), http(429), http(500), http(503)]
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)
    assert [is_transient(e) for e in transient] == [True] * len(transient)


def test_two_pipeline_runs_compare_on_their_parents(isolated_env, monkeypatch, tmp_path):
    """Parent runs carry the profile's params, tags and a distinct name; a skipped stage links its producer."""
    import json

    import mlflow
    import yaml

    evaluations = iter([{"B": {"base": 0.5, "trained": 0.5, "delta": 0.0}},
                        {"B": {"base": 0.5, "trained": 0.75, "delta": 0.25}}])  # fmt: skip
    (tmp_path / "reports").mkdir()
    runs_seen = []

    def fake_repro(stage, folder):
        if stage == "evaluate":
            (tmp_path / "reports" / "evaluate.json").write_text(json.dumps(next(evaluations)))
        if stage == "record_run":  # what the stage does once the others ran (tested with real DVC elsewhere)
            stages = [s for s, _ in pipeline.pipeline_stages(tmp_path) if s not in tracking.NO_RUN_STAGES]
            evaluation = json.loads((tmp_path / "reports" / "evaluate.json").read_text())
            tracking.record_pipeline_run("satori-tiny", "tiny", stages, {s: f"hash-{s}" for s in stages}, evaluation, None)
            return True
        if len(runs_seen) == 1 and stage == "fetch_dataset":
            return False  # the second run finds fetch_dataset up to date
        with mlflow.start_run(run_name=stage, nested=True, tags={"satori.stage": stage}):
            pass
        return True

    monkeypatch.setattr(pipeline, "repro", fake_repro)
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    dvc_folder(tmp_path)
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    for lr in (2.0e-4, 1.0e-4):
        raw["tiny"]["train"]["learning_rate"] = lr
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        runs_seen.append(pipeline.satori_pipeline()["mlflow_run_id"])
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    first, second = (client.get_run(r) for r in runs_seen)
    changed = {k for k in first.data.params if first.data.params[k] != second.data.params.get(k)}
    assert changed == {"train.learning_rate"}
    assert (first.data.metrics["B.trained"], second.data.metrics["B.trained"]) == (0.5, 0.75)
    assert first.info.run_name != second.info.run_name and first.info.run_name.startswith("tiny-")
    assert first.data.tags["satori.params_hash"] != second.data.tags["satori.params_hash"]
    assert {"satori.profile", "satori.code_revision"} <= set(second.data.tags)
    assert second.data.tags["satori.launched_by"] == "flow" and second.data.tags["mlflow.source.name"] == "flows/pipeline.py"
    experiment = client.get_experiment_by_name("satori-tiny").experiment_id
    (cached,) = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{second.info.run_id}' and tags.`satori.cached` = 'true'")
    assert cached.data.tags["satori.stage"] == "fetch_dataset"
    producer = client.get_run(cached.data.tags["satori.produced_by"])
    assert producer.data.tags["mlflow.parentRunId"] == first.info.run_id  # the first run's fetch_dataset
    assert producer.info.run_id in cached.data.tags["mlflow.note.content"]


def test_the_notification_names_profile_and_metrics_or_the_failure():
    class Run:
        name, parameters = "brave-fox", {"profile": "paper"}

    class Done:
        name = "Completed"

        def is_failed(self):
            return False

        def result(self):
            return {"profile": "tiny", "evaluation": {"B": {"base": 0.5, "trained": 0.75}}}

    class Failed(Done):
        name, message = "Failed", "dvc repro train failed with exit code 1: CUDA out of memory"

        def is_failed(self):
            return True

    sent = []
    import io
    from contextlib import redirect_stdout

    for state in (Done(), Failed()):
        out = io.StringIO()
        with redirect_stdout(out):
            pipeline.notify(None, Run(), state)
        sent.append(out.getvalue().strip())
    assert sent[0] == "SATORI pipeline run brave-fox (profile tiny): Completed; B 50.0 -> 75.0"
    assert sent[1] == (
        "SATORI pipeline run brave-fox (profile paper): Failed: dvc repro train failed with exit code 1: CUDA out of memory"
    )


def test_the_flow_orders_stages_by_dvc_s_graph_and_retries_the_network_ones(tmp_path):
    """A dvc.yaml listing a stage before the stage whose output it reads: the flow still runs producers first."""
    from dvc.exceptions import CyclicGraphError

    dvc_folder(
        tmp_path,
        "stages:\n"
        "  report:\n    cmd: cat b > c\n    deps: [b]\n    outs: [c]\n"
        "  transform:\n    cmd: cat a > b\n    deps: [a]\n    outs: [b]\n"
        "  fetch:\n    meta:\n      network: true\n    cmd: echo x > a\n    outs: [a]\n"
        "  lonely:\n    cmd: echo y > d\n    outs: [d]\n",
    )
    assert pipeline.pipeline_stages(tmp_path) == [
        ("fetch", True), ("transform", False), ("report", False), ("lonely", False)
    ]  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  one:\n    cmd: cat b > a\n    deps: [b]\n    outs: [a]\n"
        "  two:\n    cmd: cat a > b\n    deps: [a]\n    outs: [b]\n"
    )
    with pytest.raises(CyclicGraphError):  # DVC itself refuses a cycle
        pipeline.pipeline_stages(tmp_path)


def repro_records(monkeypatch, folder, stage: str, script: str) -> list:
    """The log records `repro(stage)` makes when the stage is a Python script (instead of `dvc repro`)."""
    import logging
    import subprocess
    import sys

    real_popen = subprocess.Popen
    monkeypatch.setattr(stage_runner.subprocess, "Popen", lambda cmd, **kw: real_popen([sys.executable, "-c", script], **kw))
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger(f"test-repro-{stage}")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(stage_runner, "get_run_logger", lambda: logger)
    stage_runner.repro(stage, folder)
    return records


def test_progress_bars_reach_the_console_now_and_then_and_never_the_run_log(monkeypatch, tmp_path):
    """A stage's tqdm bar redraws (\\r) many times a second: the console shows one every PROGRESS_EVERY_S and
    the last, so it is never silent long; the run log (Prefect's API handler) gets the stage's own lines only."""

    script = (
        "import sys, time\n"
        "print('[satori] scoring', flush=True)\n"
        "for i in range(1, 21):\n"
        "    sys.stdout.write(f'\\r{5 * i:3d}%|' + '#' * i + f'| {i}/20 [00:01<00:02, 9.9it/s]'); sys.stdout.flush()\n"
        "    time.sleep(0.01)\n"
        "print('\\nsome detail line', flush=True)\n"
    )
    records = repro_records(monkeypatch, tmp_path, "evaluate", script)
    progress = [r.getMessage() for r in records if getattr(r, console_filters.PROGRESS_ONLY, False)]
    assert len(progress) == 2 and progress[0].startswith("5%|#|") and progress[1].startswith("100%|")
    console = [r.getMessage() for r in records if console_filters._HideDetail().filter(r)]
    run_log = [r.getMessage() for r in records if console_filters._HideProgress().filter(r)]
    assert console == ["[satori] scoring", *progress]
    assert run_log == ["[satori] scoring", "", "some detail line"]
    assert "100%|" in (tmp_path / ".work/logs/evaluate.log").read_text()  # the stage's log keeps everything


def test_a_silent_stage_gets_a_heartbeat_on_the_console_only(monkeypatch, tmp_path):

    script = "import time\nprint('[satori] loading', flush=True)\ntime.sleep(3.5)\nprint('[satori] done', flush=True)\n"
    monkeypatch.setattr(console_filters, "HEARTBEAT_S", 1.0)
    records = repro_records(monkeypatch, tmp_path, "train", script)
    console = [r.getMessage() for r in records if console_filters._HideDetail().filter(r)]
    beats = [line for line in console if line.startswith("[satori] train: still running (")]
    assert console[0] == "[satori] loading" and console[-1] == "[satori] done" and 2 <= len(beats) <= 4
    assert [r.getMessage() for r in records if console_filters._HideProgress().filter(r)] == ["[satori] loading", "[satori] done"]


def test_the_prefect_cli_and_the_flow_share_one_prefect_home(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    shown = subprocess.run([sys.executable, "-m", "prefect", "config", "view", "--show-sources"], cwd=REPO_ROOT,
                           env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("PREFECT_HOME=")]
    home = line.split("=", 1)[1].split(" (", 1)[0].strip("'")
    assert (REPO_ROOT / home).resolve() == (REPO_ROOT / ".prefect").resolve()
    flow_home = subprocess.run([sys.executable, "-c", "import os, flows.pipeline; print(os.environ['PREFECT_HOME'])"],
                               cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert Path(flow_home.stdout.strip()).resolve() == (REPO_ROOT / ".prefect").resolve()


def test_the_artifact_links_the_mlflow_run_on_a_server():
    evaluation = {"B": {"base": 0.5, "trained": 0.75, "delta": 0.25}}
    url = "http://mlflow.example:5000/#/experiments/1/runs/abc"
    assert f"MLflow: [{url}]({url})" in pipeline.evaluation_markdown("tiny", evaluation, {"train": True}, url)
    local = "run `tiny-1` (abc); open with `mlflow ui --backend-store-uri sqlite:///m.db`"
    assert f"MLflow: {local}\n" in pipeline.evaluation_markdown("tiny", evaluation, {"train": True}, local)


@pytest.mark.slow
def test_a_flow_starts_its_temporary_prefect_server_on_a_saturated_machine(tmp_path):
    """Every core busy twice over and a fresh Prefect database to migrate: the flow's temporary server still
    comes up (Prefect's own 20 s wait failed so on a loaded machine)."""
    import os
    import subprocess
    import sys

    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * (os.cpu_count() or 1))]
    script = "import flows.pipeline\nfrom prefect import flow\n\n@flow\ndef hello():\n    return 42\n\nprint('result', hello())\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")  # a database the server has to create first
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "result 42" in done.stdout


def test_a_split_run_pushes_hands_the_gpu_stages_to_their_pool_and_only_restores_them_here(
    isolated_env, monkeypatch, tmp_path
):
    """gpu_deployment: the `pool: gpu` stages of dvc.yaml go, in one call, to the other pool's deployment after
    a `dvc push`; here every stage is `dvc repro --pull`, those stages restore-only (never run)."""
    import json

    events = []

    def fake_repro(stage, folder, *, pull=False, restore_only=False):
        events.append(("repro", stage, pull, restore_only))
        return not restore_only

    def fake_run_on_pool(deployment_name, stages, **parameters):
        events.append(("pool", deployment_name, tuple(stages), parameters["parent_run_id"]))
        return {stage: True for stage in stages}

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "evaluate.json").write_text(json.dumps({"B": {"base": 0.5, "trained": 0.75, "delta": 0.25}}))
    monkeypatch.setattr(pipeline, "repro", fake_repro)
    monkeypatch.setattr(pipeline, "run_on_pool", fake_run_on_pool)
    monkeypatch.setattr(pipeline, "push_run_cache", lambda folder: events.append(("dvc", "push")))
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(pipeline, "create_markdown_artifact", lambda markdown, key: None)
    shutil.copy(PARAMS_FILE, tmp_path / "params.yaml")
    dvc_folder(tmp_path)
    result = pipeline.satori_pipeline(gpu_deployment="satori-stages/gpu")
    gpu = ("train", "evaluate_base", "evaluate")
    assert pipeline.stage_pools(REPO_ROOT) == {s: "gpu" if s in gpu else "cpu" for s in pipeline.stage_pools(REPO_ROOT)}
    handed = events.index(("pool", "satori-stages/gpu", gpu, result["mlflow_run_id"]))
    assert events[handed - 1] == ("dvc", "push") and events[handed - 2] == ("repro", "preprocess", True, False)
    assert [e[1:] for e in events if e[0] == "repro"] == [
        (stage, True, stage in gpu) for stage, _ in pipeline.pipeline_stages(REPO_ROOT)
    ]  # every stage here is pulled from the remote first; the GPU ones only restored
    assert all(result["ran"].values())  # the GPU stages ran there, the rest here


def test_a_variant_s_folder_keeps_the_checkout_s_local_dvc_remote(tmp_path):
    import subprocess
    import sys

    repo = git_checkout(tmp_path)
    remote = tmp_path / "remote"
    subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "team", str(remote)], cwd=repo, check=True)
    run_dir = run_folders.prepare_run_dir(repo, "tiny", ["train.max_steps=2"], "variant")
    shown = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=run_dir, capture_output=True, text=True)
    assert shown.stdout.split()[:2] == ["team", str(remote)]
    default = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=run_dir, capture_output=True, text=True)
    assert default.stdout.strip() == "team"
    cache = subprocess.run([sys.executable, "-m", "dvc", "cache", "dir"], cwd=run_dir, capture_output=True, text=True)
    assert Path(cache.stdout.strip()) == (repo / ".dvc/cache").resolve()  # the checkout's cache, shared


def test_a_worker_at_another_commit_than_the_run_refuses_to_run_its_stages(isolated_env, monkeypatch):
    monkeypatch.delenv("SATORI_CODE_REVISION", raising=False)
    with pytest.raises(pipeline.StageError, match=r"this worker's checkout .* is at .*, the run at 0{40}: check out"):
        pipeline.satori_stages.fn(["train"], "parent", "0" * 40, isolated_env["MLFLOW_TRACKING_URI"])


@pytest.mark.parametrize(
    "args, says",
    [
        (["--set", "train.max_steps=true", "--name", "x"], r"--set train\.max_steps=true: .*train\.max_steps"),
        (["--profile", "papr"], r"unknown profile 'papr'; params.yaml defines \["),
        (["--set", "train.max_steps=3"], r"--set needs --name"),
        (["--set", "train.max_steps=3", "--name", "../escape"], r"run folder name '\.\./escape'"),
        (["--set", "nosuch.key=1", "--name", "x"], r"--set 'nosuch\.key=1': profile 'tiny' has no section 'nosuch'"),
        (["--set", "train.max_steps=[", "--name", "x"], r"--set 'train\.max_steps=\[': the value is not YAML"),
    ],
)
def test_a_bad_run_request_stops_at_once_with_one_line_and_leaves_nothing(tmp_path, args, says):
    """Before Prefect starts or a folder is made: one `satori: error:` line naming the flag, exit 2."""
    import os
    import re
    import subprocess
    import sys
    import time

    from tests.conftest import copy_checkout

    repo = copy_checkout(tmp_path / "checkout")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.pipeline", *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("satori: error: ") and re.search(says, lines[0]), done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts) == before
    assert not list((tmp_path / "prefect").rglob("*.db"))  # no Prefect server started, no database made
    assert took < 30, took  # seconds on an idle machine (the README says so); generous for a loaded one
