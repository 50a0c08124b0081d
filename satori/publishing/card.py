"""The Hub folder (weights, processor, model card), its reload check, and the push (the work of the publish stage).

The folder is always built locally. It is pushed with
huggingface_hub only when publish.push is true, a repo_id is set and a token
is available from HF_TOKEN or huggingface_hub's own login. The token is
handed to huggingface_hub and nowhere else: not to logs, MLflow, DVC files or
the card.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import yaml

from satori.core.config import PARAMS_FILE, Profile, PublishParams, read_params
from satori.core.prompt import SATORI_INSTRUCTION, mcq_question
from satori.core.reward_registry import REWARD_LABELS
from satori.evaluation.scoring import benchmark_rules, scoring_rules
from satori.core.files import SOURCE_FILE
from satori.core.lineage import code_revision

# Said under every table: the paper's base row was a plain model scored as VLMEvalKit scores any model.
PAPER_NOTE = "The paper's columns are the SATORI-R1 project page's table (base: the plain model, as VLMEvalKit scores it)."


def scoring_lines(params, benchmarks) -> list[str]:
    """How each column's numbers were made (satori.evaluation.scoring.scoring_rules), one bullet per label, then how each
    benchmark's answers were matched (satori.evaluation.scoring.benchmark_rules)."""
    names = {"base": "Base", "trained": "Trained", "base_no_instruction": "Base, no SATORI instruction"}
    lines = [f"- {names[label]}: {rule}." for label, rule in scoring_rules(params).items()]
    return lines + [f"- {markdown_text(name)}: {rule}." for name, rule in benchmark_rules(benchmarks).items()]


def markdown_text(value: object) -> str:
    """Text from data or params as inert card text: HTML escaped, the marks that make tables, links, images,
    emphasis, headings and code backslashed, one line (an intraword `_` stays: it marks nothing)."""
    import html

    text = html.escape(" ".join(str(value).split()), quote=True)
    return "".join("\\" + ch if ch in "\\`*[]()#|~!" else ch for ch in text)


def evaluation_table(metrics: dict[str, dict]) -> str:
    """Base against trained (%) per benchmark; the paper's numbers beside them where the report has them (the paper
    reports this base model on this benchmark: satori.evaluation.run.summarize)."""
    with_plain = all("base_no_instruction" in row for row in metrics.values())
    with_paper = any("paper" in row for row in metrics.values())
    header = "| Benchmark | Base | Trained | Δ |" + (" Base, no SATORI instruction |" if with_plain else "")
    header += " Paper: base | Paper: SATORI | Trained − paper |" if with_paper else ""
    lines = [header, "|---|---:|---:|---:|" + ("---:|" if with_plain else "") + ("---:|" * 3 if with_paper else "")]
    for name, row in metrics.items():
        line = f"| {markdown_text(name)} | {100 * row['base']:.1f} | {100 * row['trained']:.1f} | {100 * row['delta']:+.1f} |"
        line += f" {100 * row['base_no_instruction']:.1f} |" if with_plain else ""
        if with_paper:
            published = row.get("paper")
            if published:
                difference = 100 * row["trained"] - published["trained"]
                line += f" {published['base']:.1f} | {published['trained']:.1f} | {difference:+.1f} |"
            else:
                line += " - | - | - |"
        lines.append(line)
    return "\n".join(lines)


def judged_table(metrics: dict[str, dict]) -> list[str]:
    """The judged benchmarks (%): the judge's number beside the judge-free one, how often the two agree, the judge
    calls that failed, and each benchmark's judge (model, host, VLMEvalKit's prompt version); none: no lines."""
    judged = {name: row for name, row in metrics.items() if "judge" in row}
    if not judged:
        return []
    lines = ["Judged benchmarks: the judge's number, a rule's without a judge, and the share of questions where the two "
             "agree (base | trained):", "",
             "| Benchmark | Base | Base, judge-free | Trained | Trained, judge-free | Agreement | Judge calls failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, row in judged.items():
        agreement = " \\| ".join(f"{100 * row[f'{label}_judge_agreement']:.0f}%" for label in ("base", "trained"))
        failed = row["base_judge_failures"] + row["trained_judge_failures"]
        lines.append(f"| {markdown_text(name)} | {100 * row['base']:.1f} | {100 * row['base_judge_free']:.1f} | "
                     f"{100 * row['trained']:.1f} | {100 * row['trained_judge_free']:.1f} | {agreement} | {failed} |")  # fmt: skip
    lines.append("")
    for name, row in judged.items():
        judge = row["judge"]
        lines.append(f"- {markdown_text(name)}: judged by `{markdown_text(judge['model'])}` at "
                     f"{markdown_text(judge['host'])}, prompts of {markdown_text(judge['prompt'])}.")  # fmt: skip
    return ["", *lines]


def category_table(metrics: dict[str, dict]) -> str:
    """Per-category accuracy (%) of each benchmark, base against trained."""
    lines = ["| Benchmark | Category | Base | Trained | Δ |", "|---|---|---:|---:|---:|"]
    for name, row in metrics.items():
        for category, acc in row.get("categories", {}).items():
            base, trained, delta = (100 * acc[k] for k in ("base", "trained", "delta"))
            lines.append(f"| {markdown_text(name)} | {markdown_text(category)} | {base:.1f} | {trained:.1f} | {delta:+.1f} |")
    return "\n".join(lines)


def model_card(
    *,
    profile_name: str,
    profile: Profile,
    evaluation: dict,
    data_source: dict,
    base_source: dict,
    code_rev: str,
    parameters: int = 0,
    curves: str | None = None,
    gallery: list[str] | None = None,
) -> str:
    base_id = base_source.get("repo_id", "unknown")
    train = profile.train
    lines = [
        "---",
        card_metadata(profile_name, profile, evaluation, data_source, base_source).to_yaml(),
        "---",
        "",
        f"# SATORI GRPO model ({profile_name} profile)",
        "",
        "Trained with SATORI (Spatially Anchored Task Optimization with Reinforcement Learning): the model",
        "answers in three verifiable steps, a caption in `<caption>`, the relevant regions as",
        "`<bbox>[[x1,y1,x2,y2], ...]</bbox>`, then the answer in `<answer>`, and GRPO rewards each step.",
        "",
        "## Evaluation",
        "",
        "Accuracy (%) through VLMEvalKit, base model against this one:",
        "",
        evaluation_table(evaluation),
        *judged_table(evaluation),
        "",
        *scoring_lines(profile.evaluate, profile.benchmarks),
        *(["", PAPER_NOTE] if any("paper" in row for row in evaluation.values()) else []),
        "",
        "Per category:",
        "",
        category_table(evaluation),
        "",
        "## Training",
        "",
        f"- Base model: `{base_id}` (revision `{base_source.get('commit') or base_source.get('revision')}`)",
        f"- Data: `{data_source.get('repo_id')}` "
        f"(revision `{data_source.get('commit') or data_source.get('revision')}`)",
        f"- Rewards: {', '.join(f'{REWARD_LABELS[r]} (`{r}`)' for r in train.reward_funcs)} (mode `{train.reward_mode}`)",
        f"- GRPO: {train.num_generations} generations, temperature {train.temperature}, "
        f"learning rate {train.learning_rate}, {train.nproc_per_node} process(es), "
        f"pixels {profile.vision.min_pixels}..{profile.vision.max_pixels}",
        f"- Code revision: `{code_rev}`",
        "",
        "The exact parameters are in `params.yaml` next to this card.",
        "",
    ]
    if curves:
        lines[lines.index("## Training") + 1 : lines.index("## Training") + 1] = ["", f"![Rewards per step]({curves})"]
    lines += usage_snippet(profile.publish.repo_id, profile.vision)
    lines += limitations(profile_name, profile, parameters)
    if gallery:
        lines += ["## Where the model looks", ""]
        lines += ["The first 16 answers per benchmark: predicted boxes in red, caption and answer below each image.", ""]
        lines += [f"![{markdown_text(Path(p).stem)}]({quote(p)})" for p in gallery] + [""]
    return "\n".join(lines)


# How the Hub's results widget names the task and the metric of a multiple-choice VQA benchmark.
EVAL_TASK = "image-text-to-text"
EVAL_METRIC = "accuracy"
# The Hub datasets of the official benchmarks (and the split VLMEvalKit scores), so the results widget links
# them; the benchmark's VLMEvalKit name stays as dataset.name. A synthetic benchmark has none: its name is both.
HUB_BENCHMARKS = {
    "MMBench_DEV_EN": ("lmms-lab/MMBench", "dev"),
    "MMBench_DEV_EN_V11": ("lmms-lab/MMBench", "dev"),
    "MMStar": ("Lin-Chen/MMStar", "val"),
    "MMMU_DEV_VAL": ("MMMU/MMMU", "validation"),
}


def card_metadata(profile_name: str, profile: Profile, evaluation: dict, data_source: dict, base_source: dict):
    """The card's YAML front matter as huggingface_hub builds and reads it: base model, datasets, license,
    tags and a model-index with one accuracy per benchmark (the Hub's results widget reads it)."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type=EVAL_TASK,
            dataset_type=HUB_BENCHMARKS.get(name, (name,))[0],
            dataset_name=name,
            dataset_split=HUB_BENCHMARKS[name][1] if name in HUB_BENCHMARKS else None,
            metric_type=EVAL_METRIC,
            metric_value=round(100 * row["trained"], 2),
            metric_name="Accuracy (%)",
            source_name="VLMEvalKit, exact matching",
            source_url="https://github.com/open-compass/VLMEvalKit",
        )
        for name, row in evaluation.items()
    ]
    publish = profile.publish
    return ModelCardData(
        language=["en"],
        license=publish.license,
        license_name=publish.license_name,
        license_link=publish.license_link,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["satori", "grpo", "qwen2.5-vl", "ms-swift", "vision-language", f"profile-{profile_name}"],
        base_model=base_source.get("repo_id") if profile.base_model.source == "hub" else None,
        datasets=[data_source["repo_id"]] if profile.download.source == "hub" and data_source.get("repo_id") else None,
        model_name=publish.repo_id or f"satori-{profile_name}",
        eval_results=results,
    )


def hub_token() -> str | None:
    """HF_TOKEN, else the token of `hf auth login`; None when neither exists."""
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def push(folder: Path, params: PublishParams, commit_message: str) -> str:
    """Upload the folder to params.repo_id; returns the commit URL."""
    from huggingface_hub import HfApi

    token = hub_token()
    if not token:
        raise PermissionError(
            "publish.push is true but no Hugging Face token was found: set HF_TOKEN or run `hf auth login`"
        )
    api = HfApi(token=token)
    api.create_repo(params.repo_id, private=params.private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=params.repo_id, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


CURVES_FILE = "reward_curves.png"  # the reward curves, beside the card that shows them
SYSTEM_PROMPT_FILE = "system_prompt.txt"  # the system prompt the model was trained with (prompt.txt), beside it


def usage_snippet(repo_id: str | None, vision) -> list[str]:
    """The card's "How to use": the published folder asked one question exactly as evaluation asks it (the system
    prompt it was trained with, the question laid out by satori.core.prompt.mcq_question, whose source it carries,
    the SATORI instruction, the image resized by qwen-vl-utils at the trained pixel limits, greedy). The image, the
    question and its options are the three variables at its top."""
    import inspect

    where = f"Path(snapshot_download({repo_id!r}))" if repo_id else 'Path(".")  # the folder this card is in'
    hub_import = "from huggingface_hub import snapshot_download\n" if repo_id else ""
    code = f"""IMAGE = "your_image.png"
QUESTION = "What color is the shape?"
OPTIONS = ["red", "green", "blue", "yellow"]  # [] for a question without options

from pathlib import Path

{hub_import}from PIL import Image
from qwen_vl_utils import fetch_image
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

INSTRUCTION = {SATORI_INSTRUCTION!r}


{inspect.getsource(mcq_question).strip()}


folder = {where}
model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
processor = AutoProcessor.from_pretrained(folder)
image = fetch_image({{"image": Image.open(IMAGE), "min_pixels": {vision.min_pixels}, "max_pixels": {vision.max_pixels}}})
messages = [
    {{"role": "system", "content": (folder / "{SYSTEM_PROMPT_FILE}").read_text()}},
    {{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": mcq_question(QUESTION, OPTIONS) + INSTRUCTION}}]}},
]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = processor(text=[text], images=[image], return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=512, do_sample=False)
print(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))"""
    return ["## How to use", "", "It answers with `<caption>`, `<bbox>` and `<answer>` (greedy), asked as the evaluation",
            "above asked it (`pip install transformers qwen-vl-utils`):", "", "```python", code, "```", ""]  # fmt: skip


def limitations(profile_name: str, profile: Profile, parameters: int) -> list[str]:
    """What the model is for and what it cannot do; the embedded default says what it is."""
    lines = ["## Intended use and limitations", ""]
    if profile.base_model.source != "hub":
        task = profile.download.synthetic.task
        taught = {
            "color_cue": ("coloured shapes, where the colour of the one large shape decides the answer among red, "
                          "green, blue and yellow", "those four colours"),
            "shapes": ("two or three coloured shapes, asked their colours, kinds and count", "those scenes"),
        }[task]  # fmt: skip
        lines += [
            f"This is the embedded default of satori-pipeline (profile `{profile_name}`): a tiny Qwen2.5-VL of "
            f"{parameters:,} parameters built and warmed up by the pipeline itself, then trained with SATORI's "
            f"GRPO on {profile.download.synthetic.rows} synthetic images (task `{task}`: {taught[0]}). It was "
            f"taught {taught[1]} and the SATORI answer format, nothing else (the evaluation above says how well it "
            "answers): it is a test fixture that runs the pipeline's real code paths on a CPU, not a model to use. "
            "Its scores are on synthetic benchmarks.",
            "",
        ]
    else:
        lines += [
            "For research on verifiable visual reasoning: answers with a caption, the boxes of the regions that "
            "matter and the answer, each of which can be checked. It inherits the base model's limitations and "
            "biases; its boxes and captions can be wrong while the answer is right, and the reverse. Scores are "
            "those of the benchmarks above, scored as stated there; other prompts or pixel limits give others.",
            "",
        ]
    return lines


def build_folder(
    profile_name: str,
    profile: Profile,
    model: Path,
    evaluation: dict,
    out: Path,
    curves: Path | None = None,
    gallery: Path | None = None,
    system_prompt: Path | None = None,
) -> None:
    """The Hub folder: every file of the exported model (all weight shards), the card, params and evaluation,
    and the system prompt it was trained with."""
    for item in sorted(model.iterdir()):
        if item.is_file() and item.name != SOURCE_FILE:
            shutil.copy2(item, out / item.name)
    if system_prompt is not None:
        shutil.copy2(system_prompt, out / SYSTEM_PROMPT_FILE)
    if curves is not None:
        shutil.copy2(curves, out / CURVES_FILE)
    pictures = []
    if gallery is not None:
        (out / "gallery").mkdir()
        for picture in sorted(gallery.glob("*.png")):
            shutil.copy2(picture, out / "gallery" / picture.name)
            pictures.append(f"gallery/{picture.name}")
    source = json.loads((model / SOURCE_FILE).read_text(encoding="utf-8"))
    card = model_card(
        profile_name=profile_name,
        profile=profile,
        evaluation=evaluation,
        data_source=source.get("data", {}),
        base_source=source.get("base_model", {}),
        code_rev=code_revision(),
        parameters=parameter_count(model),
        curves=CURVES_FILE if curves is not None else None,
        gallery=pictures,
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    active = {"profile": profile_name, profile_name: read_params(PARAMS_FILE)[profile_name]}
    (out / "params.yaml").write_text(yaml.safe_dump(active, sort_keys=False), encoding="utf-8")
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")


def parameter_count(model: Path) -> int:
    """The number of parameters in the model folder's safetensors files (headers only: no weight is loaded)."""
    from safetensors import safe_open

    total = 0
    for weights in sorted(model.glob("*.safetensors")):
        with safe_open(str(weights), framework="numpy") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total


class ReloadMismatch(RuntimeError):
    """The Hub folder does not load, or does not answer as the trained model does: it is not pushed."""


def greedy_answer(model_dir: Path, image, question: str, max_new_tokens: int = 16) -> list[int]:
    """Token ids of a greedy answer of the model in model_dir (fp32 on CPU, so two loads agree exactly)."""
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


def check_reloads(hub_folder: Path, model: Path) -> list[int]:
    """Load the Hub folder with transformers and check one greedy answer equals the trained model's."""
    from PIL import Image

    image = Image.new("RGB", (224, 168), (200, 40, 40))
    question = "What color is the image?"
    try:
        published = greedy_answer(hub_folder, image, question)
    except Exception as err:
        raise ReloadMismatch(f"{hub_folder} does not load with transformers ({type(err).__name__}: {err})") from err
    expected = greedy_answer(model, image, question)
    if published != expected:
        raise ReloadMismatch(
            f"{hub_folder} answers {published} where {model} answers {expected} (greedy, same prompt)"
        )
    return published
