from __future__ import annotations

import shutil

import pytest

from flows import pipeline
from stages.config import PARAMS_FILE, load_profile


def test_set_profile_switches_only_the_switch(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS_FILE, params)
    before = params.read_text()
    pipeline.set_profile("paper", params)
    after = params.read_text()
    assert load_profile(params)[0] == "paper"
    assert after.replace("profile: paper\n", "profile: tiny\n", 1) == before
    with pytest.raises(
        ValueError, match=r"unknown profile 'huge'; params.yaml defines \['paper', 'paper_official', 'tiny'\]"
    ):
        pipeline.set_profile("huge", params)


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

    from stages.transient import is_transient

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

    def fake_repro(stage):
        import os

        calls.append((stage, os.environ.get("SATORI_PARENT_RUN_ID")))
        return stage != "download"

    evaluation = {"B": {"base": 0.5, "trained": 0.75, "delta": 0.25}}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "evaluate.json").write_text(json.dumps(evaluation))
    monkeypatch.setattr(pipeline, "repro", fake_repro)
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    result = pipeline.satori_pipeline()
    assert [stage for stage, _ in calls] == list(pipeline.STAGES)
    assert {parent for _, parent in calls} == {result["mlflow_run_id"]}
    assert result["ran"] == {"download": False, "preprocess": True, "train": True, "evaluate": True, "publish": True}
    client = mlflow.MlflowClient(tracking_uri=isolated_env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.data.metrics["B.delta"] == 0.25 and parent.data.metrics["ran.download"] == 0.0


def test_prefect_yaml_deploys_the_flow_on_a_valid_schedule():
    import importlib
    from datetime import datetime

    import yaml
    from cronsim import CronSim

    from stages.config import REPO_ROOT, profile_names, read_params

    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    (deployment,) = spec["deployments"]
    module_path, function = deployment["entrypoint"].split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    assert getattr(module, function) is pipeline.satori_pipeline
    assert deployment["parameters"]["profile"] in profile_names(read_params())
    (schedule,) = deployment["schedules"]
    first = next(CronSim(schedule["cron"], datetime(2026, 1, 1)))
    assert first.weekday() == 6 and first.hour == 2  # Sunday 02:00
