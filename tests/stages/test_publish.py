from __future__ import annotations

import json
import logging

import pytest

from stages import publish
from stages.config import PublishParams, load_profile

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


def test_model_card_names_model_data_code_and_rewards():
    name, profile = load_profile(name="paper")
    card = publish.model_card(
        profile_name=name,
        profile=profile,
        evaluation=EVALUATION,
        data_source={"repo_id": "justairr/VQA-Verify", "revision": "main", "commit": "d" * 40},
        base_source={"repo_id": "Qwen/Qwen2.5-VL-3B-Instruct", "revision": "main", "commit": "b" * 40},
        code_rev="c" * 40,
    )
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "base_model: Qwen/Qwen2.5-VL-3B-Instruct" in card
    assert "- justairr/VQA-Verify" in card
    assert "| SatoriTiny_MMBench | 25.0 | 50.0 | +25.0 |" in card
    assert f"`{'d' * 40}`" in card and f"`{'b' * 40}`" in card and f"`{'c' * 40}`" in card
    assert "`external_format`, `external_bbox_acc`, `extern_vqa_acc`" in card


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


def test_params_dump_in_the_folder_holds_only_the_active_profile(tmp_path, monkeypatch):
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.json").write_text("{}")
    (trained / "optimizer.pt").write_text("x")
    metrics = tmp_path / "evaluate.json"
    metrics.write_text(json.dumps(EVALUATION))
    monkeypatch.setattr(publish, "TRAINED_DIR", trained)
    monkeypatch.setattr(publish, "EVAL_METRICS_FILE", metrics)
    monkeypatch.setattr(publish, "RAW_DIR", tmp_path)
    monkeypatch.setattr(publish, "BASE_MODEL_DIR", tmp_path)
    out = tmp_path / "hub"
    out.mkdir()
    name, profile = load_profile(name="tiny")
    publish.build_folder(name, profile, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "evaluation.json", "params.yaml"]
    import yaml

    dumped = yaml.safe_load((out / "params.yaml").read_text())
    assert list(dumped) == ["profile", "tiny"] and dumped["profile"] == "tiny"


def test_category_table():
    evaluation = {"B": {"categories": {"color": {"base": 0.5, "trained": 0.75, "delta": 0.25}}}}
    assert publish.category_table(evaluation).splitlines()[2] == "| B | color | 50.0 | 75.0 | +25.0 |"
