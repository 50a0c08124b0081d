"""Rollout throughput of the train stage's generation settings, side by side on the tiny model (CPU here):
completion tokens/s of one sampled generation call with the seed's generation batch (one prompt x
num_generations, generated every step) and the fast setting's (train.steps_per_generation: 4, four steps'
prompts in one call), as ms-swift's transformers engine generates them (all rows of the call at once).

    python -m benchmarks.rollout_throughput                 # models/base of `make run`, or a tiny model built here
    python -m benchmarks.rollout_throughput --tokens 64 --repeats 3

The GPU check (benchmarks/gpu_check.py) prints the same numbers for the 3B shape, next to whole GRPO steps.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.gpu_check import SETTINGS, build_model, decode_timing, profile_train, rows_per_generation
from satori.data import synthetic
from satori.core.config import REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "base")
    parser.add_argument("--tokens", type=int, default=None, help="completion tokens (default: the tiny profile's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model if (args.model / "config.json").is_file() else build_model(folder, cpu=True)
        scene = synthetic.random_scene(__import__("random").Random(0))
        image = folder / "scene.png"
        scene.render().save(image)
        question = "How many shapes are there?"
        rows_out = []
        for name, overrides in SETTINGS.items():
            params, vision, _ = profile_train("tiny", 1, overrides)
            rows = rows_per_generation(params)
            tokens = args.tokens or params.max_completion_length
            runs = [decode_timing(model, rows, tokens, params.temperature, str(image), question, vision)
                    for _ in range(args.repeats)]  # fmt: skip
            rows_out.append((name, rows, tokens, statistics.median(r["rollout_tokens_per_s"] for r in runs),
                             statistics.median(r["decode_ms_per_token"] for r in runs)))  # fmt: skip
    seed_rate = rows_out[0][3]
    print(f"tiny model ({model}), CPU fp32, median of {args.repeats}")
    print(f"{'setting':<8} {'rows/call':>9} {'tokens':>6} {'completion tok/s':>17} {'ms/decode step':>15} {'vs seed':>8}")
    for name, rows, tokens, rate, ms in rows_out:
        print(f"{name:<8} {rows:>9} {tokens:>6} {rate:>17.0f} {ms:>15.1f} {rate / seed_rate:>7.2f}x")


if __name__ == "__main__":
    main()
