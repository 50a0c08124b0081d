"""`make rehearse`: the paper profile's code path at tiny scale on CPU, checked by what it leaves (minutes)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import copy_with_venv, pipeline_env, readme_commands, run_summary

# The stand-in judge's key for this run (`make rehearse` passes the environment's on): no file may hold it.
JUDGE_CANARY = "sk-judge-canary-" + uuid.uuid4().hex

pytestmark = pytest.mark.slow

ALLOWED_MODEL_FILES = {
    "SOURCE.json", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "chat_template.jinja", "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
}  # fmt: skip


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The README's `make rehearse`, typed as is, in a fresh copy of the checkout: mirrors, then the rehearsal and
    rehearsal_lora profiles."""
    work = tmp_path_factory.mktemp("rehearsal")
    repo = copy_with_venv(work / "checkout")
    env = pipeline_env(work, SATORI_JUDGE_KEY=JUDGE_CANARY)
    done = subprocess.run(["bash", "-c", readme_commands("rehearse")[0]], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=2400)  # fmt: skip
    (work / "rehearse.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert '"mlflow_run_id"' not in done.stdout  # the console ends with the table, the summary is in a file
    results = {profile: run_summary(repo / ".runs" / profile) for profile in ("rehearsal", "rehearsal_lora")}
    return repo, env, results


def test_both_variants_ran_every_stage_in_their_own_folder(rehearsal):
    repo, _, results = rehearsal
    for profile, summary in results.items():
        assert summary["profile"] == profile and Path(summary["folder"]) == repo / ".runs" / profile
        assert all(summary["ran"].values())
    assert "profile: tiny\n" in (repo / "params.yaml").read_text()  # the checkout was not switched


def test_the_dataset_came_from_the_hub_layout_mirror_with_embedded_images(rehearsal):
    repo, *_ = rehearsal
    run_dir = repo / ".runs/rehearsal"
    raw = run_dir / "data/raw"
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.parquet")) == [
        "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
    ]  # fmt: skip
    assert not (raw / ".cache").exists()  # huggingface_hub's timestamped metadata is not part of the output
    source = json.loads((raw / "SOURCE.json").read_text())
    from satori.data.mirrors import DATASET_COMMIT

    assert source["commit"] == DATASET_COMMIT
    report = json.loads((run_dir / "reports/preprocess.json").read_text())
    assert report["rows_in"] == 64 and report["kept"] == 64
    rows = [json.loads(line) for line in (run_dir / "data/processed/train.jsonl").read_text().splitlines()]
    assert all(row["images"][0].startswith("data/processed/images/") for row in rows)  # written out once


def test_two_training_processes_trained_one_model_together(rehearsal):
    """Real data parallelism: one RNG state per rank, and each step saw world_size x per-device completions."""
    repo, *_ = rehearsal
    (output_dir,) = (repo / ".runs/rehearsal/.work/train").glob("*/swift_output")
    checkpoint = output_dir / "checkpoint-3"
    assert {p.name for p in checkpoint.glob("rng_state*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    training_tables: dict[int, dict] = {}  # the first table logged at a step is its training rollout
    for line in (output_dir / "completions.jsonl").read_text().splitlines():
        table = json.loads(line)
        training_tables.setdefault(int(table["step"][0]), table)
    world_size, per_device = 2, 2
    for step in (1, 2, 3):
        table = training_tables[step]
        # Gathered from both ranks: world_size x per-device completions, the 4 generations of one prompt
        # (each rank made 2 of them). Two independent copies would each log only their own 2.
        assert len(table["completion"]) == world_size * per_device
        assert len(set(table["prompt"])) == 1
    logged = [json.loads(line) for line in (output_dir / "logging.jsonl").read_text().splitlines()]
    assert sorted(r["global_step/max_steps"] for r in logged if "reward" in r) == ["1/3", "2/3", "3/3"]  # once each


def test_the_exported_full_model_is_every_shard_and_nothing_for_resuming(rehearsal):
    repo, *_ = rehearsal
    trained = repo / ".runs/rehearsal/models/trained"
    index = json.loads((trained / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    names = {p.name for p in trained.iterdir()}
    assert names == {"model.safetensors.index.json", *shards} | (names & ALLOWED_MODEL_FILES)
    hub = repo / ".runs/rehearsal/publish/hub"
    assert set(shards) <= {p.name for p in hub.iterdir()}
    for shard in shards:
        assert (hub / shard).read_bytes() == (trained / shard).read_bytes()


def test_the_lora_variant_exports_merged_weights_that_evaluate_and_publish_use(rehearsal):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    repo, *_ = rehearsal
    run_dir = repo / ".runs/rehearsal_lora"
    trained = run_dir / "models/trained"
    assert not (trained / "adapter_config.json").exists()
    assert json.loads((trained / "SOURCE.json").read_text())["tuner_type"] == "lora"
    from safetensors.torch import load_file

    merged = Qwen2_5_VLForConditionalGeneration.from_pretrained(trained).state_dict()
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(run_dir / "models/base").state_dict()
    changed = [k for k, v in merged.items() if not torch.equal(v, base[k])]
    assert changed, "the merged model equals the base model"
    # Recompute one merged weight from the adapter itself: W + (B @ A) * alpha / r.
    (checkpoint,) = (run_dir / ".work/train").glob("*/swift_output/checkpoint-3")
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    a_key = next(k for k in adapter if k.endswith("q_proj.lora_A.weight") and "language_model" in k)
    weight_key = a_key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
    delta = adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key] * (config["lora_alpha"] / config["r"])
    assert torch.allclose(merged[weight_key], base[weight_key] + delta, atol=1e-6)
    evaluation = json.loads((run_dir / "reports/evaluate.json").read_text())
    assert set(evaluation) == {"SatoriTiny_MMBench", "SatoriTiny_MMStar"}
    assert (run_dir / "publish/hub/README.md").is_file()


def test_a_free_form_benchmark_is_scored_by_exact_match_recomputed_from_its_predictions(rehearsal):
    """The non-multiple-choice path: VLMEvalKit's custom VQA dataset, answered by the adapter, scored by the
    VQA accuracy rule; here recomputed from the prediction tables and the benchmark's own answers."""
    import pandas as pd

    repo, *_ = rehearsal
    run_dir = repo / ".runs/rehearsal"
    truth = pd.read_csv(run_dir / "data/benchmarks/SatoriTiny_VQA.tsv", sep="\t", dtype=str).set_index("index")
    assert "A" not in truth.columns and set(truth["category"]) == {"color", "count"}
    evaluation = json.loads((run_dir / "reports/evaluate.json").read_text())["SatoriTiny_VQA"]
    for label, report in (("base", "evaluate_base"), ("trained", "evaluate")):
        table = pd.read_csv(run_dir / f"reports/{report}/{label}_satori-{label}_SatoriTiny_VQA.tsv", sep="\t",
                            dtype=str, keep_default_na=False).set_index("index")  # fmt: skip
        assert len(table) == len(truth) == 16
        right = [table.loc[i, "prediction"].strip().lower() == truth.loc[i, "answer"].strip().lower() for i in truth.index]
        assert evaluation[label] == pytest.approx(sum(right) / len(right))
        by_category = {c: [r for r, i in zip(right, truth.index) if truth.loc[i, "category"] == c] for c in ("color", "count")}
        for category, hits in by_category.items():
            assert evaluation["categories"][category][label] == pytest.approx(sum(hits) / len(hits))
    rules = json.loads((run_dir / "reports/evaluate/scoring.json").read_text())["benchmarks"]
    assert rules["SatoriTiny_VQA"].startswith("free-form: the answer equal to the reference")
    assert "no judge model" in rules["SatoriTiny_MMBench"]


def test_evaluation_ran_on_two_processes_and_scored_every_question(rehearsal):
    repo, *_ = rehearsal
    scores = json.loads((repo / ".runs/rehearsal/reports/evaluate_base.json").read_text())
    assert scores["base"]["SatoriTiny_MMBench"]["predictions"] == 32 and scores["base"]["SatoriTiny_MMStar"]["predictions"] == 16
    assert stage_run(rehearsal, "evaluate_base").data.params["evaluate.nproc_per_node"] == "2"


def stage_run(rehearsal, stage: str):
    """The MLflow run of one stage of the rehearsal profile's run."""
    import mlflow

    _, env, results = rehearsal
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    return client.search_runs(
        [client.get_experiment_by_name("satori-rehearsal").experiment_id],
        f"tags.`mlflow.parentRunId` = '{results['rehearsal']['mlflow_run_id']}' and tags.`satori.stage` = '{stage}'",
    )[0]


def test_the_judged_stand_ins_went_through_a_judge_whose_key_no_file_holds(rehearsal):
    """The paper profile's judged path: the stand-ins of MathVista, MATH-Vision and MathVerse scored by their own
    judged evaluate() through the stand-in judge on 127.0.0.1; each number's rule, the judge-free score, the agreement
    and the judge recorded in the report, MLflow and the card; the canary key in no file the pipeline wrote."""
    import pandas as pd

    repo, *_ = rehearsal
    run_dir = repo / ".runs/rehearsal"
    evaluation = json.loads((run_dir / "reports/evaluate.json").read_text())
    rules = json.loads((run_dir / "reports/evaluate/scoring.json").read_text())["benchmarks"]
    console = (repo.parent / "rehearse.log").read_text()
    assert "stand-in judge: " in console and ", 0 refused" in console
    for name, module in (("SatoriTiny_MathVista", "mathvista"), ("SatoriTiny_MathVision", "mathv"),
                         ("SatoriTiny_MathVerse", "mathverse")):  # fmt: skip
        row = evaluation[name]
        assert row["judge"]["model"] == "stand-in-judge" and row["judge"]["host"] == "127.0.0.1"
        assert f"vlmeval/dataset/utils/{module}.py sha256 " in row["judge"]["prompt"]
        assert "with the judge (evaluate.judge" in rules[name] and "judge-free" in rules[name]
        for label, report in (("base", "evaluate_base"), ("trained", "evaluate")):
            # The judge's verdicts as VLMEvalKit wrote them, recounted here by each benchmark's rule (the judge's
            # extraction `res` against the reference; MathVerse: the judge's 0/1 `score`), and the judge-free rule's
            # verdicts on what the tiny model answers, by hand: an option letter, or a number equal to the reference.
            suffix = "_judge_score" if module == "mathverse" else "_judge"
            judged = pd.read_csv(run_dir / f"reports/{report}/{label}_satori-{label}_{name}{suffix}.tsv", sep="\t",
                                 dtype=str, keep_default_na=False)  # fmt: skip
            assert len(judged) == 6
            if module == "mathvista":
                multi = judged["question_type"] == "multi_choice"
                reference = judged["answer_option"].where(multi, judged["answer"])
            else:
                reference = judged["answer"]
            if module == "mathverse":
                verdicts = [v == "True" for v in judged["score"]]
            else:
                verdicts = [same(res, ref, integer=module == "mathvista") for res, ref in zip(judged["res"], reference)]
            rule = [same(pred, ref) for pred, ref in zip(judged["prediction"], reference)]
            assert row[label] == pytest.approx(sum(verdicts) / 6)
            assert row[f"{label}_judge_free"] == pytest.approx(sum(rule) / 6)
            assert row[f"{label}_judge_agreement"] == pytest.approx(sum(a == b for a, b in zip(verdicts, rule)) / 6)
            assert row[f"{label}_judge_failures"] == 0
        paper = {"MathVista": (61.2, 67.4), "MathVision": (21.2, 26.1), "MathVerse": (47.6, 39.8)}  # the project page's
        assert (row["paper"]["base"], row["paper"]["trained"]) == paper[name.removeprefix("SatoriTiny_")]
        assert f"{name}: judge-free " in console
    # An offline rule benchmark beside them, its rule named.
    assert "MathJudger" in rules["SatoriTiny_OlympiadBench"] and "paper" in evaluation["SatoriTiny_OlympiadBench"]
    card = (run_dir / "publish/hub/README.md").read_text()
    assert "Judged benchmarks" in card and "`stand-in-judge` at 127.0.0.1" in card
    run = stage_run(rehearsal, "evaluate")
    assert run.data.params["judge.SatoriTiny_MathVista.model"] == "stand-in-judge"
    assert run.data.params["judge.SatoriTiny_MathVista.host"] == "127.0.0.1"
    assert "SatoriTiny_MathVerse.trained_judge_free" in run.data.metrics
    assert "SatoriTiny_MathVerse.trained_judge_agreement" in run.data.metrics
    # The key: in no file under the test's folder (the checkout, its runs, DVC's cache, MLflow's store, the log).
    searched = [p for p in repo.parent.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts]
    assert len(searched) > 100
    for path in searched:
        if path.is_file() and not path.is_symlink():
            assert JUDGE_CANARY.encode() not in path.read_bytes(), path


def same(answer: str, reference: str, integer: bool = False) -> bool:
    """An answer the tiny model gives (a letter, a number, a word) equal to the reference: the same letter (brackets
    and a closing stop aside), the same number (as integers where the rule reads int()), else the same word."""
    answer = answer.strip()
    if len(reference) == 1 and reference.isupper():
        return answer.strip("().:") == reference
    try:
        return int(answer) == int(reference) if integer else float(answer) == float(reference)
    except ValueError:
        return bool(answer) and answer.casefold() == reference.casefold()
