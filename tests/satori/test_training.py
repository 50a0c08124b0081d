from __future__ import annotations

import json
from pathlib import Path

import pytest

from satori import training as train
from satori.config import REPO_ROOT, VisionParams, load_profile

PARAMS = REPO_ROOT / "params.yaml"


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


def swift_args(params, cuda=True, **kwargs):
    return train.swift_arguments(
        params,
        model_dir=Path("/m"),
        train_file=Path("/d/train.jsonl"),
        val_file=Path("/d/val.jsonl"),
        output_dir=Path("/o"),
        prompt_file=REPO_ROOT / "prompt.txt",
        cuda=cuda,
        **kwargs,
    )


def test_paper_command_line_carries_the_published_flags():
    _, profile = load_profile(PARAMS, name="paper")
    args = argv_dict(swift_args(profile.train))
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
    assert args["report_to"] == ["none"] and args["save_only_model"] == ["false"]
    assert Path(args["system"][0]).read_text().startswith("Given an image and a question")


def test_official_variant_passes_its_extra_flags():
    _, profile = load_profile(PARAMS, name="paper_official")
    args = argv_dict(swift_args(profile.train))
    assert (args["num_generations"], args["top_p"], args["top_k"]) == (["16"], ["0.9"], ["50"])
    assert (args["beta"], args["deepspeed"], args["gradient_accumulation_steps"]) == (["0.001"], ["zero2"], ["2"])


def test_environment_sets_pixels_and_processes_and_keeps_ms_swift_out_of_mlflow(monkeypatch):
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    monkeypatch.setenv("MLFLOW_RUN_ID", "someone-elses")
    _, profile = load_profile(PARAMS, name="paper")
    env = train.swift_environment(profile.train, VisionParams(min_pixels=3136, max_pixels=401408))
    assert (env["MAX_PIXELS"], env["MIN_PIXELS"], env["NPROC_PER_NODE"], env["USE_HF"]) == ("401408", "3136", "4", "1")
    assert "MLFLOW_RUN_ID" not in env  # the stage logs each step itself, once, across resumes
    assert env["SATORI_REWARD_MODE"] == "corrected"
    _, tiny = load_profile(PARAMS, name="tiny")
    assert "NPROC_PER_NODE" not in train.swift_environment(tiny.train, tiny.vision)


def test_several_processes_on_cpu_get_real_data_parallelism():
    _, tiny = load_profile(PARAMS, name="tiny")
    two = tiny.train.model_copy(update={"nproc_per_node": 2})
    on_cpu = argv_dict(swift_args(two, cuda=False))
    assert (on_cpu["use_cpu"], on_cpu["ddp_backend"]) == (["true"], ["gloo"])
    assert "ddp_backend" not in argv_dict(swift_args(two, cuda=True))  # NCCL, ms-swift's default on GPUs
    assert "use_cpu" not in argv_dict(swift_args(tiny.train, cuda=False))  # one process: nothing to sync


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
    unused = {"external_bbox_acc": None, "external_caption_acc": None}
    assert table == [
        {"step": 1, "reward": 1.5, "external_format": 1.0, "extern_vqa_acc": 0.5, **unused},
        {"step": 2, "reward": 1.0, "external_format": 0.75, "extern_vqa_acc": 0.25, **unused},
    ]


def test_last_checkpoint_is_the_highest_step(tmp_path):
    for step in (2, 10, 9):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert train.last_checkpoint(tmp_path).name == "checkpoint-10"


def test_diagnostics_tie_completions_to_their_rows_image_sizes_and_flag_whole_image_boxes(tmp_path):
    # Two rows ask the same question of images of different sizes: only the logged `solution` (the row's
    # source) tells them apart.
    rows = [
        {"messages": [{"role": "user", "content": "<image>Q?"}], "width": 280, "height": 280, "solution": "t:1"},
        {"messages": [{"role": "user", "content": "<image>Q?"}], "width": 560, "height": 280, "solution": "t:2"},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    vision = VisionParams(min_pixels=3136, max_pixels=50176)  # 280x280 is seen as 224x224, 560x280 as 308x140
    sizes = train.seen_sizes_by_source([tmp_path / "train.jsonl"], vision)
    assert sizes == {"t:1": (224, 224), "t:2": vision.seen_size(560, 280)}

    whole = "<caption>c</caption> <bbox>[[0,0,224,224]]</bbox> <answer>A</answer>"
    small = "<caption>c</caption> <bbox>[[0,0,20,20],[5,5,9,9]]</bbox> <answer>B.</answer>"
    # [0,0,224,224] covers the whole of the 224x224 image, not of the wider one.
    steps = [
        {"step": ["1", "1"], "solution": ["t:1", "t:2"], "completion": [whole, small]},
        {"step": ["2"], "solution": ["t:2"], "completion": ["junk"]},
        {"step": ["2"], "solution": ["t:2"], "completion": [whole]},  # an eval rollout, same step
        {"step": ["3"], "solution": ["elsewhere:9"], "completion": [whole]},  # a row not in the data
    ]
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    diagnostics = train.completion_diagnostics(tmp_path / "completions.jsonl", sizes)
    assert diagnostics == [
        {"step": 1, "format_rate": 1.0, "mean_boxes": 1.5, "whole_image_box_rate": 1 / 3, "mean_answer_chars": 1.5,
         "size_known_rate": 1.0},
        {"step": 2, "format_rate": 0.5, "mean_boxes": 0.5, "whole_image_box_rate": 0.0, "mean_answer_chars": 0.5,
         "size_known_rate": 1.0},
        {"step": 3, "format_rate": 1.0, "mean_boxes": 1.0, "whole_image_box_rate": 0.0, "mean_answer_chars": 1.0,
         "size_known_rate": 0.0},
    ]  # fmt: skip


def test_a_resumed_run_keeps_one_record_per_step(tmp_path):
    records = [
        {"reward": 1.0, "global_step/max_steps": "1/3"},
        {"reward": 2.0, "global_step/max_steps": "2/3"},  # logged, then killed before checkpoint-2
        {"reward": 2.5, "global_step/max_steps": "2/3"},  # the resumed run's step 2
        {"reward": 3.0, "global_step/max_steps": "3/3"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"reward": 4.0, "glo'  # a line cut by SIGKILL
    (tmp_path / "logging.jsonl").write_text(text)
    assert [(train.step_of(r), r["reward"]) for r in train.read_log_history(tmp_path)] == [(1, 1.0), (2, 2.5), (3, 3.0)]


def test_resume_picks_the_newest_whole_checkpoint_and_drops_a_half_written_one(tmp_path):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}/trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-3").mkdir()  # killed while saving: no trainer_state.json yet
    (tmp_path / "checkpoint-3/model.safetensors").write_bytes(b"half")
    assert train.resumable_checkpoint(tmp_path).name == "checkpoint-2"
    assert not (tmp_path / "checkpoint-3").exists()


def test_the_work_folder_is_keyed_by_what_decides_the_run(tmp_path):
    _, tiny = load_profile(PARAMS, name="tiny")
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("a\n")
    key = train.run_key(tiny.train, tiny.vision, [data])
    assert train.run_key(tiny.train, tiny.vision, [data]) == key
    changed_params = train.run_key(tiny.train.model_copy(update={"learning_rate": 1e-3}), tiny.vision, [data])
    (data / "train.jsonl").write_text("b\n")
    changed_data = train.run_key(tiny.train, tiny.vision, [data])
    assert len({key, changed_params, changed_data}) == 3
    work_root = tmp_path / "work"
    (work_root / key / "swift_output").mkdir(parents=True)
    kept = train.prepare_work_dir(work_root, key)
    assert (kept / "swift_output").is_dir()  # same key: kept, to resume from
    train.prepare_work_dir(work_root, changed_data)
    assert [p.name for p in work_root.iterdir()] == [changed_data]  # the stale run's folder is gone
    (work_root / changed_data / "swift_output").mkdir()
    (work_root / changed_data / train.FINISHED_FILE).write_text("checkpoint-4")
    fresh = train.prepare_work_dir(work_root, changed_data)
    assert list(fresh.iterdir()) == []  # a finished run is not resumed: it starts afresh


def sharded_checkpoint(folder: Path, shards: int = 2) -> None:
    """A checkpoint as ms-swift writes it with several ranks and DeepSpeed: shards, index, resume-only files."""
    folder.mkdir(parents=True)
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    weight_map = {f"layer{i}.weight": name for i, name in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for name in names:
        (folder / name).write_bytes(name.encode())
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        (folder / name).write_text("{}")
    resume_only = ["rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                   "training_args.bin", "args.json", "latest", "zero_to_fp32.py"]  # fmt: skip
    for name in resume_only:
        (folder / name).write_text("x")
    (folder / "global_step4").mkdir()
    (folder / "global_step4/mp_rank_00_model_states.pt").write_text("x")


def test_export_ships_every_shard_and_nothing_for_resuming(tmp_path):
    sharded_checkpoint(tmp_path / "checkpoint-4")
    base = tmp_path / "base"
    base.mkdir()
    (base / "preprocessor_config.json").write_text("{}")  # processor files the checkpoint lacks come from the base
    out = tmp_path / "out"
    out.mkdir()
    shipped = train.export_model(tmp_path / "checkpoint-4", base, out, "full", "5GB")
    index = json.loads((tmp_path / "checkpoint-4/model.safetensors.index.json").read_text())
    expected = {"model.safetensors.index.json", *index["weight_map"].values()}
    expected |= {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"}
    assert set(shipped) == expected | {"preprocessor_config.json"}
    (tmp_path / "checkpoint-4/model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"names shards that are not there: \['model-00002-of-00002"):
        train.export_model(tmp_path / "checkpoint-4", base, tmp_path / "out2", "full", "5GB")


def test_export_restores_the_kv_cache_and_drops_load_time_keys(tmp_path):
    checkpoint = tmp_path / "checkpoint-1"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"w")
    (checkpoint / "config.json").write_text(json.dumps({"use_cache": False, "text_config": {"use_cache": False}}))
    tokenizer = {"model_max_length": 32768, "local_files_only": True, "is_local": True}
    (checkpoint / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    out = tmp_path / "out"
    out.mkdir()
    train.export_model(checkpoint, tmp_path, out, "full", "5GB")
    config = json.loads((out / "config.json").read_text())
    assert config["use_cache"] is True and config["text_config"]["use_cache"] is True
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"model_max_length": 32768}


@pytest.mark.parametrize("profile_name", ["tiny", "paper", "paper_official", "rehearsal", "rehearsal_lora", "learn"])
def test_every_profile_command_line_parses_with_ms_swift_s_own_arguments(profile_name):
    _, profile = load_profile(PARAMS, name=profile_name)
    for cuda in (True, False):
        argv = swift_args(profile.train, cuda=cuda, resume_from=Path("/o/checkpoint-2"))
        train.check_swift_arguments(argv, profile.train.extra_args)  # raises on an unknown flag or bad value


def test_an_unknown_or_misspelt_extra_arg_fails_in_seconds_naming_it():
    _, tiny = load_profile(PARAMS, name="tiny")
    bad = tiny.train.model_copy(update={"extra_args": {"no_such_flag": 1, "bf16": False}})
    with pytest.raises(train.TrainConfigError, match="train.extra_args: no_such_flag is not an ms-swift argument"):
        train.check_swift_arguments(swift_args(bad), bad.extra_args)
    wrong_type = tiny.train.model_copy(update={"extra_args": {"beta": "lots"}})
    with pytest.raises(train.TrainConfigError, match="ms-swift refused the train arguments"):
        train.check_swift_arguments(swift_args(wrong_type), wrong_type.extra_args)


# ms-swift arguments that need a package the CPU set-up does not install, and the package.
GPU_PACKAGES = {"deepspeed": "deepspeed", "use_vllm": "vllm", "attn_impl": "flash-attn"}


@pytest.mark.parametrize("profile_name", ["tiny", "paper", "paper_official", "rehearsal", "rehearsal_lora", "learn"])
def test_what_a_profile_needs_is_installed_or_in_the_gpu_extra(profile_name):
    import importlib.util
    import re
    import tomllib

    _, profile = load_profile(PARAMS, name=profile_name)
    args = argv_dict(swift_args(profile.train))
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    gpu_extra = {re.split(r"[=<>!~ ]", req)[0] for req in pyproject["project"]["optional-dependencies"]["gpu"]}
    for flag, package in GPU_PACKAGES.items():
        value = args.get(flag, ["false"])[0]
        if value in ("false", "sdpa", "eager", "none"):
            continue
        importable = importlib.util.find_spec(package.replace("-", "_")) is not None
        assert importable or package in gpu_extra, f"{profile_name} sets --{flag} {value}: {package} is in no set-up"


def test_first_and_last_samples_show_both_steps_with_true_rewards(tmp_path):
    rows = {"t:1": {"possible_answers": ["B", "B. green"]}, "t:2": {"possible_answers": ["D"]}}
    steps = [
        {"step": ["1", "1"], "solution": ["t:1", "t:2"], "completion": ["<answer>A</answer>", "a|b"],
         "Format": [0.25, 1.0], "VQAAccuracy": [1.0, 0.0]},
        {"step": ["1"], "solution": ["t:2"], "completion": ["an eval rollout"], "Format": [0.0], "VQAAccuracy": [0.0]},
        {"step": ["7", "7"], "solution": ["t:2", "gone:3"], "completion": ["<answer>D</answer>", "x\n  y"],
         "Format": [0.0, 0.5], "VQAAccuracy": [0.0, 1.0]},
    ]  # fmt: skip
    (tmp_path / "completions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    # The control run logs 1 - r: the report shows r.
    text = train.first_and_last_samples(
        tmp_path / "completions.jsonl", rows, ["external_format", "extern_vqa_acc"], inverted=True, count=3
    )
    lines = text.splitlines()
    assert lines[0] == "| # | step 1 | step 7 |"
    assert lines[2] == (
        "| 1 | truth `B`: `` <answer>A</answer> `` (Format 0.75, VQAAccuracy 0.00)"
        " | truth `D`: `` <answer>D</answer> `` (Format 1.00, VQAAccuracy 1.00) |"
    )
    assert lines[3] == (
        "| 2 | truth `D`: `` a\\|b `` (Format 0.00, VQAAccuracy 1.00) | truth `?`: `` x y `` (Format 0.50, VQAAccuracy 0.00) |"
    )
    assert lines[4] == "| 3 |  |  |"
    assert "eval rollout" not in text
