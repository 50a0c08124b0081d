from __future__ import annotations

import json
from pathlib import Path

from stages import train
from stages.config import VisionParams, load_profile


def argv_dict(argv: list[str]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    key = None
    for token in argv:
        if token.startswith("--"):
            key = token[2:]
            parsed[key] = []
        else:
            parsed[key].append(token)
    return parsed


def test_paper_command_line_carries_the_published_flags():
    _, profile = load_profile(name="paper")
    args = argv_dict(train.swift_arguments(profile.train, Path("/m"), Path("/d"), Path("/o")))
    expected = {
        "rlhf_type": ["grpo"],
        "reward_funcs": ["external_format", "external_bbox_acc", "extern_vqa_acc"],
        "tuner_type": ["full"],
        "target_modules": ["all-linear"],
        "torch_dtype": ["bfloat16"],
        "max_completion_length": ["512"],
        "per_device_train_batch_size": ["4"],
        "learning_rate": ["1e-06"],
        "gradient_accumulation_steps": ["1"],
        "eval_steps": ["100"],
        "save_steps": ["100"],
        "save_total_limit": ["2"],
        "logging_steps": ["5"],
        "max_length": ["2048"],
        "warmup_ratio": ["0.05"],
        "dataloader_num_workers": ["4"],
        "num_generations": ["4"],
        "temperature": ["0.9"],
        "log_completions": ["true"],
        "bf16": ["true"],
        "use_vllm": ["false"],
        "dataset": ["/d/train.jsonl"],
        "val_dataset": ["/d/val.jsonl"],
    }
    for key, value in expected.items():
        assert args[key] == value, key
    assert args["external_plugins"] == [str(train.REWARD_PLUGIN)]
    assert Path(args["system"][0]).read_text().startswith("Given an image and a question")


def test_official_variant_passes_its_extra_flags():
    _, profile = load_profile(name="paper_official")
    args = argv_dict(train.swift_arguments(profile.train, Path("/m"), Path("/d"), Path("/o")))
    assert (args["num_generations"], args["top_p"], args["top_k"]) == (["16"], ["0.9"], ["50"])
    assert (args["beta"], args["deepspeed"], args["gradient_accumulation_steps"]) == (["0.001"], ["zero2"], ["2"])


def test_environment_sets_pixels_processes_and_the_mlflow_run(monkeypatch):
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    _, profile = load_profile(name="paper")
    env = train.swift_environment(profile.train, VisionParams(min_pixels=3136, max_pixels=401408), "run123", "exp")
    assert (env["MAX_PIXELS"], env["MIN_PIXELS"], env["NPROC_PER_NODE"]) == ("401408", "3136", "4")
    assert (env["MLFLOW_RUN_ID"], env["MLFLOW_EXPERIMENT_NAME"], env["USE_HF"]) == ("run123", "exp", "1")
    assert env["SATORI_REWARD_MODE"] == "corrected"
    _, tiny = load_profile(name="tiny")
    assert "NPROC_PER_NODE" not in train.swift_environment(tiny.train, tiny.vision, "r", "e")


def test_reward_table_reads_ms_swift_logging(tmp_path):
    records = [
        {
            "loss": 0.1,
            "reward": 1.5,
            "rewards/Format/mean": 1.0,
            "rewards/VQAAccuracy/mean": 0.5,
            "global_step/max_steps": "1/2",
        },
        {"eval_loss": 0.2, "global_step/max_steps": "1/2"},
        {
            "loss": 0.1,
            "reward": 1.0,
            "rewards/Format/mean": 0.75,
            "rewards/VQAAccuracy/mean": 0.25,
            "global_step/max_steps": "2/2",
        },
    ]
    (tmp_path / "logging.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    history = train.read_log_history(tmp_path)
    table = train.reward_table(history, ["external_format", "extern_vqa_acc"])
    assert table == [
        {"step": 1, "reward": 1.5, "external_format": 1.0, "extern_vqa_acc": 0.5},
        {"step": 2, "reward": 1.0, "external_format": 0.75, "extern_vqa_acc": 0.25},
    ]


def test_last_checkpoint_is_the_highest_step(tmp_path):
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert train.last_checkpoint(tmp_path).name == "checkpoint-10"


def test_diagnostics_tie_completions_to_image_sizes_and_flag_whole_image_boxes(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "<image>Q unique?"}], "width": 280, "height": 280},
        {"messages": [{"role": "user", "content": "<image>Q shared?"}], "width": 280, "height": 280},
        {"messages": [{"role": "user", "content": "<image>Q shared?"}], "width": 560, "height": 280},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    vision = VisionParams(min_pixels=3136, max_pixels=50176)  # 280x280 is seen as 224x224
    sizes = train.seen_sizes_by_question([tmp_path / "train.jsonl"], vision)
    assert sizes == {"Q unique?": (224, 224), "Q shared?": None}

    def prompt(question):
        return (
            f"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<image>{question}<|im_end|>\n<|im_start|>assistant\n"
        )

    whole = "<caption>c</caption> <bbox>[[0,0,224,224]]</bbox> <answer>A</answer>"
    small = "<caption>c</caption> <bbox>[[0,0,20,20],[5,5,9,9]]</bbox> <answer>B.</answer>"
    steps = [
        {"step": ["1", "1"], "prompt": [prompt("Q unique?"), prompt("Q shared?")], "completion": [whole, small]},
        {"step": ["2"], "prompt": [prompt("Q unique?")], "completion": ["junk"]},
        {"step": ["2"], "prompt": [prompt("Q unique?")], "completion": [small]},  # an eval rollout, same step
    ]
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    diagnostics = train.completion_diagnostics(tmp_path / "completions.jsonl", sizes)
    assert diagnostics == [
        {"step": 1, "format_rate": 1.0, "mean_boxes": 1.5, "whole_image_box_rate": 1.0, "mean_answer_chars": 1.5,
         "size_known_rate": 0.5},
        {"step": 2, "format_rate": 0.5, "mean_boxes": 1.0, "whole_image_box_rate": 0.0, "mean_answer_chars": 1.0,
         "size_known_rate": 1.0},
    ]  # fmt: skip
