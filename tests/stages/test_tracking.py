from __future__ import annotations

import mlflow

from stages import tracking


def test_stage_runs_nest_under_the_pipeline_run(isolated_env):
    with tracking.pipeline_run("exp-test", "tiny") as parent_id:
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
