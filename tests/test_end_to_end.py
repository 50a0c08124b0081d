"""The whole tiny pipeline, for real, in a fresh copy of the checkout (minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import copy_checkout

pytestmark = pytest.mark.slow

STAGES = ("download", "preprocess", "train", "evaluate", "publish")
FAKE_TOKEN = "hf_" + uuid.uuid4().hex  # made at run time, so no file holds it unless it leaked


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """Runs `python -m flows.pipeline` (the Prefect flow, as `make run` does) once for the module."""
    work = tmp_path_factory.mktemp("checkout")
    repo = copy_checkout(work)
    env = _env(work)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline"], cwd=repo, env=env, capture_output=True, text=True, timeout=1500
    )
    log = proc.stdout + proc.stderr
    (work / "pipeline.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    start = proc.stdout.rindex('{\n  "mlflow_run_id"')
    summary, _ = json.JSONDecoder().raw_decode(proc.stdout[start:])
    return repo, env, summary, log


def _env(work: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
        PREFECT_HOME=str(work / "prefect"),
        HF_TOKEN=FAKE_TOKEN,
        HF_HUB_OFFLINE="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def test_every_stage_ran(pipeline_run):
    _, _, summary, _ = pipeline_run
    assert summary["profile"] == "tiny"
    assert summary["ran"] == dict.fromkeys(STAGES, True)


def test_dataset_rows(pipeline_run):
    repo, *_ = pipeline_run
    raw = (repo / "data/raw/data.jsonl").read_text().splitlines()
    assert len(raw) == 96
    report = json.loads((repo / "reports/preprocess.json").read_text())
    assert report["rows_in"] == 96 and report["kept"] + report["rejected"] == 96
    train = [json.loads(line) for line in (repo / "data/processed/train.jsonl").read_text().splitlines()]
    assert len(train) == report["train"] >= 64
    row = train[0]
    assert row["messages"][0]["content"].startswith("<image>")
    assert Path(row["images"][0]).is_absolute() and Path(row["images"][0]).is_file()
    assert {"bboxs", "width", "height", "possible_answers", "image_caption"} <= set(row)


def test_trained_checkpoint_loads_and_generates(pipeline_run):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    repo, *_ = pipeline_run
    model_dir = repo / "models/trained"
    assert not (model_dir / "optimizer.pt").exists()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(repo / "models/base")
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed, "GRPO left every weight of the base model unchanged"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.open(repo / "data/raw/images/000000.png")], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_accuracies_for_both_benchmarks_and_models(pipeline_run):
    import pandas as pd

    repo, _, summary, _ = pipeline_run
    metrics = json.loads((repo / "reports/evaluate.json").read_text())
    assert set(metrics) == {"SatoriTiny_MMBench", "SatoriTiny_MMStar"}
    for name, row in metrics.items():
        for model in ("base", "trained"):
            assert 0.0 <= row[model] <= 1.0
        assert row["delta"] == pytest.approx(row["trained"] - row["base"])
        # The accuracy is VLMEvalKit's own acc table, recomputed here from its per-question verdicts.
        acc = _acc_from_results(repo / "reports/evaluate", "trained", name)
        assert row["trained"] == pytest.approx(acc)
    assert summary["evaluation"] == metrics
    mmbench = metrics["SatoriTiny_MMBench"]
    assert 0.0 <= mmbench["base_no_instruction"] <= 1.0
    assert set(mmbench["categories"]) >= {"color_recognition", "shape_recognition"}
    assert 0 < mmbench["trained_mean_completion_tokens"] <= 64  # evaluate.max_new_tokens
    # The raw completion of every question, next to its index, for reading captions and boxes.
    raw = repo / "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar_completions.jsonl"
    records = [json.loads(line) for line in raw.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(24))
    predictions = pd.read_csv(repo / "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar.tsv", sep="\t")
    by_index = dict(zip(predictions["index"], predictions["prediction"].astype(str)))
    for r in records:
        assert by_index[r["index"]] == (r["answer"] if r["answer"] is not None else r["completion"])


def _acc_from_results(report_dir: Path, label: str, benchmark: str) -> float:
    import pandas as pd

    table = pd.read_csv(report_dir / f"{label}_satori-{label}_{benchmark}_acc.csv")
    return float(table["Overall"].iloc[0])


def test_mlflow_run_tree_with_rewards(pipeline_run):
    import mlflow

    _, env, summary, _ = pipeline_run
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("satori-tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [summary["mlflow_run_id"]]
    children = {
        r.data.tags["satori.stage"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == summary["mlflow_run_id"]
    }
    assert set(children) == set(STAGES)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = children["train"]
    history = client.get_metric_history(train.info.run_id, "rewards/Format/mean")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert all(0.0 <= m.value <= 1.0 for m in history)
    logged = [json.loads(line) for line in _artifact_text(client, train, "train/logging.jsonl").splitlines()]
    per_step = {
        int(r["global_step/max_steps"].split("/")[0]): r["rewards/Format/mean"] for r in logged if "reward" in r
    }
    assert {m.step: m.value for m in history} == pytest.approx(per_step)
    assert {"diagnostics/format_rate", "diagnostics/whole_image_box_rate"} <= set(train.data.metrics)
    evaluate = children["evaluate"].data.metrics
    assert {"SatoriTiny_MMBench.trained", "SatoriTiny_MMStar.base"} <= set(evaluate)


def _artifact_text(client, run, path: str) -> str:
    local = client.download_artifacts(run.info.run_id, path)
    return Path(local).read_text()


def test_model_card_has_the_evaluation_table(pipeline_run):
    repo, *_ = pipeline_run
    card = (repo / "publish/hub/README.md").read_text()
    metrics = json.loads((repo / "reports/evaluate.json").read_text())
    for name, row in metrics.items():
        assert f"| {name} | {100 * row['base']:.1f} | {100 * row['trained']:.1f} |" in card
    assert (repo / "publish/hub/model.safetensors").is_file()
    assert json.loads((repo / "reports/publish.json").read_text())["pushed"] is False


def test_token_never_leaks(pipeline_run):
    repo, env, _, log = pipeline_run
    assert FAKE_TOKEN not in log
    store = Path(env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"))
    searched = [store, *store.parent.joinpath("mlartifacts").rglob("*")]
    searched += [p for p in repo.rglob("*") if ".git" not in p.parts]
    for path in searched:
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


def test_second_repro_runs_nothing(pipeline_run):
    repo, env, _, _ = pipeline_run
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Running stage" not in proc.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout


def test_grpo_ran_the_project_rewards(pipeline_run):
    """The Format value ms-swift logged for every rollout is what stages.rewards computes for it."""
    from stages.rewards import Format

    repo, *_ = pipeline_run
    tables = [json.loads(line) for line in (repo / "reports/train/completions.jsonl").read_text().splitlines()]
    completions = [c for t in tables for c in t["completion"]]
    logged = [v for t in tables for v in t["Format"]]
    assert len(completions) >= 16
    assert Format()(completions) == logged
    assert {"BoundingBoxAccuracy", "VQAAccuracy", "CaptionAccuracy"} <= set(tables[0])
    report = json.loads((repo / "reports/train.json").read_text())
    assert 0.0 <= report["diagnostics.format_rate"] <= 1.0
