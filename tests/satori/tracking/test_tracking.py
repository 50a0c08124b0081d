from __future__ import annotations

import json
import re

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
    from satori.tracking import store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / "checkout" / ".dvc" / "tmp" / "exps" / "tmpab12cd"  # where `dvc exp run --temp` runs
    monkeypatch.setattr(store, "REPO_ROOT", copy)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'checkout' / 'mlflow.db'}"
    monkeypatch.setattr(store, "REPO_ROOT", tmp_path / "checkout")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path / 'checkout' / 'mlflow.db'}"
    assert tracking.store_root(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def _runs(uri: str, experiment: str):
    client = mlflow.MlflowClient(tracking_uri=uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def test_the_last_stage_records_what_ran_what_dvc_reused_and_the_summary(isolated_env, tmp_path):
    uri = isolated_env["MLFLOW_TRACKING_URI"]
    curves = tmp_path / "curves.csv"
    curves.write_text("step,reward,format\n1,0.5,\n2,0.75,1.0\n")
    stages = ["fetch_dataset", "train"]
    outputs = {"fetch_dataset": "hash-data", "train": "hash-model"}
    summary = {"B": {"base": 0.5, "trained": 0.75}, "train": {"final_reward": 2.5}}
    parents = []
    for trains in (True, True, False):  # the first run makes both; the second reuses the data; the third nothing
        with tracking.pipeline_run("exp-record", "tiny", {"train": {"lr": 1}}, "a" * 40) as parent:
            for stage in stages if len(parents) == 0 else ["train"] if trains else []:
                with tracking.stage_run(stage, "exp-record", "tiny", {}):
                    pass
            assert tracking.record_pipeline_run("exp-record", "tiny", stages, outputs, summary, curves) == parent
        parents.append(parent)
    client, runs = _runs(uri, "exp-record")
    children = lambda parent: {  # noqa: E731
        r.data.tags["satori.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent
    }
    first, second, third = (children(p) for p in parents)
    assert set(first) == set(second) == {"fetch_dataset", "train"} and third == {}
    assert "satori.cached" not in first["fetch_dataset"].data.tags
    assert first["train"].data.tags["satori.outputs_md5"] == "hash-model"
    cached = second["fetch_dataset"].data.tags
    assert cached["satori.cached"] == "true" and cached["satori.produced_by"] == first["fetch_dataset"].info.run_id
    tags = [client.get_run(p).data.tags for p in parents]
    assert [t["satori.ran"] for t in tags] == ["fetch_dataset,train", "train", "none"]
    assert tags[2]["mlflow.note.content"] == (
        "Accuracy (%), base -> trained: B 50.0 -> 75.0. Nothing ran: DVC found every stage up to date (or restored "
        "it from its run cache)."
    )
    assert tags[1]["mlflow.note.content"].endswith("Ran: train; the other stages DVC reused.")
    assert tags[0]["satori.launched_by"] == "flow" and tags[0]["mlflow.source.git.commit"] == "a" * 40
    metrics = client.get_run(parents[1]).data.metrics
    assert metrics["B.trained"] == 0.75 and metrics["train.final_reward"] == 2.5
    assert not [key for key in metrics if key.startswith("ran")]  # what ran is the satori.ran tag
    history = client.get_metric_history(parents[1], "train/reward")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    assert [m.step for m in client.get_metric_history(parents[1], "train/format")] == [2]


def test_a_dvc_repro_gets_one_parent_run_with_the_profile_s_params(isolated_env, tmp_path):
    """No flow: the stages of one `dvc repro` (each its own process) find the parent its first stage opened."""
    import subprocess
    import sys

    import yaml

    from satori.core.config import REPO_ROOT, read_params

    stage = "import sys; from satori import tracking\nwith tracking.stage_run(sys.argv[1], 'exp-dvc', 'tiny', {}):\n    pass\n"
    record = "from satori import tracking; tracking.record_pipeline_run('exp-dvc', 'tiny', ['one', 'two'], {}, {'m': 1.0}, None)\n"
    (tmp_path / "stage.py").write_text(stage)
    (tmp_path / "record.py").write_text(record)
    python = sys.executable
    dvc_yaml = {"stages": {
        "one": {"cmd": f"{python} stage.py one > one.txt", "outs": ["one.txt"]},
        "two": {"cmd": f"{python} stage.py two > two.txt", "deps": ["one.txt"], "outs": ["two.txt"]},
        "last": {"cmd": f"{python} record.py", "deps": ["two.txt"], "always_changed": True},
    }}  # fmt: skip
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    env = {**isolated_env, "PYTHONPATH": str(REPO_ROOT)}
    dvc = lambda *args: subprocess.run([python, "-m", "dvc", *args], cwd=tmp_path, env=env, capture_output=True, text=True)  # noqa: E731
    assert dvc("init", "--no-scm").returncode == 0
    for _ in range(2):  # a run that trains, then a no-op run
        done = dvc("repro")
        assert done.returncode == 0, done.stdout + done.stderr
    client, runs = _runs(isolated_env["MLFLOW_TRACKING_URI"], "exp-dvc")
    parents = sorted((r for r in runs if r.data.tags.get("satori.pipeline") == "true"), key=lambda r: r.info.start_time)
    assert len(parents) == 2 and len(runs) == 4  # two parents, two stage runs: the no-op run adds its parent only
    first, noop = parents
    assert {r.data.tags["satori.stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id} == {"one", "two"}
    assert first.data.tags["satori.launched_by"] == "dvc repro" and first.data.tags["satori.ran"] == "one,two"
    assert noop.data.tags["satori.ran"] == "none" and noop.data.metrics["m"] == 1.0
    # A parent a `dvc repro` opened lasts until its last stage, and says which dvc process it belongs to.
    stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id]
    assert client.get_run(first.info.run_id).info.end_time >= max(r.info.end_time for r in stage_runs)
    assert re.fullmatch(r"dvc pid \d+ on \S+, started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.\d\d",
                        first.data.tags["satori.launch"])  # fmt: skip
    # The whole profile, one param per leaf, dotted; a value JSON-encoded unless a string, 500 characters at most.
    def dotted(tree, prefix=""):
        for key, value in tree.items():
            yield from dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]

    profile = read_params(REPO_ROOT / "params.yaml")["tiny"]
    assert first.data.params == {k: (v if isinstance(v, str) else json.dumps(v))[:500] for k, v in dotted(profile)}
    assert first.data.params["train.learning_rate"] == json.dumps(profile["train"]["learning_rate"])
    assert first.info.status == "FINISHED"


def test_stage_runs_log_system_metrics_and_their_datasets(isolated_env, tmp_path, monkeypatch):
    import hashlib
    import time

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    (tmp_path / "train.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    (tmp_path / "B.tsv").write_text("index\tquestion\n0\tq0\n1\tq1\n")
    with tracking.stage_run("train", "exp-system", "tiny", {}) as run:
        tracking.log_datasets({"processed/train": tmp_path / "train.jsonl", "B": tmp_path / "B.tsv"}, "training")
        time.sleep(2.5)
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    finished = client.get_run(run.info.run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(finished.data.metrics)
    inputs = {i.dataset.name: i for i in finished.inputs.dataset_inputs}
    assert set(inputs) == {"processed/train", "B"}
    train = inputs["processed/train"]
    assert train.dataset.digest == hashlib.md5((tmp_path / "train.jsonl").read_bytes()).hexdigest()
    tags = {t.key: t.value for t in train.tags}
    assert tags["rows"] == "3" and tags["mlflow.data.context"] == "training"
    assert {t.key: t.value for t in inputs["B"].tags}["rows"] == "2"
    assert train.dataset.source.endswith("train.jsonl\"}")


def test_no_credential_of_a_tracking_uri_reaches_a_link_or_a_parameter(monkeypatch):
    from satori.tracking import records

    assert tracking.without_credentials("https://alice:s3cret@mlflow.example.org:5000/") == "https://mlflow.example.org:5000/"
    assert tracking.without_credentials("http://token@host/x?y=1") == "http://host/x?y=1"
    assert tracking.without_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"

    class Run:
        class info:  # noqa: N801
            experiment_id, run_name = "7", "r"

    class Client:
        def __init__(self, uri):
            pass

        def get_run(self, run_id):
            return Run

    import mlflow

    monkeypatch.setattr(mlflow, "MlflowClient", Client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.org")
    assert records.run_link("abc") == "https://mlflow.example.org/#/experiments/7/runs/abc"
