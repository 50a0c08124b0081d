"""The `swift rlhf` command line of a GRPO run (ms-swift 4.x names), checked by ms-swift's own parser, and its environment.

The published recipe's flags, from the typed train params; a bad flag or value fails here, in
seconds, not minutes into ms-swift.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from satori.core.config import NUMBER, TrainParams, VisionParams
from satori.core.errors import InputError


REWARD_PLUGIN = Path(__file__).parent.parent / "rewards" / "plugin.py"
TEMPLATE_PLUGIN = Path(__file__).with_name("swift_template.py")
NO_REMOTE_CODE_PLUGIN = Path(__file__).with_name("swift_no_remote_code.py")
QWEN_TEMPLATE = "qwen2_5_vl"
QWEN_IMAGE_TOKEN_ID = 151655  # what ms-swift's qwen2_5_vl template hard-codes


def template_for(model_dir: Path) -> str:
    """ms-swift's qwen2_5_vl for a model with Qwen's token ids (every Hub model); for one with other ids (the
    embedded default's compact vocabulary), the plugin's template that reads them from the model's tokenizer."""
    # The plugin file names its template and imports nothing of the project (ms-swift loads it by path into the
    # trainer); importing it here, only when asked, keeps ms-swift out of what imports this module.
    from satori.training.swift_template import TOKENIZER_IDS_TEMPLATE

    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    return QWEN_TEMPLATE if config.get("image_token_id", QWEN_IMAGE_TOKEN_ID) == QWEN_IMAGE_TOKEN_ID else TOKENIZER_IDS_TEMPLATE


class TrainConfigError(InputError, ValueError):
    """The train params would fail inside ms-swift; the message names the key."""


def swift_arguments(
    params: TrainParams,
    *,
    model_dir: Path,
    train_file: Path,
    val_file: Path,
    output_dir: Path,
    prompt_file: Path,
    cuda: bool,
    resume_from: Path | None = None,
) -> list[str]:
    """The `swift rlhf` command line for these params (the published command's flags, ms-swift 4 names)."""
    template = template_for(model_dir)
    plugins = [NO_REMOTE_CODE_PLUGIN, REWARD_PLUGIN] + ([TEMPLATE_PLUGIN] if template != QWEN_TEMPLATE else [])
    args: dict[str, Any] = {
        "rlhf_type": "grpo",
        "model": str(model_dir),
        # A local folder carries no hub id, so name the architecture and template.
        "model_type": "qwen2_5_vl",
        "template": template,
        "external_plugins": [str(p) for p in plugins],
        "reward_funcs": params.reward_funcs,
        "use_vllm": params.rollout == "vllm",
        "tuner_type": params.tuner_type,
        "target_modules": params.target_modules,
        "torch_dtype": params.torch_dtype,
        "dataset": str(train_file),
        "val_dataset": str(val_file),
        "split_dataset_ratio": 0,
        "max_length": params.max_length,
        "max_completion_length": params.max_completion_length,
        "num_train_epochs": params.num_train_epochs,
        "max_steps": params.max_steps,
        "per_device_train_batch_size": params.per_device_train_batch_size,
        "per_device_eval_batch_size": params.per_device_eval_batch_size,
        "learning_rate": params.learning_rate,
        "gradient_accumulation_steps": params.gradient_accumulation_steps,
        "eval_strategy": "steps",
        "eval_steps": params.eval_steps,
        "save_strategy": "steps",
        "save_steps": params.save_steps,
        "save_total_limit": params.save_total_limit,
        "save_only_model": False,  # resuming needs the optimizer, scheduler and RNG states
        "max_shard_size": params.max_shard_size,
        "logging_steps": params.logging_steps,
        "warmup_ratio": params.warmup_ratio,
        "dataloader_num_workers": params.dataloader_num_workers,
        "num_generations": params.num_generations,
        "temperature": params.temperature,
        "system": str(prompt_file),
        "log_completions": params.log_completions,
        "seed": params.seed,
        "output_dir": str(output_dir),
        "add_version": False,
        # Skips ms-swift's ModelScope "is this local model the latest" lookup (~7 s of retries offline).
        "check_model": False,
        # The stage logs ms-swift's logging.jsonl to MLflow itself, once per step across resumes,
        # without the ~350 auto-logged trainer parameters of transformers' MLflowCallback.
        "report_to": "none",
    }
    if params.rollout == "vllm":
        args["vllm_mode"] = "colocate"  # on the training GPUs; no rollout server to start
    if params.steps_per_generation is not None:
        args["steps_per_generation"] = params.steps_per_generation
    if params.world_size > 1 and not cuda:
        # Without these, ms-swift 4.6 starts N CPU processes that each train their own copy.
        args.update(use_cpu=True, ddp_backend="gloo")
    if resume_from is not None:
        args["resume_from_checkpoint"] = str(resume_from)
    clash = sorted(set(params.extra_args) & set(args))
    if clash:
        typed = [key for key in clash if key in TrainParams.model_fields]
        raise TrainConfigError(
            f"train.extra_args: {', '.join(clash)}: the train stage sets "
            f"{'these' if len(clash) > 1 else 'this'} itself"
            + (f"; set {', '.join(f'train.{k}' for k in typed)} instead" if typed else "")
        )
    args.update(params.extra_args)
    argv: list[str] = []
    for key, value in args.items():
        argv.append(f"--{key}")
        values = value if isinstance(value, list) else [value]
        argv += [str(v).lower() if isinstance(v, bool) else str(v) for v in values]
    # What ms-swift's parser will take for flags must be exactly the options set above, each once: a value that
    # reads as a flag (`--output_dir`, `--x=y`) would override the stage's own (argparse: the last one wins).
    flags = [token for token in argv if token.startswith("-") and not NUMBER.fullmatch(token)]
    if flags != [f"--{key}" for key in args]:
        smuggled = sorted(set(flags) - {f"--{key}" for key in args} | {f for f in flags if flags.count(f) > 1})
        raise TrainConfigError(f"train.extra_args: a value would reach ms-swift as the flag(s) {', '.join(smuggled)}")
    return argv


def swift_argument_parser():
    """ms-swift's own parser of `swift rlhf` arguments (argparse, built from RLHFArguments; no model loaded)."""
    from swift.arguments import RLHFArguments
    from swift.utils.utils import _patch_get_type_hints
    from transformers import HfArgumentParser

    from satori.training import swift_template  # noqa: F401  registers the template an argv may name, as the run's plugin does

    with _patch_get_type_hints():
        return HfArgumentParser([RLHFArguments])


def swift_argument_names() -> set[str]:
    from swift.arguments import RLHFArguments

    return {f.name for f in dataclasses.fields(RLHFArguments)}


def check_swift_arguments(argv: list[str], extra_args: dict[str, Any]) -> None:
    """Parse argv with ms-swift's own argument classes; an unknown flag or a bad value fails here, in seconds."""
    unknown = sorted(set(extra_args) - swift_argument_names())
    if unknown:
        raise TrainConfigError(
            f"train.extra_args: {', '.join(unknown)} {'is not an' if len(unknown) == 1 else 'are not'} ms-swift "
            f"argument name(s) (swift rlhf would stop with remaining_argv)"
        )
    parser = swift_argument_parser()
    try:
        _, remaining = parser.parse_known_args(argv)
    except SystemExit:
        raise TrainConfigError(f"ms-swift refused the train arguments (see the message above): {argv}") from None
    if remaining:
        raise TrainConfigError(f"ms-swift does not know these train arguments: {remaining}")


# Where this machine is among the training machines (torch.distributed's names; ms-swift hands them to
# torch.distributed.run): set per machine, in the environment, beside train.nnodes in params.
NODE_RANK_ENV, MASTER_ADDR_ENV, MASTER_PORT_ENV = "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"
DEFAULT_MASTER_PORT = 29500  # torch.distributed's; every machine must use the same port


def swift_environment(params: TrainParams, vision: VisionParams, node_rank: int = 0) -> dict[str, str]:
    """ms-swift's environment for this machine: node_rank 0 is the train stage's, 1.. the workers' (nnodes > 1)."""
    env = dict(os.environ)
    env.update(
        USE_HF="1",  # hub ids are Hugging Face ids, not ModelScope ones
        MIN_PIXELS=str(vision.min_pixels),
        MAX_PIXELS=str(vision.max_pixels),
        SATORI_REWARD_MODE=params.reward_mode,
        SATORI_REWARD_CONTROL=params.reward_control,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REWARD_PLUGIN.parent.parent), env.get("PYTHONPATH")])),
    )
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):  # the stage logs; ms-swift must not open runs
        env.pop(key, None)
    if env.get("NNODES", str(params.nnodes)) != str(params.nnodes):
        raise TrainConfigError(
            f"NNODES={env['NNODES']} is set in the environment but train.nnodes is {params.nnodes}: set "
            f"train.nnodes in params.yaml (it decides the global batch) and unset NNODES"
        )
    if params.nnodes > 1:
        if env.get(NODE_RANK_ENV, str(node_rank)) != str(node_rank):
            raise TrainConfigError(
                f"{NODE_RANK_ENV}={env[NODE_RANK_ENV]}: the train stage (dvc repro train) is node 0 of "
                f"train.nnodes = {params.nnodes}; on the other machines run `{NODE_RANK_ENV}=<1..{params.nnodes - 1}> "
                f"{MASTER_ADDR_ENV}=<node 0's address> python -m stages.train --worker`"
            )
        if not env.get(MASTER_ADDR_ENV):
            raise TrainConfigError(
                f"train.nnodes is {params.nnodes}: set {MASTER_ADDR_ENV} to the address of node 0 (the machine "
                f"that runs the train stage) on every machine, and {MASTER_PORT_ENV} to a port open there "
                f"(default {DEFAULT_MASTER_PORT})"
            )
        env.update(NNODES=str(params.nnodes), NODE_RANK=str(node_rank), NPROC_PER_NODE=str(params.nproc_per_node))
        env.setdefault(MASTER_PORT_ENV, str(DEFAULT_MASTER_PORT))
    elif params.nproc_per_node > 1:
        env["NPROC_PER_NODE"] = str(params.nproc_per_node)
        env.setdefault(MASTER_PORT_ENV, str(29500 + os.getpid() % 1000))  # two rehearsals at once need two ports
    else:
        env.pop("NPROC_PER_NODE", None)
    return env
