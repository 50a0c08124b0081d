"""params.yaml, typed and validated once.

params.yaml holds one switch, `profile`, and one block per profile; each block
has a section per stage. A stage reads only its own section of the active
profile (`load_profile().train`), and dvc.yaml lists only that section
(`${profile}.train`), so editing an inactive profile re-runs nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from satori.core.errors import ParamsError
from satori.core.resize import IMAGE_FACTOR, seen_size
from satori.core.reward_registry import REWARD_NAMES

# The checkout this package lies in: for tests and benchmarks. Stages never use it; they read and
# write only the paths dvc.yaml gives them, relative to the folder DVC runs them in.
REPO_ROOT = Path(__file__).resolve().parents[2]  # satori/core/config.py
# DVC's own default params file, read relative to the folder the stage runs in.
PARAMS_FILE = Path("params.yaml")


# The train params that decide how many rows one batch takes; checked against the splits preprocessing made.
SPLITS = ("train", "val")  # the processed data's files, <split>.jsonl
SPLIT_SIZE_KEYS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "nproc_per_node",
    "nnodes",
    "gradient_accumulation_steps",
    "num_generations",
    "steps_per_generation",
)


def check_split_sizes(train_rows: int, val_rows: int, **batch: int | None) -> None:
    """Raise ParamsError, in one sentence naming the keys and the counts, when the splits cannot fill the
    batches ms-swift builds from them (it would stop at start-up, after the model has loaded)."""
    ranks, ranks_keys = batch["nproc_per_node"] * batch["nnodes"], "train.nproc_per_node"
    ranks_counts = f"{batch['nproc_per_node']}"
    if batch["nnodes"] > 1:
        ranks_keys, ranks_counts = ranks_keys + " x train.nnodes", ranks_counts + f" x {batch['nnodes']}"
    eval_batch = batch["per_device_eval_batch_size"] * ranks
    if val_rows < eval_batch:
        raise ParamsError(
            f"the validation split has {val_rows} rows, fewer than one evaluation batch, train.per_device_eval_"
            f"batch_size x {ranks_keys} = {batch['per_device_eval_batch_size']} x {ranks_counts} "
            f"= {eval_batch}: lower those or raise preprocess.val_fraction"
        )
    micro_steps = batch["steps_per_generation"] or batch["gradient_accumulation_steps"]
    prompts = batch["per_device_train_batch_size"] * ranks * micro_steps // batch["num_generations"]
    if train_rows < prompts:
        raise ParamsError(
            f"the train split has {train_rows} rows, fewer than the {prompts} distinct prompts one generation "
            f"takes, train.per_device_train_batch_size x {ranks_keys} x (train.steps_per_generation or "
            f"train.gradient_accumulation_steps) / train.num_generations = {batch['per_device_train_batch_size']} "
            f"x {ranks_counts} x {micro_steps} / {batch['num_generations']}"
        )


class Section(BaseModel):
    # strict: `max_steps: true` or `rows: "96"` is an error, not a silent 1 or 96. No .inf or .nan anywhere
    # (a learning rate of .inf fails a minute into ms-swift: "probability tensor contains inf, nan").
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def check_pixel_limits(min_pixels: int, max_pixels: int) -> None:
    """Ordered, and whole numbers of image tokens: ms-swift passes MIN_PIXELS / MAX_PIXELS to qwen-vl-utils as
    token counts (pixels // 28², rounded down), so any other value would train on other limits than the
    rewards, the galleries and the evaluation use."""
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value % (IMAGE_FACTOR * IMAGE_FACTOR):
            tokens = max(1, value // (IMAGE_FACTOR * IMAGE_FACTOR))
            raise ValueError(f"{name} ({value}) is not a multiple of 28 * 28 = 784 (one image token); "
                             f"e.g. {tokens * IMAGE_FACTOR * IMAGE_FACTOR} ({tokens} tokens)")  # fmt: skip


class VisionParams(Section):
    """Pixel limits of the image processor (MIN_PIXELS / MAX_PIXELS), shared by every stage."""

    min_pixels: int = Field(gt=0)
    max_pixels: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> VisionParams:
        check_pixel_limits(self.min_pixels, self.max_pixels)
        return self

    def seen_size(self, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) of an image as the model sees it under these limits; None where it cannot be resized."""
        return seen_size(width, height, self.min_pixels, self.max_pixels)


class SyntheticDataParams(Section):
    rows: int = Field(ge=8)
    seed: int = 0
    task: Literal["shapes", "color_cue"] = "shapes"  # satori.data.synthetic.TASKS


class HubDatasetParams(Section):
    repo_id: str
    revision: str
    local_mirror: str | None = None


class DownloadParams(Section):
    source: Literal["synthetic", "hub"]
    synthetic: SyntheticDataParams | None = None
    hub: HubDatasetParams | None = None

    @model_validator(mode="after")
    def _source_has_settings(self) -> DownloadParams:
        if getattr(self, self.source) is None:
            raise ValueError(f"source '{self.source}' needs a '{self.source}:' block")
        return self


class TinyModelParams(Section):
    seed: int = 0
    hidden_size: int = Field(ge=8)
    num_layers: int = Field(ge=1)
    bpe_vocab_size: int = Field(ge=300)
    # qwen: Qwen's special-token ids and 151,936 embedding rows (ms-swift's qwen2_5_vl template); compact: the
    # specials after the BPE tokens, ~1,000 rows, several times cheaper to train on CPU (satori.training.swift_template).
    vocab: Literal["qwen", "compact"] = "qwen"
    # Teacher-forced steps on synthetic SATORI answers before the model is saved (0: purely random).
    warmup_steps: int = Field(default=0, ge=0)
    warmup_examples: int = Field(default=512, ge=1)
    warmup_batch_size: int = Field(default=8, ge=1)
    warmup_lr: float = Field(default=1e-2, gt=0)
    # Share of warm-up examples that are color_cue scenes, captioned and boxed; and the share of those
    # shown with their answer (see synthetic.warmup_examples).
    warmup_cue_share: float = Field(default=0.0, ge=0, lt=1)
    warmup_cue_answered: float = Field(default=0.0, ge=0, le=1)
    # The others: stop (the target ends at "<answer>": caption and boxes only), or abstain (answered `?`: the base
    # learns to say it does not know, and GRPO, which rewards the right letter, to commit to one).
    warmup_cue_unanswered: Literal["stop", "abstain"] = "stop"
    # The warm-up also trains the vision-language merger (the vision blocks stay as initialised).
    warmup_trains_merger: bool = False


class BaseModelParams(Section):
    source: Literal["tiny", "hub"]
    tiny: TinyModelParams | None = None
    repo_id: str | None = None
    revision: str | None = None
    local_mirror: str | None = None  # a folder holding the model at that revision (offline machines)

    @model_validator(mode="after")
    def _source_has_settings(self) -> BaseModelParams:
        if self.source == "tiny" and self.tiny is None:
            raise ValueError("source 'tiny' needs a 'tiny:' block")
        if self.source == "hub" and not (self.repo_id and self.revision):
            raise ValueError("source 'hub' needs repo_id and revision")
        return self


# Which official benchmarks this pipeline scores offline, and which VLMEvalKit scores only with an LLM judge. The names
# live here, so that loading a profile refuses a judged benchmark without a judge (evaluate.judge); how each is scored,
# in words, is satori.evaluation.scoring's (evaluation), which no training stage imports. OlympiadBench and WeMath are
# offline: VLMEvalKit 0.0.19's OlympiadBench.evaluate scores with its rule-based MathJudger unless
# olympiad_use_api_judger is passed, and WeMath.evaluate takes model='exact_matching' (read in its source).
# MathVista, MathVision and MathVerse build a judge and assert it works (image_vqa.py): they need one.
OFFLINE_BENCHMARKS = ("MMBench_DEV_EN", "MMBench_DEV_EN_V11", "MMStar", "MMMU_DEV_VAL", "OlympiadBench", "WeMath")
JUDGED_BENCHMARKS = ("MathVista_MINI", "MathVision", "MathVision_MINI", "MathVerse_MINI")
# Synthetic benchmarks: MMBench-, MMStar-shaped and free-form ones of the project's own, and stand-ins in the TSV
# layout of a VLMEvalKit benchmark whose own evaluate() scores them (STAND_INS: kind -> that benchmark).
STAND_INS = {
    "synthetic_olympiadbench": "OlympiadBench",
    "synthetic_wemath": "WeMath",
    "synthetic_mathvista": "MathVista_MINI",
    "synthetic_mathvision": "MathVision",
    "synthetic_mathverse": "MathVerse_MINI",
}
SYNTHETIC_KINDS = ("synthetic_mmbench", "synthetic_mmstar", "synthetic_vqa", *STAND_INS)
# OlympiadBench's sources, as VLMEvalKit 0.0.19's OlympiadBench.evaluate tabulates them: it divides by each one's
# count, so a file (a stand-in too) holds every one of them.
OLYMPIAD_SOURCES = (
    "OE_MM_maths_en_COMP", "OE_MM_maths_zh_CEE", "OE_MM_maths_zh_COMP", "OE_MM_physics_en_COMP", "OE_MM_physics_zh_CEE",
    "OE_TO_maths_en_COMP", "OE_TO_maths_zh_CEE", "OE_TO_maths_zh_COMP", "OE_TO_physics_en_COMP", "OE_TO_physics_zh_CEE",
)  # fmt: skip


BENCHMARK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class JudgeRequired(ValueError):
    """A benchmark VLMEvalKit scores only with an LLM judge in a profile without one, or one with no known rule."""


def judged_benchmark(name: str) -> bool:
    """Whether VLMEvalKit scores this official benchmark (or a stand-in's: BenchmarkSpec.scored_as) with a judge."""
    return name in JUDGED_BENCHMARKS


def check_scorable(name: str, kind: str) -> None:
    """JudgeRequired, naming the benchmark, unless this pipeline knows how VLMEvalKit scores it (offline, or through
    the judge evaluate.judge names)."""
    if kind in SYNTHETIC_KINDS or judged_benchmark(name):
        return
    if name not in OFFLINE_BENCHMARKS:
        raise JudgeRequired(
            f"benchmark {name}: no scoring rule is known for it here (offline: {', '.join(OFFLINE_BENCHMARKS)}; with "
            f"a judge: {', '.join(JUDGED_BENCHMARKS)}); add it to satori.core.config.OFFLINE_BENCHMARKS (or "
            f"JUDGED_BENCHMARKS) and satori.evaluation.scoring.OFFICIAL_RULES once its VLMEvalKit evaluate() is read"
        )


class BenchmarkSpec(Section):
    name: str
    # synthetic_vqa: free-form questions (no options), the non-multiple-choice path at tiny scale.
    kind: Literal["synthetic_mmbench", "synthetic_mmstar", "synthetic_vqa", "synthetic_olympiadbench",
                  "synthetic_wemath", "synthetic_mathvista", "synthetic_mathvision", "synthetic_mathverse",
                  "official"]  # fmt: skip
    questions: int = Field(default=0, ge=0)
    seed: int = 0
    task: Literal["shapes", "color_cue"] = "shapes"  # of a synthetic kind: satori.data.synthetic.TASKS

    @property
    def free_form(self) -> bool:
        return self.kind == "synthetic_vqa"

    @property
    def scored_as(self) -> str:
        """The VLMEvalKit benchmark whose TSV layout and evaluate() this one has; '' for an MCQ or free-form one."""
        if self.kind in STAND_INS:
            return STAND_INS[self.kind]
        official = self.kind == "official" and (self.name in STAND_INS.values() or judged_benchmark(self.name))
        return self.name if official else ""

    @property
    def judged(self) -> bool:
        """Scored by VLMEvalKit's judged evaluate(): the judge evaluate.judge names."""
        return judged_benchmark(self.scored_as)

    @model_validator(mode="after")
    def _scorable(self) -> BenchmarkSpec:
        # The name becomes file names (its TSV, its gallery, VLMEvalKit's results): a plain name, no path.
        if not BENCHMARK_NAME.fullmatch(self.name) or ".." in self.name:
            raise ValueError(f"name {self.name!r}: letters, digits, '_', '-' and '.' only (it names files)")
        check_scorable(self.name, self.kind)  # a benchmark no known rule scores fails here, named
        least = {"synthetic_olympiadbench": 10, "synthetic_wemath": 2}.get(self.kind, 1)
        if self.kind != "official" and self.questions < least:
            # An OlympiadBench stand-in holds each of its 10 sources; a WeMath one a two- and a three-step problem.
            raise ValueError(f"questions: a {self.kind} benchmark needs at least {least}, got {self.questions}")
        return self


class BenchmarksParams(Section):
    items: list[BenchmarkSpec] = Field(min_length=1)
    # Where official TSVs already lie (VLMEvalKit's LMUData layout); none: VLMEvalKit downloads.
    mirror: str | None = None


class FieldMap(Section):
    """Raw column names of the downloaded table."""

    image: str = "image"
    question: str = "question"
    answers: str = "answer"
    caption: str = "caption"
    boxes: str = "bbox"
    width: str | None = "width"
    height: str | None = "height"


class PreprocessParams(Section):
    # Tables under the downloaded folder: JSONL and Parquet are streamed, JSON is read whole.
    tables: list[str] = ["**/*.jsonl", "**/*.json", "**/*.parquet"]
    fields: FieldMap = FieldMap()
    val_fraction: float = Field(ge=0.0, lt=1.0)
    seed: int = 0
    # Caps on one row (each breach is a reason code of its own): pixels of a decoded image, boxes in a
    # row (the box reward reads at most 100), bytes of the row's JSON without embedded image bytes.
    max_image_pixels: int = Field(default=25_000_000, gt=0)
    max_image_bytes: int = Field(default=64 << 20, ge=1024)  # of an image file, checked before it is read
    max_boxes: int = Field(default=100, ge=1)
    max_row_bytes: int = Field(default=1_000_000, ge=1024)
    # A JSON table is read whole (JSONL and Parquet are streamed): larger ones are refused, naming this key.
    max_json_bytes: int = Field(default=1 << 30, ge=1024)


Scalar = str | int | float | bool


# ms-swift options params may never set through train.extra_args: what the stage sets itself (its inputs, outputs
# and logging), and what loads code, reads other data, writes elsewhere or reaches the Hub.
EXTRA_ARGS_FORBIDDEN = ("model", "model_type", "template", "system", "output_dir", "logging_dir", "add_version",
                        "resume_from_checkpoint", "report_to", "trust_remote_code", "check_model", "use_hf")  # fmt: skip
EXTRA_ARGS_FORBIDDEN_PREFIXES = ("dataset", "val_dataset", "custom_", "external_", "hub_", "push_to_hub", "output_",
                                 "resume_", "load_", "vllm_server", "mlflow", "swanlab", "wandb")  # fmt: skip
DEEPSPEED_PRESETS = re.compile(r"zero[0-3](_offload)?")  # ms-swift's own configs; a path would load any JSON
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def check_extra_arg(key: str, value: Any) -> None:
    """ValueError, naming the key, unless `--key value` can only add an ms-swift option the stage does not set: no
    forbidden option, and no value argparse could read as another flag (a string starting with '-')."""
    if key in EXTRA_ARGS_FORBIDDEN or key.startswith(EXTRA_ARGS_FORBIDDEN_PREFIXES) or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ValueError(
            f"extra_args.{key}: not settable from params (the train stage sets it, or it loads code, reads other "
            f"data, writes elsewhere or reaches the Hub)"
        )
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and (item.startswith("-") and not NUMBER.fullmatch(item) or "\n" in item or "\0" in item):
            raise ValueError(f"extra_args.{key}: value {item!r} would reach ms-swift as another flag")
    if key == "deepspeed" and not (isinstance(value, str) and DEEPSPEED_PRESETS.fullmatch(value)):
        raise ValueError(f"extra_args.deepspeed: {value!r}: one of ms-swift's presets, zero0 .. zero3(_offload)")


class TrainParams(Section):
    nproc_per_node: int = Field(ge=1)
    # Machines training together (torch.distributed's nnodes); the first runs the train stage, each other one
    # `python -m stages.train --worker` (README: Beyond one machine). A param: it sets the global batch.
    nnodes: int = Field(default=1, ge=1)
    reward_funcs: list[Literal[REWARD_NAMES]] = Field(min_length=1)
    reward_mode: Literal["corrected", "paper"] = "corrected"
    # invert: GRPO gets 1 - r for every reward (the control run that proves the wiring); reports show true values.
    reward_control: Literal["none", "invert"] = "none"
    tuner_type: Literal["full", "lora"]
    target_modules: str = "all-linear"
    torch_dtype: Literal["float32", "bfloat16", "float16"]
    max_length: int = Field(gt=0)
    max_completion_length: int = Field(gt=0)
    num_train_epochs: float = Field(gt=0)
    max_steps: int = Field(default=-1, ge=-1)  # -1: num_train_epochs decides
    per_device_train_batch_size: int = Field(ge=1)
    per_device_eval_batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    gradient_accumulation_steps: int = Field(ge=1)
    eval_steps: int = Field(ge=1)
    save_steps: int = Field(ge=1)
    save_total_limit: int = Field(ge=1)
    logging_steps: int = Field(ge=1)
    warmup_ratio: float = Field(ge=0, le=1)
    dataloader_num_workers: int = Field(ge=0)
    num_generations: int = Field(ge=2)
    temperature: float = Field(gt=0)
    # Rollouts per generation call: `steps_per_generation` micro-batches are generated at once and used by
    # that many micro-steps (none: ms-swift's default, gradient_accumulation_steps: one generation per
    # optimizer step, on-policy). Larger: fewer, bigger generation batches; optimizer steps after the first
    # train on an older policy's rollouts, corrected by GRPO's clipped importance ratio (README: Fast rollouts).
    steps_per_generation: int | None = Field(default=None, ge=1)
    # hf: transformers' generate (runs anywhere). vllm: vLLM colocated on the training GPUs (the gpu extra;
    # unverified here: no machine of ours has vLLM).
    rollout: Literal["hf", "vllm"] = "hf"
    log_completions: bool = True
    seed: int = 42
    # ms-swift saves weights in shards of at most this size (its default: 5GB).
    max_shard_size: str = Field(default="5GB", pattern=r"^\d+(KB|MB|GB)$")
    # Further ms-swift arguments passed through verbatim (top_p, beta, deepspeed, ...); names are checked
    # against ms-swift's own argument classes when the train stage starts.
    extra_args: dict[str, Scalar | list[Scalar]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        """The cross-field rules ms-swift and TRL would otherwise enforce minutes into a run."""
        repeated = sorted({name for name in self.reward_funcs if self.reward_funcs.count(name) > 1})
        if repeated:
            raise ValueError(f"reward_funcs names {repeated} more than once (ms-swift would add each twice)")
        if self.max_steps == 0:
            raise ValueError("max_steps: 0 trains nothing; use -1 (num_train_epochs decides) or a positive count")
        if self.max_completion_length >= self.max_length:
            raise ValueError(
                f"max_completion_length ({self.max_completion_length}) must be below max_length ({self.max_length}): "
                f"the prompt (image tokens included) gets max_length - max_completion_length tokens"
            )
        ranks, ranks_keys, ranks_counts = self.world_size, "nproc_per_node", f"{self.nproc_per_node}"
        if self.nnodes > 1:
            ranks_keys, ranks_counts = ranks_keys + " x nnodes", ranks_counts + f" x {self.nnodes}"
        per_generation = self.per_device_train_batch_size * ranks * self.gradient_accumulation_steps
        if per_generation % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide the generation batch, per_device_train_batch_size"
                f" x {ranks_keys} x gradient_accumulation_steps = {self.per_device_train_batch_size} x "
                f"{ranks_counts} x {self.gradient_accumulation_steps} = {per_generation}"
            )
        per_eval = self.per_device_eval_batch_size * ranks
        if per_eval % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide the evaluation batch, per_device_eval_batch_size"
                f" x {ranks_keys} = {self.per_device_eval_batch_size} x {ranks_counts} = {per_eval}"
            )
        for key, value in self.extra_args.items():
            check_extra_arg(key, value)
        return self

    @property
    def world_size(self) -> int:
        """The training processes across every machine."""
        return self.nproc_per_node * self.nnodes


# Model names VLMEvalKit's OpenAIWrapper sends elsewhere than the api_base it is given (vlmeval/api/gpt.py: 'ernie'
# goes to Baidu's API, a 'gemini' 'preview' to Google's): such a judge would not be the endpoint params name.
REROUTED_JUDGE_MODELS = (("ernie",), ("gemini", "preview"))


class JudgeParams(Section):
    """An OpenAI-compatible chat endpoint that judges MathVista, MathVision and MathVerse (a hosted API, or vLLM or
    LMDeploy serving a model). The key is read from the environment variable key_env, never from params."""

    model: str = Field(pattern=r"^\S{1,200}$")  # the served model's name, as the endpoint knows it
    # The endpoint's OpenAI base URL (`.../v1`; VLMEvalKit posts to <base_url>/chat/completions); $VARIABLES are
    # expanded when the evaluate stages run (a local server's port differs between runs).
    base_url: str = Field(pattern=r"^(https?://|\$)\S+$")
    key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")
    nproc: int = Field(default=4, ge=1, le=64)  # questions judged at once (VLMEvalKit's threads)
    retry: int = Field(default=3, ge=1, le=20)  # tries of one request before VLMEvalKit counts it failed

    @model_validator(mode="after")
    def _endpoint(self) -> JudgeParams:
        for parts in REROUTED_JUDGE_MODELS:
            if all(part in self.model.lower() for part in parts):
                raise ValueError(f"model {self.model!r}: VLMEvalKit 0.0.19 sends a model named with "
                                 f"{' and '.join(map(repr, parts))} to its own API, not to base_url")  # fmt: skip
        if not self.base_url.startswith("$"):
            check_judge_url(self.base_url)
        return self

    @property
    def url(self) -> str:
        """base_url with its $VARIABLES expanded; ParamsError naming an unset one or a URL that is not one."""
        import os

        expanded = os.path.expandvars(self.base_url)
        unset = re.findall(r"\$\{?(\w+)", expanded)
        if unset:
            raise ParamsError(f"evaluate.judge.base_url {self.base_url!r}: {', '.join(unset)} not set")
        try:
            check_judge_url(expanded)
        except ValueError as err:
            raise ParamsError(f"evaluate.judge.base_url {self.base_url!r}: {err}") from None
        return expanded.rstrip("/")

    @property
    def url_host(self) -> str:
        """The host of the judge's URL: what the report, MLflow and the card record of it (not its port: a local
        server's changes between runs, which would change the report's bits)."""
        from urllib.parse import urlsplit

        return urlsplit(self.url).hostname


def check_judge_url(url: str) -> None:
    """ValueError unless url is an http(s) URL with a host and no credentials in it (the key has its own variable)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise ValueError("a URL with credentials in it: the key belongs in the variable key_env names, not in params")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: the endpoint's base URL takes no query or fragment")


class EvaluateParams(Section):
    # Processes under torch.distributed.run, each answering its shard (one per GPU).
    nproc_per_node: int = Field(default=1, ge=1)
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(gt=0)
    # The official SATORI evaluation appends this to every question (FACTS.md).
    satori_instruction: bool = True
    # A completion asked for an <answer> block (the instruction) that gives none: official scores it as no
    # answer (a single space, as the official SATORI evaluation did); fallback scores its whole text.
    answer_extraction: Literal["official", "fallback"] = "official"
    min_pixels: int = Field(gt=0)
    max_pixels: int = Field(gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The LLM judge of MathVista, MathVision and MathVerse; none: a profile cannot list them.
    judge: JudgeParams | None = None

    @model_validator(mode="after")
    def _ordered(self) -> EvaluateParams:
        check_pixel_limits(self.min_pixels, self.max_pixels)
        return self


class PublishParams(Section):
    push: bool = False
    repo_id: str | None = None
    private: bool = True
    # The card's license: a fine-tune inherits its base model's (Qwen2.5-VL-3B: the Qwen research license).
    license: str = "apache-2.0"
    license_name: str | None = None
    license_link: str | None = None

    @model_validator(mode="after")
    def _push_needs_repo(self) -> PublishParams:
        if self.push and not self.repo_id:
            raise ValueError("push: true needs repo_id")
        if self.repo_id is not None:
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:  # the Hub's own rule, at load: not at the final push, and never code in the card's snippet
                validate_repo_id(self.repo_id)
            except HFValidationError as err:
                raise ValueError(f"repo_id {self.repo_id!r}: {' '.join(str(err).split())}") from None
            if "/" not in self.repo_id:
                raise ValueError(f"repo_id {self.repo_id!r}: expected namespace/name, e.g. me/satori-3b")
        return self


class Profile(Section):
    vision: VisionParams
    download: DownloadParams
    base_model: BaseModelParams
    benchmarks: BenchmarksParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    publish: PublishParams
    mlflow_experiment: str

    @model_validator(mode="after")
    def _trainable(self) -> Profile:
        if self.preprocess.val_fraction == 0:
            raise ValueError("preprocess.val_fraction: 0 leaves no validation split, which GRPO evaluates on")
        judged = [spec.name for spec in self.benchmarks.items if spec.judged]
        if judged and self.evaluate.judge is None:
            raise JudgeRequired(
                f"benchmarks.items: {', '.join(judged)} VLMEvalKit scores with an LLM judge: set evaluate.judge (model "
                f"and base_url of an OpenAI-compatible endpoint) and put its key in the environment variable OPENAI_API_KEY "
                f"(or the one evaluate.judge.key_env names), or remove them (README: Evaluation)"
            )
        return self


def _format_errors(profile: str, err: ValidationError) -> str:
    lines = [f"params.yaml: profile '{profile}' is invalid:"]
    for e in err.errors():
        where = ".".join(str(p) for p in (profile, *e["loc"]))
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML where a key written twice in one mapping is an error (PyYAML keeps the last one silently).
    Keys a merge (`<<: *anchor`) brings in may be overridden: that is what a merge is for."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(f"params.yaml: key {key!r} is written twice in one block, at lines {seen[key]} and {line}")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# Bounds on params.yaml, checked before it is loaded: DVC expands every alias of the file before any stage runs
# (an alias bomb holds `dvc repro` for minutes and gigabytes), so the flow refuses one first.
MAX_PARAMS_BYTES = 1 << 20
MAX_PARAMS_NODES = 100_000  # values once every alias is expanded (the project's own file: a few hundred)


def expanded_nodes(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """How many nodes a composed YAML document has once every alias is expanded, counted without expanding (an
    alias is the very node object it names: each distinct node is counted once, then multiplied)."""
    memo = {} if memo is None else memo
    if id(node) not in memo:
        memo[id(node)] = 0  # a node that contains itself (recursive alias) counts once
        children = node.value if isinstance(node, yaml.SequenceNode) else [
            item for pair in node.value for item in pair] if isinstance(node, yaml.MappingNode) else []  # fmt: skip
        memo[id(node)] = 1 + sum(expanded_nodes(child, memo) for child in children)
    return memo[id(node)]


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        size = Path(path).stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise ParamsError(f"{path}: {size} bytes, over the {MAX_PARAMS_BYTES} a params file may hold")
        text = path.read_text(encoding="utf-8")
        document = yaml.compose(text, Loader=yaml.SafeLoader)
        nodes = expanded_nodes(document) if document is not None else 0
        if nodes > MAX_PARAMS_NODES:
            raise ParamsError(
                f"{path}: {nodes:,} values once its YAML aliases (*name) are expanded, over {MAX_PARAMS_NODES:,}: "
                f"refused before anything expands them (DVC would, on every command)"
            )
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path} does not exist") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{path}: YAML syntax error{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping with a 'profile' key")
    unknown = sorted(str(k) for k, v in raw.items() if k != "profile" and not isinstance(v, dict))
    if unknown:
        raise ParamsError(
            f"{path}: unknown top-level key(s) {unknown}: the top level holds `profile:` and one block per profile"
        )
    return raw


def profile_names(raw: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in raw.items() if k != "profile" and isinstance(v, dict))


def load_profile(path: Path = PARAMS_FILE, name: str | None = None) -> tuple[str, Profile]:
    """The active (or named) profile of params.yaml, validated; raises ParamsError naming the bad key."""
    raw = read_params(path)
    allowed = profile_names(raw)
    name = name if name is not None else raw.get("profile")
    if name not in allowed:
        raise ParamsError(f"params.yaml: profile: {name!r} is not one of the defined profiles {allowed}")
    return name, validate_profile(name, raw[name])


def validate_profile(name: str, section: Any) -> Profile:
    """One profile's section of params.yaml, validated; raises ParamsError naming the bad key."""
    try:
        profile = Profile.model_validate(section)
    except ValidationError as err:
        raise ParamsError(_format_errors(name, err)) from None
    if name == "tiny" and profile.publish.push:
        raise ParamsError("params.yaml: tiny.publish.push: the embedded default never pushes to the Hub")
    return profile
