"""The SATORI rewards by the names a profile gives them (`train.reward_funcs`, ms-swift's `--reward_funcs`).

The one registry: each published name (what a profile and ms-swift call it), the class behind it, whose name
ms-swift logs (`rewards/<ClassName>/mean`), and the one name a user reads (REWARD_LABELS: the console, MLflow,
DVC's plot, the reports, the README and the card). The reward plugin, the params' allowed values, the report
columns, dvc.yaml's plot and the tests all derive from it. Plain data, so params validation needs no ms-swift.
"""

from __future__ import annotations

REWARD_CLASSES = {
    "external_format": "Format",
    "external_bbox_acc": "BoundingBoxAccuracy",
    "extern_vqa_acc": "VQAAccuracy",
    "external_caption_acc": "CaptionAccuracy",
}
REWARD_NAMES = tuple(REWARD_CLASSES)
# What each reward scores, as a user reads it; the published names and class names stay where ms-swift needs them.
REWARD_LABELS = {
    "external_format": "format",
    "external_bbox_acc": "boxes",
    "extern_vqa_acc": "answer",
    "external_caption_acc": "caption",
}


def logged_mean(name: str) -> str:
    """The key under which ms-swift logs a reward's per-step mean (logging.jsonl)."""
    return f"rewards/{REWARD_CLASSES[name]}/mean"
