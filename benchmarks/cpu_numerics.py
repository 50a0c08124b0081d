"""What the pinned CPU numerics cost (satori.core.cpu_numerics): the embedded base model's warm-up (forward and backward,
as GRPO's update) and the evaluation's batched greedy generation (as GRPO's rollouts), pinned against the machine's own
choices, side by side in one run (the modes alternate, each in a fresh process: the settings load with torch).

    .venv/bin/python -m benchmarks.cpu_numerics                       # 60 warm-up steps, 32 questions, 3 rounds
    .venv/bin/python -m benchmarks.cpu_numerics --steps 5 --questions 4 --rounds 1   # smoke size (the test's)

Prints seconds per mode and round, then a table of the medians and the ratio pinned / native (above 1: pinning is
slower); --write keeps the table in benchmarks/cpu_numerics.md, the README's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from satori.core.cpu_numerics import MODE_ENV, NATIVE, unpinned_environment
from satori.core.config import REPO_ROOT
from satori.reports.results import PINNING_COST_TABLE

MODES = ("pinned", "native")


def measure(steps: int, questions: int) -> dict:
    """In this process: seconds of the warm-up, and samples/s of the evaluation's batched greedy generation."""
    import torch

    from benchmarks import eval_throughput
    from satori.core.config import load_profile
    from satori.core.prompt import system_prompt
    from satori.data.tiny_model import build_embedded_base_model

    _, profile = load_profile(REPO_ROOT / "params.yaml", "tiny")
    tiny = profile.base_model.tiny.model_copy(update={"warmup_steps": steps})
    settings = argparse.Namespace(min_pixels=profile.evaluate.min_pixels, max_pixels=profile.evaluate.max_pixels,
                                  max_new_tokens=profile.evaluate.max_new_tokens)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_embedded_base_model(Path(tmp) / "model", tiny, profile.vision, system_prompt(REPO_ROOT / "prompt.txt"))
        warmup = time.perf_counter() - start
        planned = eval_throughput.questions(questions, 3, Path(tmp))
        start = time.perf_counter()
        eval_throughput.run(Path(tmp) / "model", planned, profile.evaluate.batch_size, settings)
        generate = time.perf_counter() - start
    return {"warmup_s": warmup, "generate_s": generate, "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}  # fmt: skip


def run_mode(mode: str, steps: int, questions: int) -> dict:
    env = unpinned_environment()
    if mode == NATIVE:
        env[MODE_ENV] = NATIVE
    command = [sys.executable, "-m", "benchmarks.cpu_numerics", "--worker", "--steps", str(steps),
               "--questions", str(questions)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"also write the table to {PINNING_COST_TABLE}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.steps, args.questions)))
        return {}
    seen: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for round_ in range(1, args.rounds + 1):
        for mode in MODES:
            result = run_mode(mode, args.steps, args.questions)
            seen[mode].append(result)
            print(f"round {round_} {mode:<7} ({result['capability']}, {result['threads']} threads): warm-up "
                  f"{result['warmup_s']:.2f} s ({args.steps} steps), generation {result['generate_s']:.2f} s "
                  f"({args.questions} questions)", flush=True)  # fmt: skip
    medians = {mode: {key: statistics.median(r[key] for r in runs) for key in ("warmup_s", "generate_s")}
               for mode, runs in seen.items()}  # fmt: skip
    native = seen["native"][0]
    lines = [f"{machine_name()}, {os.cpu_count()} cores; native: torch's {native['capability']} kernels, "
             f"{native['threads']} threads; pinned: AVX2, 1 thread", "",
             "| work | pinned | native | pinned / native |", "|---|---:|---:|---:|"]  # fmt: skip
    works = {"warmup_s": f"warm-up, {args.steps} steps", "generate_s": f"generation, {args.questions} questions"}
    for key, work in works.items():
        ratio = medians["pinned"][key] / medians["native"][key]
        lines.append(f"| {work} | {medians['pinned'][key]:.2f} s | {medians['native'][key]:.2f} s | {ratio:.2f} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        (REPO_ROOT / PINNING_COST_TABLE).write_text(table + "\n", encoding="utf-8")
    return {"medians": medians, "runs": seen}


def machine_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "an unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "an unknown CPU")


if __name__ == "__main__":
    main()
