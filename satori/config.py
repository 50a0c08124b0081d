"""params.yaml, typed and validated once.

params.yaml holds one switch, `profile`, and one block per profile; each block
has a section per stage. A stage reads only its own section of the active
profile (`load_profile().train`), and dvc.yaml lists only that section
(`${profile}.train`), so editing an inactive profile re-runs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The checkout this package lies in: for tests and benchmarks. Stages never use it; they read and
# write only the paths dvc.yaml gives them, relative to the folder DVC runs them in.
REPO_ROOT = Path(__file__).resolve().parent.parent
# DVC's own default params file, read relative to the folder the stage runs in.
PARAMS_FILE = Path("params.yaml")
# Qwen2.5-VL: 14-pixel patches merged 2x2, so one image token per 28x28 pixels.
IMAGE_FACTOR = 28


class ParamsError(ValueError):
    """params.yaml is missing a key, has an unknown one, or a value of the wrong type."""


class Section(BaseModel):
    # strict: `max_steps: true` or `rows: "96"` is an error, not a silent 1 or 96.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class VisionParams(Section):
    """Pixel limits of the image processor (MIN_PIXELS / MAX_PIXELS), shared by every stage."""

    min_pixels: int = Field(gt=0)
    max_pixels: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> VisionParams:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        return self

    def seen_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image as the model sees it, after the processor's smart_resize."""
        from qwen_vl_utils import smart_resize

        seen_h, seen_w = smart_resize(height, width, IMAGE_FACTOR, self.min_pixels, self.max_pixels)
        return seen_w, seen_h


class SyntheticDataParams(Section):
    rows: int = Field(ge=8)
    seed: int = 0
    task: Literal["shapes", "color_cue"] = "shapes"  # satori.synthetic.TASKS


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
    # Teacher-forced steps on synthetic SATORI answers before the model is saved (0: purely random).
    warmup_steps: int = Field(default=0, ge=0)
    warmup_examples: int = Field(default=512, ge=1)
    warmup_batch_size: int = Field(default=8, ge=1)
    warmup_lr: float = Field(default=1e-2, gt=0)
    # Share of warm-up examples that are color_cue scenes, captioned and boxed; and the share of those
    # shown with their answer (see synthetic.warmup_examples).
    warmup_cue_share: float = Field(default=0.0, ge=0, lt=1)
    warmup_cue_answered: float = Field(default=0.0, ge=0, le=1)


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


class BenchmarkSpec(Section):
    name: str
    kind: Literal["synthetic_mmbench", "synthetic_mmstar", "official"]
    questions: int = Field(default=0, ge=0)
    seed: int = 0
    task: Literal["shapes", "color_cue"] = "shapes"  # of a synthetic kind: satori.synthetic.TASKS


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
    max_boxes: int = Field(default=100, ge=1)
    max_row_bytes: int = Field(default=1_000_000, ge=1024)


Scalar = str | int | float | bool


class TrainParams(Section):
    nproc_per_node: int = Field(ge=1)
    reward_funcs: list[Literal["external_format", "external_bbox_acc", "extern_vqa_acc", "external_caption_acc"]] = (
        Field(min_length=1)
    )
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
        if self.max_steps == 0:
            raise ValueError("max_steps: 0 trains nothing; use -1 (num_train_epochs decides) or a positive count")
        if self.max_completion_length >= self.max_length:
            raise ValueError(
                f"max_completion_length ({self.max_completion_length}) must be below max_length ({self.max_length}): "
                f"the prompt (image tokens included) gets max_length - max_completion_length tokens"
            )
        per_generation = self.per_device_train_batch_size * self.nproc_per_node * self.gradient_accumulation_steps
        if per_generation % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide the generation batch, per_device_train_batch_size"
                f" x nproc_per_node x gradient_accumulation_steps = {self.per_device_train_batch_size} x "
                f"{self.nproc_per_node} x {self.gradient_accumulation_steps} = {per_generation}"
            )
        per_eval = self.per_device_eval_batch_size * self.nproc_per_node
        if per_eval % self.num_generations:
            raise ValueError(
                f"num_generations ({self.num_generations}) must divide the evaluation batch, per_device_eval_batch_size"
                f" x nproc_per_node = {self.per_device_eval_batch_size} x {self.nproc_per_node} = {per_eval}"
            )
        reserved = {"output_dir", "resume_from_checkpoint", "report_to", "model", "dataset", "val_dataset"}
        clash = sorted(reserved & set(self.extra_args))
        if clash:
            raise ValueError(f"extra_args must not set {clash}: the train stage sets them")
        return self


class EvaluateParams(Section):
    # Processes under torch.distributed.run, each answering its shard (one per GPU).
    nproc_per_node: int = Field(default=1, ge=1)
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(gt=0)
    # The official SATORI evaluation appends this to every question (FACTS.md).
    satori_instruction: bool = True
    min_pixels: int = Field(gt=0)
    max_pixels: int = Field(gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


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


def _format_errors(profile: str, err: ValidationError) -> str:
    lines = [f"params.yaml: profile '{profile}' is invalid:"]
    for e in err.errors():
        where = ".".join(str(p) for p in (profile, *e["loc"]))
        message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path} does not exist") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ParamsError(f"{path}: YAML syntax error{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must be a mapping with a 'profile' key")
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


# Appended to every question by the official SATORI evaluation (an evaluation input, quoted exactly).
SATORI_INSTRUCTION = (
    " \nFirst, provide an image caption describing the overall scene inside <caption> </caption>. "
    "Then, output the list of bounding boxes in the format of [[x1,y1,x2,y2], ...] inside <bbox> </bbox>. "
    "Finally, give the final answer in <answer> </answer>."
)


def system_prompt(path: Path) -> str:
    """prompt.txt, the system prompt SATORI-3B was trained with (a training input: used verbatim)."""
    return Path(path).read_text(encoding="utf-8")
