"""The whole default pipeline, for real, in a fresh copy of the checkout (the session's pipeline_run, minutes)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dvc_graph import pipeline_stages
from satori.core.config import REPO_ROOT
from tests.conftest import FAKE_TOKEN, accuracy_from_predictions, readme_commands

pytestmark = pytest.mark.slow

STAGES = [stage for stage, _ in pipeline_stages(REPO_ROOT)]
# always_changed: DVC runs them on every repro (watch_mirrors is how DVC sees mirror folders; record_run brings
# the MLflow parent run up to date, however the run was launched).
ALWAYS = ["watch_mirrors", "record_run"]




def default_profile(repo: Path):
    from satori.core.config import load_profile

    return load_profile(repo / "params.yaml")[1]


def stages_run(dvc_output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", dvc_output)


def test_every_stage_ran(pipeline_run):
    from satori.reports.results import console_table

    _, _, summary, log = pipeline_run
    assert summary["profile"] == "tiny"
    assert summary["ran"] == dict.fromkeys(STAGES, True)
    # The console ends with the table; the run's summary is a file (flows.pipeline.RUN_SUMMARY), not a JSON dump.
    assert '"mlflow_run_id"' not in log and console_table(summary["evaluation"]) in log


def test_dataset_rows(pipeline_run):
    repo, *_ = pipeline_run
    rows = default_profile(repo).download.synthetic.rows
    raw = (repo / "data/raw/data.jsonl").read_text().splitlines()
    assert len(raw) == rows
    report = json.loads((repo / "reports/preprocess.json").read_text())
    assert report["rows_in"] == rows and report["kept"] + report["rejected"] == rows
    train = [json.loads(line) for line in (repo / "data/processed/train.jsonl").read_text().splitlines()]
    assert len(train) == report["train"] >= 0.9 * rows
    row = train[0]
    assert row["messages"][0]["content"].startswith("<image>")
    # Relative to the checkout (the folder DVC runs stages in): the output hashes the same in any checkout.
    assert row["images"][0].startswith("data/raw/images/") and (repo / row["images"][0]).is_file()
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
        # Recomputed from the predictions, not read from VLMEvalKit's acc table as the stage does.
        assert row["trained"] == pytest.approx(accuracy_from_predictions(repo / "reports/evaluate", "trained", name))
        assert row["base"] == pytest.approx(accuracy_from_predictions(repo / "reports/evaluate_base", "base", name))
    assert summary["evaluation"] == metrics
    mmbench = metrics["SatoriTiny_MMBench"]
    assert 0.0 <= mmbench["base_no_instruction"] <= 1.0
    assert set(mmbench["categories"]) >= {"color_recognition"}
    assert 0 < mmbench["trained_mean_completion_tokens"] <= default_profile(repo).evaluate.max_new_tokens
    # The raw completion of every question, next to its index, for reading captions and boxes.
    raw = repo / "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar_completions.jsonl"
    records = [json.loads(line) for line in raw.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(default_profile(repo).benchmarks.items[1].questions))
    predictions = pd.read_csv(repo / "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar.tsv", sep="\t")
    by_index = dict(zip(predictions["index"], predictions["prediction"].astype(str)))
    for r in records:
        assert by_index[r["index"]] == (r["answer"] if r["answer"] is not None else r["completion"])


def test_mlflow_run_tree_with_rewards(pipeline_run):
    import mlflow

    repo, env, summary, _ = pipeline_run
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
    # watch_mirrors opens no MLflow run: it runs on every repro, and a plain `dvc repro` would add one each time.
    assert set(children) == set(STAGES) - set(ALWAYS)
    assert all(r.info.status == "FINISHED" for r in runs)
    train = children["train"]
    history = client.get_metric_history(train.info.run_id, "rewards/format/mean")  # ms-swift's Format, by its label
    assert [m.step for m in history] == list(range(1, default_profile(repo).train.max_steps + 1))
    assert all(0.0 <= m.value <= 1.0 for m in history)
    logged = [json.loads(line) for line in _artifact_text(client, train, "train/logging.jsonl").splitlines()]
    per_step = {
        int(r["global_step/max_steps"].split("/")[0]): r["rewards/Format/mean"] for r in logged if "reward" in r
    }
    assert "mlflow.parentRunId" in train.data.tags and len(train.data.params) < 80  # no trainer auto-log noise
    assert {m.step: m.value for m in history} == pytest.approx(per_step)
    assert {"diagnostics/format_rate", "diagnostics/whole_image_box_rate"} <= set(train.data.metrics)
    evaluate = children["evaluate"].data.metrics
    assert {"SatoriTiny_MMBench.trained", "SatoriTiny_MMStar.base"} <= set(evaluate)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server keeps the artifacts
    # The parent, as record_run left it: the summary of the run, its curves, what ran, how it was launched.
    parent = client.get_run(summary["mlflow_run_id"])
    evaluation = json.loads((repo / "reports/evaluate.json").read_text())
    train_summary = json.loads((repo / "reports/train.json").read_text())
    assert parent.data.metrics["SatoriTiny_MMStar.trained"] == pytest.approx(evaluation["SatoriTiny_MMStar"]["trained"])
    assert parent.data.metrics["train.final_reward"] == pytest.approx(train_summary["final_reward"])
    assert not [key for key in parent.data.metrics if key.startswith("ran.")]  # what ran is a tag, not 11 charts
    scores = ", ".join(f"{name} {100 * row['base']:.1f} -> {100 * row['trained']:.1f}" for name, row in evaluation.items())
    assert parent.data.tags["mlflow.note.content"].startswith(f"Accuracy (%), base -> trained: {scores}. Ran: ")
    # The parent lasts as long as its stages: it ends with the last one's end (record_run), not before.
    last_child_end = max(r.info.end_time for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert parent.info.end_time >= last_child_end
    assert parent.data.tags["satori.launched_by"] == "flow" and set(parent.data.tags["satori.ran"].split(",")) == set(children)
    assert parent.data.tags["mlflow.source.name"] == "flows/pipeline.py"
    curve = client.get_metric_history(parent.info.run_id, "train/reward")
    assert [m.step for m in curve] == list(range(1, default_profile(repo).train.max_steps + 1))
    # System metrics and the datasets each stage read.
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(train.data.metrics)
    inputs = {i.dataset.name: i for i in client.get_run(train.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"processed/train", "processed/val"}
    rows = len((repo / "data/processed/train.jsonl").read_text().splitlines())
    assert {t.key: t.value for t in inputs["processed/train"].tags}["rows"] == str(rows)
    benchmarks = {i.dataset.name for i in client.get_run(children["evaluate"].info.run_id).inputs.dataset_inputs}
    assert benchmarks == {spec.name for spec in default_profile(repo).benchmarks.items}
    # The published folder as a registered model version, its weights where publish left them.
    (version,) = client.search_model_versions("name = 'satori-tiny'")
    assert version.run_id == children["publish"].info.run_id
    assert version.tags["satori.location"] == "publish/hub"  # as dvc.yaml names it: no machine's path
    machine_paths = [(k, v) for k, v in {**version.tags, **parent.data.tags}.items() if str(repo) in v or "/tmp/" in v]
    assert machine_paths == []


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


# Runs the card's snippet once per case (its three variables at the top set to the case's), prints the completions.
SNIPPET_DRIVER = """
import contextlib, io, json, re, sys
snippet, cases = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
out = {}
for case in cases:
    code = re.sub(r"(?m)^IMAGE = .*$", "IMAGE = " + repr(case["image"]), snippet, count=1)
    code = re.sub(r"(?m)^QUESTION = .*$", "QUESTION = " + repr(case["question"]), code, count=1)
    code = re.sub(r"(?m)^OPTIONS = .*$", "OPTIONS = " + repr(case["options"]), code, count=1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "snippet", "exec"), {"__name__": "__main__"})
    out[case["index"]] = printed.getvalue().strip()
print(json.dumps(out))
"""


def test_the_card_s_how_to_use_snippet_answers_every_question_as_the_evaluation_did(pipeline_run, tmp_path):
    """The snippet taken from the generated card, run on the published folder for every question of
    SatoriTiny_MMStar, gives the answer the evaluation's trained model gave to each."""
    import base64
    import re
    import shutil

    import pandas as pd

    repo, env, *_ = pipeline_run
    folder = shutil.copytree(repo / "publish/hub", tmp_path / "hub")
    card = (folder / "README.md").read_text()
    snippet = card.split("## How to use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    table = pd.read_csv(repo / "data/benchmarks/SatoriTiny_MMStar.tsv", sep="\t")
    cases = []
    for _, row in table.iterrows():
        image = tmp_path / f"{row['index']}.png"
        image.write_bytes(base64.b64decode(row["image"]))
        options = [str(row[letter]) for letter in "ABCD" if letter in row and not pd.isna(row[letter])]
        cases.append({"index": str(row["index"]), "image": str(image), "question": row["question"], "options": options})
    (tmp_path / "snippet.py").write_text(snippet)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    (tmp_path / "driver.py").write_text(SNIPPET_DRIVER)
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "snippet.py"),
                           str(tmp_path / "cases.json")], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answered = json.loads(done.stdout.strip().splitlines()[-1])
    evaluated = {}
    completions = repo / "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar_completions.jsonl"
    for line in completions.read_text().splitlines():
        record = json.loads(line)
        evaluated[str(record["index"])] = record["answer"]
    assert len(evaluated) == len(cases) == 32
    snippet_answers = {}
    for index, completion in answered.items():
        match = re.search(r"<answer>(.*?)</answer>", completion, re.DOTALL)
        snippet_answers[index] = match.group(1).strip() if match else None
    assert snippet_answers == {index: answer.strip() for index, answer in evaluated.items()}
    assert (folder / "system_prompt.txt").read_text() == (repo / "prompt.txt").read_text()


def test_ms_swift_ran_no_remote_code(pipeline_run):
    """The no-remote-code plugin is imported first, and ms-swift's loader then warns of no config or processor loaded
    with trust_remote_code=True (its model_meta's warning is unconditional: that call is forced off by the plugin,
    tests/satori/training/test_swift_cli.py), and the model did train."""
    repo, *_ = pipeline_run
    logs = sorted((repo / ".work/train").glob("*/swift.log"))
    assert logs
    for log in logs:
        text = log.read_text()
        assert "Successfully imported external_plugins: [" in text and "swift_no_remote_code.py" in text, log
        assert not re.search(r"Loading (config|tokenizer/processor) from .* with trust_remote_code=True", text), log
        assert "global_step/max_steps" in text, log


def test_token_never_leaks(pipeline_run):
    repo, env, _, log = pipeline_run
    assert FAKE_TOKEN not in log
    server = repo.parent / "server"  # the MLflow server's store and artifacts
    searched = list(server.rglob("*"))
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
    assert stages_run(proc.stdout) == ALWAYS
    for stage in set(STAGES) - set(ALWAYS):
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout


def test_grpo_ran_the_project_rewards(pipeline_run):
    """The Format value ms-swift logged for every rollout is what satori.rewards.plugin computes for it."""
    from satori.rewards.plugin import Format

    import mlflow

    repo, env, summary, _ = pipeline_run
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    train = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("satori-tiny").experiment_id])
        if r.data.tags.get("satori.stage") == "train"
    )
    tables = [json.loads(line) for line in _artifact_text(client, train, "train/completions.jsonl").splitlines()]
    completions = [c for t in tables for c in t["completion"]]
    logged = [v for t in tables for v in t["Format"]]
    assert len(completions) >= 16
    assert Format()(completions) == logged
    assert {"BoundingBoxAccuracy", "VQAAccuracy", "CaptionAccuracy"} <= set(tables[0])
    report = json.loads((repo / "reports/train.json").read_text())
    assert 0.0 <= report["diagnostics.format_rate"] <= 1.0


def test_a_run_at_another_path_reproduces_the_committed_dvc_lock_and_leaves_git_clean(pipeline_run):
    """Every output hash of the run equals the checkout's dvc.lock, whatever changed: the embedded default computes
    the same bits on every machine (satori.core.cpu_numerics), so a difference here means the committed lock is stale
    (run `make run` and commit dvc.lock) or this machine computes differently. The run leaves `git status` clean but
    for dvc.lock (the copy is committed without it), and on a clean checkout (CI) the whole lock is the same text."""
    import yaml

    from satori.core.config import REPO_ROOT
    from tests.conftest import GIT_STATUS_AFTER_RUN

    repo, *_ = pipeline_run
    committed_text = (REPO_ROOT / "dvc.lock").read_text()
    here_text = (repo / "dvc.lock").read_text()

    def outputs(text: str) -> dict[str, dict[str, str]]:
        lock = yaml.safe_load(text)["stages"]
        return {stage: {out["path"]: out["md5"] for out in entry.get("outs", [])} for stage, entry in lock.items()}

    committed, here = outputs(committed_text), outputs(here_text)
    assert sorted(here) == sorted(committed) == sorted(STAGES)
    differing = {stage: (committed[stage], here[stage]) for stage in STAGES if committed[stage] != here[stage]}
    assert not differing, f"output hashes differ from the checkout's dvc.lock (committed, this run): {differing}"
    assert (repo.parent / GIT_STATUS_AFTER_RUN).read_text().splitlines() == ["?? dvc.lock"]
    clean = not subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)tests", ":(exclude)*.md"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()  # fmt: skip
    if clean:  # CI: a clone of the submitted commit, whose dvc.lock is kept current
        assert here_text == committed_text


def test_outputs_hold_no_path_of_the_checkout(pipeline_run):
    repo, *_ = pipeline_run
    for folder in ("data", "models", "publish", "reports"):
        for path in (repo / folder).rglob("*"):
            if path.is_file():
                assert str(repo).encode() not in path.read_bytes(), path


def _dry_run_after(repo, env, edit) -> list[str]:
    """Stages `dvc repro --dry` would run after edit(params), params.yaml restored afterwards (but ALWAYS)."""
    import yaml

    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    edit(params["tiny"])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", "--dry"], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        (repo / "params.yaml").write_text(original)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [stage for stage in stages_run(proc.stdout) if stage not in ALWAYS]


def test_a_benchmark_edit_never_refetches_the_model_or_retrains(pipeline_run):
    repo, env, *_ = pipeline_run

    def fewer_questions(tiny):
        tiny["benchmarks"]["items"][1]["questions"] -= 4

    assert _dry_run_after(repo, env, fewer_questions) == ["fetch_benchmarks", "evaluate_base", "evaluate", "publish"]


def test_a_training_edit_rescores_only_the_trained_model(pipeline_run):
    repo, env, *_ = pipeline_run

    def other_lr(tiny):
        tiny["train"]["learning_rate"] = 1.0e-4

    stages = _dry_run_after(repo, env, other_lr)
    # DVC's dry run lists the stages whose inputs changed now: evaluate follows once train has run.
    assert stages[0] == "train"
    assert not {"fetch_dataset", "fetch_base_model", "fetch_benchmarks", "preprocess", "evaluate_base"} & set(stages)


def test_another_profile_offline_fails_and_leaves_the_checkout_as_it_was(pipeline_run):
    repo, env, *_ = pipeline_run
    status = lambda: subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout  # noqa: E731
    before = status()
    lock = (repo / "dvc.lock").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--profile", "paper"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "download.hub.revision: 'main' is not a commit hash" in proc.stdout + proc.stderr
    assert status() == before and (repo / "dvc.lock").read_bytes() == lock
    assert "profile: tiny\n" in (repo / "params.yaml").read_text()
    assert (repo / "data/raw/data.jsonl").is_file() and (repo / "models/base/model.safetensors").is_file()
    assert "profile: paper\n" in (repo / ".runs/paper/params.yaml").read_text()


def test_dvc_compares_runs_across_commits(pipeline_run):
    import yaml

    repo, env, *_ = pipeline_run
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "a run"], cwd=repo, check=True)
    dvc = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    shown = json.loads(dvc("metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]
    evaluation = json.loads((repo / "reports/evaluate.json").read_text())
    train_summary = json.loads((repo / "reports/train.json").read_text())
    assert list(metrics) == ["reports/metrics.json"]  # the one metrics file: the stages' reports are outputs
    summary = metrics["reports/metrics.json"]["data"]
    assert summary["SatoriTiny_MMStar"] == evaluation["SatoriTiny_MMStar"]["trained"]
    assert summary["reward"]["final"] == train_summary["final_reward"]
    original = (repo / "params.yaml").read_text()
    rate = default_profile(repo).train.learning_rate
    params = yaml.safe_load(original)
    params["tiny"]["train"]["learning_rate"] = 1.0e-4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        diff = json.loads(dvc("params", "diff", "--json").stdout)
        changed = diff["params.yaml"]["tiny.train.learning_rate"]
        assert (changed["old"], changed["new"]) == (rate, 0.0001)
        table = json.loads(dvc("exp", "show", "--json").stdout)
        head = next(row for row in table if row["rev"] == "workspace")
        metrics_seen = head["data"]["metrics"]["reports/metrics.json"]["data"]
        assert metrics_seen["SatoriTiny_MMStar"] == evaluation["SatoriTiny_MMStar"]["trained"]
    finally:
        (repo / "params.yaml").write_text(original)
    plots = dvc("plots", "show", "--json")
    assert plots.returncode == 0, plots.stderr
    page = json.loads(plots.stdout)["data"]
    assert [p["type"] for p in page["reports/train_rewards.png"]] == ["image"]  # the picture: shows offline
    specs = json.dumps(page["reports/train_rewards.csv"])
    for column in ("reward", "format", "boxes", "answer", "caption"):
        assert column in specs


def test_dvc_experiments_compare_on_a_screen_and_a_repeated_one_never_retrains(pipeline_run):
    """`dvc exp run --temp` with another learning rate than the workspace's, then the same again: the experiment has
    its MLflow parent (params, metrics, how it was launched), the tables fit 200 columns, the repeat restores train."""
    import time

    import mlflow

    repo, env, *_ = pipeline_run
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "the baseline", "--allow-empty"], cwd=repo, check=True)
    dvc = lambda *args, **env_extra: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "dvc", *args], cwd=repo, env={**env, **env_extra}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    typed = lambda command, **env_extra: subprocess.run(  # noqa: E731
        ["bash", "-c", command], cwd=repo, env={**env, **env_extra}, capture_output=True, text=True, timeout=900
    )  # fmt: skip
    *experiments_typed, show_typed, diff_typed = readme_commands("dvc-exp")  # the README's block, as typed
    steps, took = 4, {}
    assert [shlex.split(line)[5] for line in experiments_typed] == ["lr-low", "lr-low-again"]  # dvc exp run --temp -n NAME
    for line in experiments_typed:
        assert f"-S tiny.train.learning_rate=5e-4 -S tiny.train.max_steps={steps}" in line
        name = shlex.split(line)[5]
        start = time.monotonic()
        done = typed(line)
        took[name] = time.monotonic() - start
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        ran = [stage for stage in stages_run(done.stdout) if stage not in ALWAYS]
        assert ran == ([] if name.endswith("again") else ["train", "evaluate", "publish"]), done.stdout[-3000:]
    print(f"dvc exp run --temp, seconds: {took}")
    table = json.loads(dvc("exp", "show", "--json").stdout)
    experiments = {e["name"]: e["revs"][0]["data"] for row in table for e in (row.get("experiments") or [])}
    assert experiments["lr-low-again"]["metrics"] == experiments["lr-low"]["metrics"]
    assert experiments["lr-low-again"]["deps"]["models/trained"] == experiments["lr-low"]["deps"]["models/trained"]
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("satori-tiny").experiment_id
    for name, rate in (("lr-low", 5.0e-4),):
        (parent,) = client.search_runs([experiment], f"tags.`satori.dvc_experiment` = '{name}' and tags.`satori.pipeline` = 'true'")
        assert parent.data.tags["satori.launched_by"] == "dvc exp run --temp"
        assert float(parent.data.params["train.learning_rate"]) == rate and parent.data.params["train.max_steps"] == str(steps)
        shown = experiments[name]["metrics"]["reports/metrics.json"]["data"]
        assert parent.data.metrics["SatoriTiny_MMBench.trained"] == pytest.approx(shown["SatoriTiny_MMBench"])
        assert parent.data.metrics["train.final_reward"] == pytest.approx(shown["reward"]["final"])
        assert parent.data.tags["satori.ran"].split(",") == ["train", "evaluate", "publish"]
    baseline = next(row["data"] for row in table if row.get("rev") == "workspace")["metrics"]["reports/metrics.json"]["data"]
    changed_accuracies = [name for name, accuracy in baseline.items() if name != "reward"
                          and accuracy != experiments["lr-low"]["metrics"]["reports/metrics.json"]["data"][name]]  # fmt: skip
    # The tables, as a 120-column terminal shows them, typed as the README gives them: `dvc exp show` with every
    # metric that differs whole (it folds the columns past them, the changed params and dependencies' hashes, into
    # one "…" column), `dvc exp diff` with each changed param and metric on its line, `dvc metrics show`.
    (metrics_typed,) = readme_commands("dvc-metrics")
    assert show_typed == "dvc exp show --only-changed --drop Created --no-pager" and diff_typed == "dvc exp diff lr-low"
    tables = {}
    for command in (show_typed, diff_typed, metrics_typed):
        shown = typed(command, COLUMNS="120")
        assert shown.returncode == 0, shown.stderr
        print(shown.stdout)
        assert max(len(line) for line in shown.stdout.splitlines()) <= 120, shown.stdout
        tables[command] = shown.stdout
    header = next(line for line in tables[metrics_typed].splitlines() if "reward.final" in line)
    assert {"SatoriTiny_MMBench", "SatoriTiny_MMStar", "reward.mean"} <= set(header.split())
    assert "…" not in tables[metrics_typed]
    header = next(line for line in tables[show_typed].splitlines() if "reward.final" in line)
    assert set(changed_accuracies) | {"reward.mean"} <= set(header.split()) and "Created" not in header
    rows = {line.split("[")[1].split("]")[0]: line.split() for line in tables[show_typed].splitlines() if "[lr-" in line}
    reward = f"{experiments['lr-low']['metrics']['reports/metrics.json']['data']['reward']['final']:.4f}"
    assert reward in rows["lr-low"] and reward in rows["lr-low-again"]
    # dvc exp diff: the experiment against the workspace, each changed param and metric with both values.
    lines = {line.split()[1]: line.split()[2:] for line in tables[diff_typed].splitlines() if line.count(" ") > 2}
    workspace_rate = default_profile(repo).train.learning_rate
    assert [float(v) for v in lines["tiny.train.learning_rate"][:2]] == [5.0e-4, workspace_rate]
    assert lines["tiny.train.max_steps"][:2] == [str(steps), str(default_profile(repo).train.max_steps)]
    assert float(lines["reward.final"][0]) == pytest.approx(float(reward), abs=1e-4)
    for name in changed_accuracies:
        assert name in lines, tables[diff_typed]


def test_a_second_checkout_pulls_the_run_from_a_dvc_remote_and_reruns_nothing(pipeline_run, tmp_path):
    """Beyond one machine: `dvc push` to a remote (a local folder here; S3, GCS or SSH alike), a clone elsewhere
    `dvc pull`s the outputs and finds every stage up to date."""
    repo, env, *_ = pipeline_run
    remote = tmp_path / "remote"
    dvc = lambda cwd, *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert dvc(repo, "remote", "add", "--local", "shared", str(remote)).returncode == 0
    pushed = dvc(repo, "push", "-r", "shared")
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "the run", "--allow-empty"], cwd=repo, check=True)
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(repo), str(second)], check=True)
    assert dvc(second, "remote", "add", "--local", "shared", str(remote)).returncode == 0
    pulled = dvc(second, "pull", "-r", "shared")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    dry = dvc(second, "repro", "--dry")
    assert dry.returncode == 0 and stages_run(dry.stdout) == ALWAYS, dry.stdout
    for path in ("models/trained/model.safetensors", "reports/evaluate/trained_satori-trained_SatoriTiny_MMStar.tsv"):
        assert (second / path).read_bytes() == (repo / path).read_bytes()


def test_a_repeated_run_restores_train_from_dvc_s_run_cache(pipeline_run):
    """The same code, data and params in a folder of their own (a variant whose override changes nothing):
    DVC restores every stage from its run cache, train included, instead of training again."""
    from satori.run_folders import prepare_run_dir
    from satori.core.config import load_profile

    repo, env, *_ = pipeline_run
    rate = load_profile(repo / "params.yaml")[1].train.learning_rate
    folder = prepare_run_dir(repo, "tiny", [f"train.learning_rate={rate}"], "same_again")
    done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert stages_run(done.stdout) == ALWAYS, done.stdout
    for stage in set(STAGES) - set(ALWAYS):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in done.stdout, stage
    for path in ("models/trained/model.safetensors", "reports/train_samples.md", "reports/train_rewards.csv"):
        assert (folder / path).read_bytes() == (repo / path).read_bytes(), path
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("satori-tiny").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`satori.launched_by` = 'dvc repro'", max_results=1,
                                   order_by=["attributes.start_time DESC"])  # fmt: skip
    assert parent.data.tags["satori.ran"] == "none" and parent.data.params["train.learning_rate"] == str(rate)
    # A run in which nothing ran is one parent run that says so, alone (not one cached child per stage).
    assert not client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    evaluation = json.loads((folder / "reports/evaluate.json").read_text())
    assert parent.data.metrics["SatoriTiny_MMBench.trained"] == pytest.approx(evaluation["SatoriTiny_MMBench"]["trained"])


def test_the_readme_s_numbers_are_the_run_s(pipeline_run):
    """`python -m satori.reports.results --check` as the README gives it, in the run's checkout; and, apart from the
    generator, each benchmark's accuracies recomputed from the prediction tables stand in the README's table."""
    repo, env, *_ = pipeline_run
    done = subprocess.run([sys.executable, "-m", "satori.reports.results", "--check"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("<!-- generated: results-table -->")[1].split("<!-- /generated: results-table -->")[0]
    for name in [spec.name for spec in default_profile(repo).benchmarks.items]:
        base = accuracy_from_predictions(repo / "reports/evaluate_base", "base", name)
        trained = accuracy_from_predictions(repo / "reports/evaluate", "trained", name)
        (row,) = [line for line in table.splitlines() if line.startswith(name + " ")]
        assert row.split()[1:4] == [f"{100 * base:.1f}", f"{100 * trained:.1f}", f"{100 * (trained - base):+.1f}"]
