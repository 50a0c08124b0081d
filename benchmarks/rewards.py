"""Completions per second of each SATORI reward: stages/rewards.py against the straightforward version.

Both run on the same 10,000 synthetic completions in one process, side by side; the table shows
the throughput of each, the ratio and the largest difference between their values.

    .venv/bin/python -m benchmarks.rewards [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time

from benchmarks import reference_rewards
from satori.core import resize
from satori.rewards import plugin as rewards
from satori.rewards import text_overlap
from satori.data import synthetic

SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 720), (1920, 1080), (480, 640), (1000, 1000)]


def make_batch(n: int, seed: int) -> tuple[list[str], dict[str, list]]:
    """Completions like a model in training writes them: mostly well formed, 1-4 boxes, some junk."""
    rng = random.Random(seed)
    completions: list[str] = []
    columns: dict[str, list] = {k: [] for k in ("bboxs", "width", "height", "possible_answers", "image_caption")}
    for _ in range(n):
        scene = synthetic.random_scene(rng)
        width, height = rng.choice(SIZES)
        sx, sy = width / scene.width, height / scene.height
        truth = [
            [round(s.box[0] * sx), round(s.box[1] * sy), round(s.box[2] * sx), round(s.box[3] * sy)]
            for s in scene.shapes
        ]
        truth = truth[: rng.randint(1, len(truth))]
        boxes = [[max(0, v + rng.randint(-60, 60)) for v in b] for b in rng.sample(truth, len(truth))] + [
            [rng.randint(0, 300), rng.randint(0, 300), rng.randint(300, 600), rng.randint(300, 600)]
        ] * rng.randint(0, 2)
        caption = perturbed(rng, scene.caption() if rng.random() < 0.7 else synthetic.random_scene(rng).caption())
        answer = rng.choice(["red", "Red", "B", "(B)", "2", "blue"])
        kind = rng.random()
        if kind < 0.8:
            text = f"<caption>{caption}</caption> <bbox>{json.dumps(boxes)}</bbox> <answer>{answer}</answer>"
        elif kind < 0.9:
            text = (
                f"<caption>{caption}</caption> <bbox>[{', '.join(map(str, boxes[0]))}]</bbox> <answer>{answer}</answer>"
            )
        else:
            text = f"I think {caption} <answer>{answer}"
        completions.append(text)
        columns["bboxs"].append(truth)
        columns["width"].append(width)
        columns["height"].append(height)
        columns["possible_answers"].append(["red", "B"])
        columns["image_caption"].append(scene.caption())
    return completions, columns


WORD_POOL = ["big", "small", "shape", "shapes", "picture", "image", "with", "next", "to", "left", "right", "dark"]


def perturbed(rng: random.Random, caption: str) -> str:
    """A caption as a model in training writes it: the reference with words dropped, swapped or added."""
    words = caption.rstrip(".").split()
    for _ in range(rng.randint(0, 4)):
        action, at = rng.random(), rng.randrange(len(words))
        if action < 0.4 and len(words) > 2:
            del words[at]
        elif action < 0.7:
            words[at] = rng.choice(WORD_POOL)
        else:
            words.insert(at, rng.choice(WORD_POOL))
    return " ".join(words) + ("." if rng.random() < 0.8 else "")


def straightforward_vqa(completion: str, accepted: list[str]) -> float:
    match = re.search(r"<answer>(.*?)</answer>", completion, re.DOTALL)
    return 1.0 if match and match.group(1).strip() in accepted else 0.0


def _call_each(name: str, completions: list[str], cols: dict) -> None:
    if name.startswith("caption"):
        rewards.CaptionAccuracy()(completions, **cols)
        [reference_rewards.caption_reward(c, r) for c, r in zip(completions, cols["image_caption"])]
    elif name.startswith("bbox"):
        rewards.BoundingBoxAccuracy()(completions, **cols)
        reference_rewards.bbox_reward(completions[0], cols["bboxs"][0], cols["width"][0], cols["height"][0])


def timed(fn) -> tuple[list[float], float]:
    start = time.perf_counter()
    values = fn()
    return values, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["SATORI_REWARD_MODE"] = "paper"  # the semantics the straightforward version implements
    completions, cols = make_batch(args.n, args.seed)
    n = len(completions)
    rows = []

    def compare(name, ours, theirs):
        # Warm both (imports, nltk's lazy loaders) on other completions, then start our caches cold.
        warm_completions, warm_cols = make_batch(20, args.seed + 1)
        _call_each(name, warm_completions, warm_cols)
        for cache in (text_overlap.bleu_tokens, text_overlap.rouge_tokens, text_overlap._reference_ngrams, resize.seen_size):
            cache.cache_clear()
        ours_values, ours_s = timed(ours)
        ref_values, ref_s = timed(theirs)
        diff = max(abs(a - b) for a, b in zip(ours_values, ref_values))
        rows.append((name, n / ours_s, n / ref_s, ref_s / ours_s, diff))

    compare(
        "format (paper)",
        lambda: rewards.Format()(completions),
        lambda: [reference_rewards.published_format(c) for c in completions],
    )
    compare(
        "bbox (paper)",
        lambda: rewards.BoundingBoxAccuracy()(completions, **cols),
        lambda: [
            reference_rewards.bbox_reward(c, b, w, h, mode="paper")
            for c, b, w, h in zip(completions, cols["bboxs"], cols["width"], cols["height"])
        ],
    )
    os.environ["SATORI_REWARD_MODE"] = "corrected"
    os.environ["MIN_PIXELS"], os.environ["MAX_PIXELS"] = "3136", "401408"
    compare(
        "bbox (corrected)",
        lambda: rewards.BoundingBoxAccuracy()(completions, **cols),
        lambda: [
            reference_rewards.bbox_reward(c, b, w, h, mode="corrected", min_pixels=3136, max_pixels=401408)
            for c, b, w, h in zip(completions, cols["bboxs"], cols["width"], cols["height"])
        ],
    )
    os.environ["SATORI_REWARD_MODE"] = "paper"
    compare(
        "vqa (paper)",
        lambda: rewards.VQAAccuracy()(completions, **cols),
        lambda: [straightforward_vqa(c, a) for c, a in zip(completions, cols["possible_answers"])],
    )
    compare(
        "caption",
        lambda: rewards.CaptionAccuracy()(completions, **cols),
        lambda: [reference_rewards.caption_reward(c, r) for c, r in zip(completions, cols["image_caption"])],
    )

    print(f"{n} completions, seed {args.seed}; straightforward = per-sample shapely / nltk / new rouge scorer")
    print(f"{'reward':<18} {'ours c/s':>12} {'straightforward c/s':>20} {'ratio':>8} {'max |diff|':>12}")
    for name, ours, theirs, ratio, diff in rows:
        print(f"{name:<18} {ours:>12,.0f} {theirs:>20,.0f} {ratio:>7.1f}x {diff:>12.2e}")

    worst = worst_single_call_ms()
    print(f"\nslowest single call on adversarial completions (1 MB, deep nesting, 10^5 tags): {worst:.1f} ms")


def worst_single_call_ms() -> float:
    one = {"bboxs": [[[10, 10, 50, 50]]], "width": [224], "height": [224], "possible_answers": [["red"]]}
    one["image_caption"] = ["A red circle on a light gray background."]
    slowest = 0.0
    for mode in rewards.MODES:
        os.environ["SATORI_REWARD_MODE"] = mode
        for cls in rewards.REWARDS.values():
            reward = cls()
            for completion in reference_rewards.ADVERSARIAL_COMPLETIONS:
                start = time.perf_counter()
                reward([completion], **one)
                slowest = max(slowest, (time.perf_counter() - start) * 1000)
    return slowest


if __name__ == "__main__":
    main()
