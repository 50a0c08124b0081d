from __future__ import annotations

from pathlib import Path

import pytest

from satori.training import swift_cli
from satori.core.config import REPO_ROOT, VisionParams, load_profile

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
    return swift_cli.swift_arguments(
        params,
        model_dir=Path("/m"),
        train_file=Path("/d/train.jsonl"),
        val_file=Path("/d/val.jsonl"),
        output_dir=Path("/o"),
        prompt_file=REPO_ROOT / "prompt.txt",
        cuda=cuda,
        **kwargs,
    )


def test_official_variant_passes_its_extra_flags():
    _, profile = load_profile(PARAMS, name="paper_official")
    args = argv_dict(swift_args(profile.train))
    assert (args["num_generations"], args["top_p"], args["top_k"]) == (["16"], ["0.9"], ["50"])
    assert (args["beta"], args["deepspeed"], args["gradient_accumulation_steps"]) == (["0.001"], ["zero2"], ["2"])


def test_several_processes_on_cpu_get_real_data_parallelism():
    _, tiny = load_profile(PARAMS, name="tiny")
    two = tiny.train.model_copy(update={"nproc_per_node": 2})
    on_cpu = argv_dict(swift_args(two, cuda=False))
    assert (on_cpu["use_cpu"], on_cpu["ddp_backend"]) == (["true"], ["gloo"])
    assert "ddp_backend" not in argv_dict(swift_args(two, cuda=True))  # NCCL, ms-swift's default on GPUs
    assert "use_cpu" not in argv_dict(swift_args(tiny.train, cuda=False))  # one process: nothing to sync


# ms-swift arguments that need a package the CPU set-up does not install, and the package.
GPU_PACKAGES = {"deepspeed": "deepspeed", "use_vllm": "vllm", "attn_impl": "flash-attn"}


@pytest.mark.parametrize("profile_name", ["tiny", "paper", "paper_official", "rehearsal", "rehearsal_lora"])
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
    assert args["external_plugins"] == [str(swift_cli.NO_REMOTE_CODE_PLUGIN), str(swift_cli.REWARD_PLUGIN)]
    assert args["report_to"] == ["none"] and args["save_only_model"] == ["false"]
    assert Path(args["system"][0]).read_text().startswith("Given an image and a question")


def test_environment_sets_pixels_and_processes_and_keeps_ms_swift_out_of_mlflow(monkeypatch):
    monkeypatch.setenv("NPROC_PER_NODE", "8")
    monkeypatch.setenv("MLFLOW_RUN_ID", "someone-elses")
    _, profile = load_profile(PARAMS, name="paper")
    env = swift_cli.swift_environment(profile.train, VisionParams(min_pixels=3136, max_pixels=401408))
    assert (env["MAX_PIXELS"], env["MIN_PIXELS"], env["NPROC_PER_NODE"], env["USE_HF"]) == ("401408", "3136", "4", "1")
    assert "MLFLOW_RUN_ID" not in env  # the stage logs each step itself, once, across resumes
    assert env["SATORI_REWARD_MODE"] == "corrected"
    _, tiny = load_profile(PARAMS, name="tiny")
    assert "NPROC_PER_NODE" not in swift_cli.swift_environment(tiny.train, tiny.vision)


@pytest.mark.parametrize("profile_name", ["tiny", "paper", "paper_official", "rehearsal", "rehearsal_lora"])
def test_every_profile_command_line_parses_with_ms_swift_s_own_arguments(profile_name):
    _, profile = load_profile(PARAMS, name=profile_name)
    for cuda in (True, False):
        argv = swift_args(profile.train, cuda=cuda, resume_from=Path("/o/checkpoint-2"))
        swift_cli.check_swift_arguments(argv, profile.train.extra_args)  # raises on an unknown flag or bad value


def test_an_unknown_or_misspelt_extra_arg_fails_in_seconds_naming_it():
    _, tiny = load_profile(PARAMS, name="tiny")
    bad = tiny.train.model_copy(update={"extra_args": {"no_such_flag": 1, "bf16": False}})
    with pytest.raises(swift_cli.TrainConfigError, match="train.extra_args: no_such_flag is not an ms-swift argument"):
        swift_cli.check_swift_arguments(swift_args(bad), bad.extra_args)
    wrong_type = tiny.train.model_copy(update={"extra_args": {"beta": "lots"}})
    with pytest.raises(swift_cli.TrainConfigError, match="ms-swift refused the train arguments"):
        swift_cli.check_swift_arguments(swift_args(wrong_type), wrong_type.extra_args)


def test_fast_rollouts_and_vllm_make_a_command_line_ms_swift_parses():
    _, paper = load_profile(PARAMS, name="paper")
    hf = paper.train.model_copy(update={"steps_per_generation": 4})
    args = argv_dict(swift_args(hf))
    assert args["steps_per_generation"] == ["4"] and args["use_vllm"] == ["false"] and "vllm_mode" not in args
    vllm = paper.train.model_copy(update={"rollout": "vllm", "steps_per_generation": 4})
    argv = swift_args(vllm)
    args = argv_dict(argv)
    assert args["use_vllm"] == ["true"] and args["vllm_mode"] == ["colocate"]
    swift_cli.check_swift_arguments(argv, vllm.extra_args)  # ms-swift's own parser takes every flag
    namespace, remaining = swift_cli.swift_argument_parser().parse_known_args(argv)
    assert remaining == [] and namespace.use_vllm is True and namespace.vllm_mode == "colocate"
    assert namespace.steps_per_generation == 4
    assert "steps_per_generation" not in argv_dict(swift_args(paper.train))  # ms-swift's default: on-policy


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"num_generations": 3}, "num_generations: the train stage sets this itself; set train.num_generations"),
        ({"max_steps": 0}, "max_steps: the train stage sets this itself; set train.max_steps instead"),
        ({"eval_strategy": "no"}, "eval_strategy: the train stage sets this itself$"),
    ],
)
def test_extra_args_cannot_override_what_the_stage_sets(extra, message):
    _, tiny = load_profile(PARAMS, name="tiny")
    bad = tiny.train.model_copy(update={"extra_args": extra})
    with pytest.raises(swift_cli.TrainConfigError, match=message):
        swift_args(bad)


def _two_machines(monkeypatch, **env):
    for key in ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _, tiny = load_profile(PARAMS, name="tiny")
    return tiny.train.model_copy(update={"nnodes": 2}), tiny.vision


def test_two_machines_get_torch_distributed_s_node_settings_and_gloo_on_cpu(monkeypatch):
    train, vision = _two_machines(monkeypatch, MASTER_ADDR="10.0.0.1")
    env = swift_cli.swift_environment(train, vision)
    assert (env["NNODES"], env["NODE_RANK"], env["NPROC_PER_NODE"], env["MASTER_ADDR"], env["MASTER_PORT"]) == (
        "2", "0", "1", "10.0.0.1", "29500",
    )  # fmt: skip
    assert swift_cli.swift_environment(train, vision, node_rank=1)["NODE_RANK"] == "1"
    on_cpu = argv_dict(swift_args(train, cuda=False))  # one process a machine, two in all: they must sync
    assert (on_cpu["use_cpu"], on_cpu["ddp_backend"]) == (["true"], ["gloo"])


def test_a_machine_that_does_not_say_where_node_0_is_or_claims_its_rank_fails_before_training(monkeypatch):
    train, vision = _two_machines(monkeypatch)
    with pytest.raises(swift_cli.TrainConfigError, match="set MASTER_ADDR to the address of node 0"):
        swift_cli.swift_environment(train, vision)
    train, vision = _two_machines(monkeypatch, MASTER_ADDR="10.0.0.1", NODE_RANK="1")
    with pytest.raises(swift_cli.TrainConfigError, match=r"NODE_RANK=1: the train stage .* is node 0 .* --worker"):
        swift_cli.swift_environment(train, vision)  # the stage is node 0; a second machine runs the worker
    _, tiny = load_profile(PARAMS, name="tiny")
    monkeypatch.setenv("NNODES", "2")
    with pytest.raises(swift_cli.TrainConfigError, match="NNODES=2 is set in the environment but train.nnodes is 1"):
        swift_cli.swift_environment(tiny.train, tiny.vision)


def test_a_worker_machine_s_rank_lies_between_1_and_nnodes_minus_1(monkeypatch):
    from satori.training.grpo_launch import worker_rank

    train, _ = _two_machines(monkeypatch, NODE_RANK="1")
    assert worker_rank(train) == 1
    for bad in ("0", "2", "one"):
        monkeypatch.setenv("NODE_RANK", bad)
        with pytest.raises(swift_cli.TrainConfigError, match=rf"NODE_RANK={bad}: a worker machine is node 1 \.\. 1"):
            worker_rank(train)
    _, tiny = load_profile(PARAMS, name="tiny")
    with pytest.raises(swift_cli.TrainConfigError, match="train.nnodes is 1: there is no run"):
        worker_rank(tiny.train)


@pytest.mark.parametrize("zero", [2, 3])
def test_deepspeed_zero_for_large_models_parses_with_ms_swift_across_machines(monkeypatch, zero):
    """ZeRO-2 / ZeRO-3 (train.extra_args.deepspeed) on the paper's 4 GPUs x 2 machines: ms-swift's parser takes the
    command line, and the name maps to the ZeRO config ms-swift ships. (Unverified without GPUs and deepspeed.)"""
    import json

    import swift

    _, paper = load_profile(PARAMS, name="paper")
    train = paper.train.model_copy(update={"nnodes": 2, "extra_args": {**paper.train.extra_args, "deepspeed": f"zero{zero}"}})
    argv = swift_args(train)
    swift_cli.check_swift_arguments(argv, train.extra_args)
    namespace, _ = swift_cli.swift_argument_parser().parse_known_args(argv)
    assert namespace.deepspeed == f"zero{zero}" and namespace.per_device_train_batch_size == train.per_device_train_batch_size
    shipped = json.loads((Path(swift.__file__).parent / "config" / f"zero{zero}.json").read_text())
    assert shipped["zero_optimization"]["stage"] == zero


@pytest.mark.parametrize(
    "extra, says",
    [
        ({"stop_words": ["</s>", "--output_dir", "/tmp/elsewhere"]}, r"extra_args\.stop_words: value '--output_dir'"),
        ({"stop_words": ["--external_plugins=/tmp/evil.py"]}, r"extra_args\.stop_words: value '--external_plugins="),
        ({"external_plugins": "/tmp/evil.py"}, r"extra_args\.external_plugins: not settable from params"),
        ({"dataset": "other.jsonl"}, r"extra_args\.dataset: not settable"),
        ({"push_to_hub": True}, r"extra_args\.push_to_hub: not settable"),
        ({"hub_model_id": "me/x"}, r"extra_args\.hub_model_id: not settable"),
        ({"output_dir": "/tmp/x"}, r"extra_args\.output_dir: not settable"),
        ({"trust_remote_code": True}, r"extra_args\.trust_remote_code: not settable"),
        ({"custom_register_path": "/tmp/x.py"}, r"extra_args\.custom_register_path: not settable"),
        ({"deepspeed": "/tmp/any.json"}, r"extra_args\.deepspeed: '/tmp/any\.json': one of ms-swift's presets"),
        ({"--output_dir": "x"}, r"extra_args\.--output_dir: not settable"),
        ({"beta": "-x"}, r"extra_args\.beta: value '-x' would reach ms-swift as another flag"),
    ],
)
def test_params_cannot_hand_ms_swift_a_flag_the_stage_sets_or_one_that_loads_code_or_writes_elsewhere(
    tmp_path, extra, says
):
    from satori.core.config import ParamsError
    from tests.satori.core.test_config import write_params

    path = write_params(tmp_path, lambda raw: raw["tiny"]["train"]["extra_args"].update(extra))
    with pytest.raises(ParamsError, match=rf"tiny\.train: .*{says}"):
        load_profile(path)


def test_a_smuggled_flag_that_got_past_the_params_still_never_reaches_ms_swift():
    """Defence in depth: the argument list itself holds exactly the stage's options, each once."""
    _, tiny = load_profile(REPO_ROOT / "params.yaml", name="tiny")
    unchecked = tiny.train.model_construct(**{**tiny.train.__dict__, "extra_args": {"stop_words": ["--output_dir", "x"]}})
    with pytest.raises(swift_cli.TrainConfigError, match="a value would reach ms-swift as the flag.s. --output_dir"):
        swift_args(unchecked)
    negative = tiny.train.model_copy(update={"extra_args": {"beta": -0.5, "stop_words": ["-1"]}})  # numbers are values
    assert argv_dict(swift_args(negative))["beta"] == ["-0.5"]


def test_ms_swift_loads_no_remote_code():
    """Every profile's command line loads the no-remote-code plugin first; once it is imported, ms-swift's loader
    of Qwen2.5-VL (and every loader that does not say otherwise) passes trust_remote_code=False."""
    import importlib.util

    for name in ("tiny", "paper", "paper_official", "rehearsal", "rehearsal_lora"):
        _, profile = load_profile(REPO_ROOT / "params.yaml", name=name)
        plugins = argv_dict(swift_args(profile.train))["external_plugins"]
        assert plugins[0] == str(swift_cli.NO_REMOTE_CODE_PLUGIN), name
    from swift.model.models.qwen import Qwen2_5VLLoader
    from swift.model.register import ModelLoader

    spec = importlib.util.spec_from_file_location("no_remote_code", swift_cli.NO_REMOTE_CODE_PLUGIN)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # as ms-swift imports a plugin: by its path
    assert ModelLoader.default_trust_remote_code is False and Qwen2_5VLLoader.default_trust_remote_code is False
    # ms-swift's model_meta reads every model's config with trust_remote_code=True, hard-coded: forced off too.
    from unittest import mock

    from swift.model import model_meta

    with mock.patch("transformers.AutoConfig.from_pretrained", side_effect=RuntimeError("stop")) as loaded:
        with pytest.raises(RuntimeError, match="stop"):
            model_meta.AutoConfig.from_pretrained("some/model", trust_remote_code=True)
    assert loaded.call_args.kwargs["trust_remote_code"] is False
