from __future__ import annotations

import json
import logging
import re

import pytest

from satori.publishing import card as publish
from satori.core.config import REPO_ROOT, PublishParams, load_profile

PARAMS = REPO_ROOT / "params.yaml"

EVALUATION = {
    "SatoriTiny_MMBench": {"base": 0.25, "trained": 0.5, "delta": 0.25},
    "SatoriTiny_MMStar": {"base": 0.125, "trained": 0.0625, "delta": -0.0625},
}


def test_evaluation_table():
    table = publish.evaluation_table(EVALUATION)
    assert table.splitlines() == [
        "| Benchmark | Base | Trained | Δ |",
        "|---|---:|---:|---:|",
        "| SatoriTiny_MMBench | 25.0 | 50.0 | +25.0 |",
        "| SatoriTiny_MMStar | 12.5 | 6.2 | -6.2 |",
    ]


def test_the_paper_s_numbers_stand_beside_ours_for_its_base_model_only():
    from satori.core.config import BenchmarksParams
    from satori.evaluation.run import summarize
    from satori.evaluation.scoring import PAPER_RESULTS

    accuracies = {"MMBench_DEV_EN": (0.6, 0.75), "MMStar": (0.5, 0.55), "MathVista_MINI": (0.4, 0.4),
                  "MMBench_DEV_EN_V11": (0.4, 0.5), "SatoriTiny_MathVerse": (0.25, 0.5)}  # fmt: skip
    kinds = {"SatoriTiny_MathVerse": {"kind": "synthetic_mathverse", "questions": 4}}
    benchmarks = BenchmarksParams(items=[{"name": n, **kinds.get(n, {"kind": "official"})} for n in accuracies])
    result = lambda acc: {"accuracy": acc, "categories": {}, "answer_shares": {}, "answer_tag_rate": 1.0,  # noqa: E731
                          "mean_completion_tokens": 1.0, "judge_free_accuracy": acc, "judge_agreement": 1.0,
                          "judge_failures": 0, "judge": {"model": "m", "host": "h", "prompt": "p"}}  # fmt: skip
    scores = {label: {n: result(a[i]) for n, a in accuracies.items()} for i, label in enumerate(("base", "trained"))}
    evaluation = summarize(scores, benchmarks, PAPER_RESULTS["Qwen/Qwen2.5-VL-3B-Instruct"])
    table = publish.evaluation_table(evaluation).splitlines()
    assert table[0] == "| Benchmark | Base | Trained | Δ | Paper: base | Paper: SATORI | Trained − paper |"
    # The SATORI-R1 project page: Qwen2.5-VL-3B MMBench 60.8 / MMStar 56.3 / MathVista 61.2 / MathVerse 47.6;
    # SATORI-3B 76.9 / 56.7 / 67.4 / 39.8; the v1.1 MMBench questions are not in the paper. A stand-in has the row
    # of the benchmark whose layout and scoring it rehearses.
    assert table[2:] == [
        "| MMBench_DEV_EN | 60.0 | 75.0 | +15.0 | 60.8 | 76.9 | -1.9 |",
        "| MMStar | 50.0 | 55.0 | +5.0 | 56.3 | 56.7 | -1.7 |",
        "| MathVista_MINI | 40.0 | 40.0 | +0.0 | 61.2 | 67.4 | -27.4 |",
        "| MMBench_DEV_EN_V11 | 40.0 | 50.0 | +10.0 | - | - | - |",
        "| SatoriTiny_MathVerse | 25.0 | 50.0 | +25.0 | 47.6 | 39.8 | +10.2 |",
    ]
    # Another base model (the evaluate stage passes no paper table): ours alone.
    assert "Paper" not in publish.evaluation_table(summarize(scores, benchmarks, {}))
    assert "Paper" not in publish.evaluation_table(EVALUATION)  # benchmarks it lacks


def test_model_card_names_model_data_code_and_rewards():
    name, profile = load_profile(PARAMS, name="paper")
    card = publish.model_card(
        profile_name=name,
        profile=profile,
        evaluation=EVALUATION,
        data_source={"repo_id": "justairr/VQA-Verify", "revision": "main", "commit": "d" * 40},
        base_source={"repo_id": "Qwen/Qwen2.5-VL-3B-Instruct", "revision": "main", "commit": "b" * 40},
        code_rev="c" * 40,
    )
    assert card.startswith("---\n") and "\nlibrary_name: transformers\n" in card
    assert "base_model: Qwen/Qwen2.5-VL-3B-Instruct" in card
    assert "- justairr/VQA-Verify" in card
    assert "| SatoriTiny_MMBench | 25.0 | 50.0 | +25.0 |" in card
    assert f"`{'d' * 40}`" in card and f"`{'b' * 40}`" in card and f"`{'c' * 40}`" in card
    assert "- Rewards: format (`external_format`), boxes (`external_bbox_acc`), answer (`extern_vqa_acc`) (mode" in card
    # How each benchmark's answers were matched, one line each (the paper profile: MMBench circular, MMStar not).
    assert "- MMBench_DEV_EN: VLMEvalKit's multiple-choice exact matching" in card and "circular" in card
    assert "- MMStar: VLMEvalKit's multiple-choice exact matching (the option's letter, or its text), no judge model, per question." in card


class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, private, exist_ok):
        FakeApi.calls.append(("create_repo", repo_id, private, exist_ok))

    def upload_folder(self, folder_path, repo_id, commit_message):
        FakeApi.calls.append(("upload_folder", folder_path, repo_id, commit_message))
        return type("Info", (), {"commit_url": f"https://hub.invalid/{repo_id}/commit/1"})()


def test_push_hands_the_token_to_huggingface_hub_only(tmp_path, monkeypatch, caplog, capsys):
    import huggingface_hub

    token = "hf_unitFakeToken_0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    caplog.set_level(logging.DEBUG)
    url = publish.push(tmp_path, PublishParams(push=True, repo_id="me/satori", private=True), "msg")
    assert url == "https://hub.invalid/me/satori/commit/1"
    assert FakeApi.calls == [
        ("init", token),
        ("create_repo", "me/satori", True, True),
        ("upload_folder", str(tmp_path), "me/satori", "msg"),
    ]
    out = capsys.readouterr()
    assert token not in caplog.text + out.out + out.err


def test_push_without_a_token_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    with pytest.raises(PermissionError, match="set HF_TOKEN or run `hf auth login`"):
        publish.push(tmp_path, PublishParams(push=True, repo_id="me/satori"), "msg")


def test_the_folder_holds_the_exported_model_and_only_the_active_profile(tmp_path, monkeypatch):
    trained = tmp_path / "trained"
    trained.mkdir()
    import numpy as np
    from safetensors.numpy import save_file

    (trained / "config.json").write_text("{}")
    save_file({"a": np.zeros((3, 4), np.float32)}, str(trained / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros(5, np.float32), "c": np.zeros((2, 2, 2), np.float32)},
              str(trained / "model-00002-of-00002.safetensors"))  # fmt: skip
    (trained / "SOURCE.json").write_text(json.dumps({"base_model": {"repo_id": "b"}, "data": {"repo_id": "d"}}))
    out = tmp_path / "hub"
    out.mkdir()
    name, profile = load_profile(PARAMS, name="tiny")
    monkeypatch.chdir(REPO_ROOT)  # params.yaml is read where DVC runs the stage
    publish.build_folder(name, profile, trained, EVALUATION, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "evaluation.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "params.yaml",
    ]  # fmt: skip
    import yaml

    dumped = yaml.safe_load((out / "params.yaml").read_text())
    assert list(dumped) == ["profile", "tiny"] and dumped["profile"] == "tiny"
    card = (out / "README.md").read_text()
    limits = card.split("## Intended use and limitations", 1)[1]
    assert "a tiny Qwen2.5-VL of 25 parameters" in limits  # 3*4 + 5 + 2*2*2, from both shards
    assert "red, green, blue and yellow" in limits and "not a model to use" in limits


def test_the_embedded_card_says_what_its_own_task_taught():
    from satori.publishing.card import limitations

    name, profile = load_profile(PARAMS, name="tiny")
    synthetic = profile.download.synthetic.model_copy(update={"task": "shapes"})
    shapes = profile.model_copy(update={"download": profile.download.model_copy(update={"synthetic": synthetic})})
    cue_text, shapes_text = ("\n".join(limitations(name, p, 25)) for p in (profile, shapes))
    assert "task `color_cue`" in cue_text and "taught those four colours" in cue_text
    assert "task `shapes`" in shapes_text and "colours, kinds and count" in shapes_text
    assert "red, green, blue and yellow" not in shapes_text


def argmax_answer(model_dir, steps: int = 16) -> list[int]:
    """The model's greedy answer to check_reloads' question, by hand: one full forward pass per token, the
    argmax appended, until an end-of-turn token (no generate(), no KV cache)."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the image?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (224, 168), (200, 40, 40))], return_tensors="pt")
    ids, answer = inputs["input_ids"], []
    stop = {151643, 151645}  # <|endoftext|>, <|im_end|>
    with torch.no_grad():
        for _ in range(steps):
            image = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"]}
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **image, use_cache=False).logits
            token = int(logits[0, -1].argmax())
            answer.append(token)
            if token in stop:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return answer


def test_a_folder_that_does_not_reload_or_answers_otherwise_is_refused(tmp_path, tiny_model_dir):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    hub = tmp_path / "hub"
    shutil.copytree(tiny_model_dir, hub)
    assert publish.check_reloads(hub, tiny_model_dir) == argmax_answer(tiny_model_dir)
    torch.manual_seed(0)
    weights = {k: v + torch.randn_like(v) for k, v in load_file(hub / "model.safetensors").items()}  # loads, wrong
    save_file(weights, hub / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(publish.ReloadMismatch, match="answers .* where .* answers"):
        publish.check_reloads(hub, tiny_model_dir)
    (hub / "model.safetensors").unlink()
    with pytest.raises(publish.ReloadMismatch, match="does not load with transformers"):
        publish.check_reloads(hub, tiny_model_dir)


def test_code_revision_moves_only_with_what_a_stage_depends_on(tmp_path):
    """The revision the card names moves with the stages' code and prompt.txt (publish's deps), not with
    results, params, tests, documentation, the flow, tracking or a module no stage imports."""
    import subprocess

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]

    def commit(message: str, **files: str) -> str:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
        subprocess.run([*git, "commit", "-qm", message], cwd=tmp_path, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()

    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    assert publish.code_revision(tmp_path) == "unknown"  # no dvc.yaml, no commit
    dvc_yaml = ("stages:\n  train:\n    cmd: python -m stages.train --prompt prompt.txt --raw data/raw --out models/x\n"
                "  fetch:\n    cmd: python -m stages.fetch --out data/raw\n"
                "  notify:\n    cmd: echo done\n")  # a user's own stage: no project code in it  # fmt: skip
    code = commit("code", **{"dvc.yaml": dvc_yaml, "params.yaml": "a: 1\n", "prompt.txt": "p\n", "dvc.lock": "x\n",
                             "stages/train.py": "from satori import model, tracking\n", "satori/model.py": "y = 1\n",
                             "stages/fetch.py": "x = 1\n", "satori/tracking.py": "t = 1\n"})  # fmt: skip
    assert publish.code_revision(tmp_path) == code
    (tmp_path / "dvc.lock").write_text("y\n")  # a run rewrote the lock
    assert publish.code_revision(tmp_path) == code
    later = commit("results and the rest", **{"dvc.lock": "z\n", "README.md": "notes\n", "tests/test_x.py": "",
                                             "flows/pipeline.py": "flow = 1\n", "satori/console.py": "c = 1\n",
                                             "satori/tracking.py": "t = 2\n", "params.yaml": "a: 2\n",
                                             "dvc.yaml": dvc_yaml + "# map\n", "data/.gitignore": "/raw\n"})  # fmt: skip
    assert later != code and publish.code_revision(tmp_path) == code
    for dep, text in (("satori/model.py", "y = 2\n"), ("stages/train.py", "from satori import model\n"),
                      ("stages/fetch.py", "x = 2\n"), ("prompt.txt", "q\n")):  # fmt: skip
        (tmp_path / dep).write_text(text)
        assert publish.code_revision(tmp_path) == f"{code}-dirty", dep
        code = commit(f"edit {dep}")
        assert publish.code_revision(tmp_path) == code, dep


def test_category_table():
    evaluation = {"B": {"categories": {"color": {"base": 0.5, "trained": 0.75, "delta": 0.25}}}}
    assert publish.category_table(evaluation).splitlines()[2] == "| B | color | 50.0 | 75.0 | +25.0 |"


def test_the_card_metadata_is_what_the_hub_reads(tmp_path):
    """Parsed back by huggingface_hub offline: base model, datasets, license, tags and a model-index per benchmark."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    name, profile = load_profile(PARAMS, name="paper")
    card_text = publish.model_card(
        profile_name=name,
        profile=profile,
        evaluation={k: {**v, "categories": {}} for k, v in EVALUATION.items()},
        data_source={"repo_id": "justairr/VQA-Verify", "commit": "d" * 40},
        base_source={"repo_id": "Qwen/Qwen2.5-VL-3B-Instruct", "commit": "b" * 40},
        code_rev="c" * 40,
        curves="reward_curves.png",
    )
    card = ModelCard(card_text)
    data = card.data.to_dict()
    assert data["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct" and data["datasets"] == ["justairr/VQA-Verify"]
    assert (data["license"], data["license_name"]) == ("other", "qwen-research")
    assert {"satori", "grpo"} <= set(data["tags"])
    model_name, results = model_index_to_eval_results(data["model-index"])
    assert model_name == "satori-paper"
    assert {(r.dataset_name, r.metric_type, r.metric_value) for r in results} == {
        ("SatoriTiny_MMBench", "accuracy", 50.0), ("SatoriTiny_MMStar", "accuracy", 6.25),
    }  # fmt: skip
    assert "![Rewards per step](reward_curves.png)" in card.text


def test_official_benchmarks_are_named_by_their_hub_datasets_in_the_model_index():
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    name, profile = load_profile(PARAMS, name="paper")
    evaluation = {b: {"base": 0.5, "trained": 0.6, "delta": 0.1, "categories": {}} for b in ("MMBench_DEV_EN", "MMStar")}
    evaluation["SatoriTiny_MMStar"] = {"base": 0.1, "trained": 0.2, "delta": 0.1, "categories": {}}
    card = ModelCard(publish.model_card(profile_name=name, profile=profile, evaluation=evaluation,
                                        data_source={"repo_id": "justairr/VQA-Verify"},
                                        base_source={"repo_id": "Qwen/Qwen2.5-VL-3B-Instruct"}, code_rev="c"))  # fmt: skip
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {(r.dataset_name, r.dataset_type, r.dataset_split) for r in results} == {
        ("MMBench_DEV_EN", "lmms-lab/MMBench", "dev"), ("MMStar", "Lin-Chen/MMStar", "val"),
        ("SatoriTiny_MMStar", "SatoriTiny_MMStar", None),  # synthetic: no Hub dataset
    }  # fmt: skip


def test_the_how_to_use_snippet_is_python_that_names_the_repo_or_this_folder_and_imports_what_it_uses():
    import ast

    from satori.core.config import VisionParams

    vision = VisionParams(min_pixels=3136, max_pixels=50176)
    for repo_id, folder in (("me/satori-3b", "snapshot_download('me/satori-3b')"), (None, 'Path(".")')):
        lines = publish.usage_snippet(repo_id, vision)
        code = "\n".join(lines[lines.index("```python") + 1 : lines.index("```", lines.index("```python") + 1)])
        tree = ast.parse(code)
        assert folder in code and publish.SYSTEM_PROMPT_FILE in code
        assert '"min_pixels": 3136, "max_pixels": 50176' in code  # the pixel limits it was trained at
        assert [n.targets[0].id for n in tree.body[:3]] == ["IMAGE", "QUESTION", "OPTIONS"]  # set at its top
        imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert imported <= used, f"imported, never used: {imported - used}"
        assert ("snapshot_download" in imported) == (repo_id is not None)


def test_the_snippet_s_question_is_laid_out_as_vlmevalkit_asks_it(tmp_path):
    """mcq_question (in the card's snippet) against VLMEvalKit's own ImageMCQDataset.build_prompt, on the rows of
    a synthetic benchmark and on one with a hint and five options."""
    import pandas as pd

    from satori.core.prompt import mcq_question
    from satori.data import synthetic
    from satori.evaluation.vlmeval_compat import import_vlmeval

    import_vlmeval()  # its transformers shim first
    from vlmeval.dataset.image_mcq import ImageMCQDataset

    rows = synthetic.benchmark_rows(questions=6, seed=3, circular=False, category_column="category")
    rows.append({**rows[0], "index": 99, "hint": "Look at the large shape.", "E": "purple"})
    table = pd.read_csv(synthetic.write_benchmark_tsv(tmp_path / "B.tsv", rows), sep="\t")  # as VLMEvalKit reads it
    dataset = ImageMCQDataset.__new__(ImageMCQDataset)  # its build_prompt reads the row only (images dumped aside)
    dataset.meta_only, dataset.img_root, dataset.dataset_name = False, str(tmp_path), "SatoriTiny_MMStar"
    for _, line in table.iterrows():
        texts = [m["value"] for m in dataset.build_prompt(line) if m["type"] == "text"]
        options = [line[letter] for letter in "ABCDE" if letter in line and not pd.isna(line[letter])]
        hint = None if pd.isna(line.get("hint")) else line["hint"]
        assert texts == [mcq_question(line["question"], options, hint)], line["index"]
    assert "Hint: Look at the large shape.\n" in mcq_question("q", ["a"], "Look at the large shape.")



@pytest.mark.parametrize(
    "repo_id",
    ['me/x")\nimport os; os.system("id")  #', "me/x'); print('owned", "../../etc", "a/b/c", "me/" + "x" * 200, "noslash"],
)
def test_a_repo_id_the_hub_would_refuse_fails_at_load_never_reaching_the_card(tmp_path, repo_id):
    from satori.core.config import ParamsError
    from tests.satori.core.test_config import write_params

    path = write_params(tmp_path, lambda raw: raw["tiny"]["publish"].update(repo_id=repo_id))
    with pytest.raises(ParamsError, match=r"tiny\.publish: .*repo_id"):
        load_profile(path)


def test_hostile_names_stay_text_in_the_card_and_cannot_change_the_snippet_s_code():
    import ast

    from satori.core.config import VisionParams

    hostile = '<script>alert(1)</script> | forged | 1 |\n# Injected heading [link](javascript:alert(1)) `code`'
    evaluation = {hostile: {"base": 0.5, "trained": 0.75, "delta": 0.25, "categories": {hostile: {"base": 0.5, "trained": 0.75, "delta": 0.25}}}}
    for table in (publish.evaluation_table(evaluation), publish.category_table(evaluation)):
        assert "<script>" not in table and "\n#" not in table and "](javascript" not in table
        header, _, *rows = table.splitlines()
        assert len(rows) == 1  # no forged row
        columns = lambda line: len(re.split(r"(?<!\\)\|", line)[1:-1])  # noqa: E731
        assert columns(rows[0]) == columns(header)  # no forged column
    vision = VisionParams(min_pixels=3136, max_pixels=50176)
    reference = publish.usage_snippet("me/satori", vision)

    def calls(lines):
        code = "\n".join(lines[lines.index("```python") + 1 : lines.index("```", lines.index("```python") + 1)])
        return [ast.dump(n.func) for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)]

    for repo_id in ("me/other-model", "org/x.y_z-1"):  # every id the Hub's validator lets through
        assert calls(publish.usage_snippet(repo_id, vision)) == calls(reference)
