from __future__ import annotations

import mlflow

from satori import tracking


def test_stage_runs_nest_under_the_pipeline_run(isolated_env):
    with tracking.pipeline_run("exp-test", "tiny", {"train": {"lr": 1}}, "abc") as parent_id:
        with tracking.stage_run("download", "exp-test", "tiny", {"download": {"rows": 3, "nested": {"a": [1, 2]}}}):
            tracking.log_metrics({"rows": 3, "skip": float("nan"), "text": "ignored"})
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("exp-test").experiment_id])
    child = next(r for r in runs if r.info.run_name == "download")
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.tags["satori.stage"] == "download" and child.data.tags["satori.profile"] == "tiny"
    assert child.data.params == {"download.rows": "3", "download.nested.a": "[1, 2]"}
    assert child.data.metrics == {"rows": 3.0}
    experiment = client.get_experiment_by_name("exp-test")
    db = isolated_env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///")
    assert experiment.artifact_location.endswith("/mlartifacts/exp-test")
    assert experiment.artifact_location.startswith("file://" + db.rsplit("/", 1)[0])


def test_a_stage_run_by_hand_is_top_level(isolated_env, monkeypatch):
    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    with tracking.stage_run("train", "exp-solo", "tiny", {}) as run:
        pass
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    assert "mlflow.parentRunId" not in client.get_run(run.info.run_id).data.tags


def test_flatten_truncates_long_values():
    flat = tracking.flatten({"a": {"b": "x" * 600, "c": True}})
    assert flat == {"a.b": "x" * 500, "a.c": "true"}


def test_nested_metrics_are_logged_under_dotted_names(isolated_env):
    with tracking.stage_run("evaluate", "exp-nested", "tiny", {}) as run:
        tracking.log_metrics({"B": {"base": 0.5, "categories": {"color (hue)": {"delta": 0.25}}}, "note": "x"})
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    assert client.get_run(run.info.run_id).data.metrics == {"B.base": 0.5, "B.categories.color _hue_.delta": 0.25}


def test_a_copied_checkout_writes_its_artifacts_beside_its_own_store(tmp_path, monkeypatch):
    """MLflow stores an experiment's artifact folder as an absolute path; a copy must not write into the original."""
    import shutil

    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{original / 'mlflow.db'}")
    with tracking.stage_run("train", "exp-moved", "tiny", {}):
        pass
    shutil.copytree(original, copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    (copy / "note.txt").write_text("from the copy")
    with tracking.stage_run("train", "exp-moved", "tiny", {}) as run:
        tracking.log_artifact(copy / "note.txt")
    assert run.info.artifact_uri.startswith((copy / "mlartifacts" / "exp-moved").as_uri())
    assert list(copy.joinpath("mlartifacts").rglob("note.txt")) and not list(original.rglob("note.txt"))


def test_a_stage_killed_by_sigterm_ends_killed_and_a_sigkilled_one_is_marked_later(isolated_env):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "from satori import tracking\n"
        "import time\n"
        "with tracking.stage_run('train', 'exp-kill', 'tiny', {}) as run:\n"
        "    print(run.info.run_id, flush=True)\n"
        "    time.sleep(60)\n"
    )
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    statuses = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-c", script], env=isolated_env, stdout=subprocess.PIPE, text=True)
        run_id = proc.stdout.readline().strip()
        start = time.monotonic()
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)
        assert time.monotonic() - start < 10
        statuses.append((run_id, client.get_run(run_id).info.status))
    assert statuses[0][1] == "KILLED"
    assert statuses[1][1] == "RUNNING"  # SIGKILL leaves no chance to say anything...
    with tracking.stage_run("train", "exp-kill", "tiny", {}):  # ...so the next run of the stage marks it
        pass
    assert client.get_run(statuses[1][0]).info.status == "KILLED"


def test_a_temporary_dvc_experiment_logs_to_the_checkout_that_started_it(tmp_path, monkeypatch):
    from satori import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "checkout" / ".dvc" / "tmp" / "exps" / "tmpab12cd"  # where `dvc exp run --temp` runs
    monkeypatch.setattr(tracking, "REPO_ROOT", copy)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'checkout' / 'mlflow.db'}"
    monkeypatch.setattr(tracking, "REPO_ROOT", tmp_path / "checkout")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'checkout' / 'mlflow.db'}"
    assert tracking.store_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"
