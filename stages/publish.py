"""Stage 5, publish: the Hub folder (weights, processor, model card) and, when configured, the push.

The folder is always built locally (publish/hub). It is pushed with
huggingface_hub only when publish.push is true, a repo_id is set and a token
is available from HF_TOKEN or huggingface_hub's own login. The token is
handed to huggingface_hub and nowhere else: not to logs, MLflow, DVC files or
the card.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stages import tracking
from stages.config import PARAMS_FILE, REPO_ROOT, Profile, PublishParams, load_profile, read_params
from stages.download import BASE_MODEL_DIR, RAW_DIR, atomic_dir, read_source
from stages.evaluate import METRICS_FILE as EVAL_METRICS_FILE
from stages.train import TRAINED_DIR
from stages.transient import report_transient

HUB_DIR = REPO_ROOT / "publish" / "hub"
METRICS_FILE = REPO_ROOT / "reports" / "publish.json"
# Files of a trained checkpoint that belong on the Hub.
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
)


def code_revision() -> str:
    """The git commit of this checkout, marked -dirty when it has uncommitted changes; 'unknown' without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def evaluation_table(metrics: dict[str, dict]) -> str:
    with_plain = all("base_no_instruction" in row for row in metrics.values())
    header = "| Benchmark | Base | Trained | Δ |" + (" Base, no SATORI instruction |" if with_plain else "")
    lines = [header, "|---|---:|---:|---:|" + ("---:|" if with_plain else "")]
    for name, row in metrics.items():
        line = f"| {name} | {100 * row['base']:.1f} | {100 * row['trained']:.1f} | {100 * row['delta']:+.1f} |"
        lines.append(line + (f" {100 * row['base_no_instruction']:.1f} |" if with_plain else ""))
    return "\n".join(lines)


def category_table(metrics: dict[str, dict]) -> str:
    """Per-category accuracy (%) of each benchmark, base against trained."""
    lines = ["| Benchmark | Category | Base | Trained | Δ |", "|---|---|---:|---:|---:|"]
    for name, row in metrics.items():
        for category, acc in row.get("categories", {}).items():
            base, trained, delta = (100 * acc[k] for k in ("base", "trained", "delta"))
            lines.append(f"| {name} | {category} | {base:.1f} | {trained:.1f} | {delta:+.1f} |")
    return "\n".join(lines)


def model_card(
    *, profile_name: str, profile: Profile, evaluation: dict, data_source: dict, base_source: dict, code_rev: str
) -> str:
    base_id = base_source.get("repo_id", "unknown")
    front = {
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",
        "tags": ["satori", "grpo", "qwen2.5-vl", "ms-swift"],
    }
    if profile.base_model.source == "hub":
        front["base_model"] = base_id
    if profile.download.source == "hub":
        front["datasets"] = [data_source.get("repo_id")]
    train = profile.train
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
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
        "Accuracy (%) through VLMEvalKit, exact matching, base model against this one:",
        "",
        evaluation_table(evaluation),
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
        f"- Rewards: {', '.join(f'`{r}`' for r in train.reward_funcs)} (mode `{train.reward_mode}`)",
        f"- GRPO: {train.num_generations} generations, temperature {train.temperature}, "
        f"learning rate {train.learning_rate}, {train.nproc_per_node} process(es), "
        f"pixels {profile.vision.min_pixels}..{profile.vision.max_pixels}",
        f"- Code revision: `{code_rev}`",
        "",
        "The exact parameters are in `params.yaml` next to this card.",
        "",
    ]
    return "\n".join(lines)


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


def build_folder(profile_name: str, profile: Profile, out: Path) -> dict[str, Any]:
    for name in MODEL_FILES:
        if (TRAINED_DIR / name).exists():
            shutil.copy2(TRAINED_DIR / name, out / name)
    evaluation = json.loads(EVAL_METRICS_FILE.read_text(encoding="utf-8"))
    card = model_card(
        profile_name=profile_name,
        profile=profile,
        evaluation=evaluation,
        data_source=read_source(RAW_DIR),
        base_source=read_source(BASE_MODEL_DIR),
        code_rev=code_revision(),
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    active = {"profile": profile_name, profile_name: read_params(PARAMS_FILE)[profile_name]}
    (out / "params.yaml").write_text(yaml.safe_dump(active, sort_keys=False), encoding="utf-8")
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
    return evaluation


@report_transient
def main() -> None:
    name, profile = load_profile()
    params = profile.publish
    with tracking.stage_run("publish", profile.mlflow_experiment, name, {"publish": params.model_dump()}):
        with atomic_dir(HUB_DIR) as out:
            build_folder(name, profile, out)
        report: dict[str, Any] = {"pushed": False, "repo_id": params.repo_id, "url": None, "code": code_revision()}
        if params.push:
            report["url"] = push(HUB_DIR, params, commit_message=f"SATORI GRPO ({name}), code {report['code']}")
            report["pushed"] = True
        METRICS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        tracking.log_metrics({"pushed": int(report["pushed"])})
        tracking.log_artifact(HUB_DIR / "README.md", "publish")
        tracking.log_artifact(METRICS_FILE, "publish")


if __name__ == "__main__":
    main()
