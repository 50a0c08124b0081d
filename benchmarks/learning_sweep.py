"""Does the default's learning hang on luck? Its recipe under other warm-up seeds, and under other train settings.

Each variant is the tiny profile with `--set` overrides in its own copy of the checkout (.runs/sweep-<name>, made as
`python -m flows.pipeline --set` makes one); what an override does not reach comes from DVC's run cache.

--seeds (the default): the whole default (base model, training, both evaluations) with each warm-up seed
(base_model.tiny.seed). Per seed: base and trained accuracy on each benchmark and each model's answers by letter;
the bar is trained >= base + 15 points on every benchmark and no model answering one letter to more than half of
the questions. Exits 1 when a seed misses it.

    .venv/bin/python -m benchmarks.learning_sweep --seeds 0 1 2 3 4 --jobs 2

--settings: the train stage alone under a few settings (what chose the learning rate); per reward, the mean of the
first and of the last quarter of the steps, with the standard deviation across those steps.

    .venv/bin/python -m benchmarks.learning_sweep --settings lr5e-4 lr1e-3 --steps 160
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from satori.run_folders import prepare_run_dir
from satori.core.config import REPO_ROOT
from satori.reports.learning import quarter_summary, read_reward_table
from satori.reports.results import SWEEP_TABLE, shares_text

SETTINGS = {
    "lr1e-4": ["train.learning_rate=1e-4"],
    "lr3e-4": ["train.learning_rate=3e-4"],
    "lr5e-4": ["train.learning_rate=5e-4"],
    "lr1e-3": ["train.learning_rate=1e-3"],
    "lr3e-3": ["train.learning_rate=3e-3"],
    "lr1e-3-t0.7": ["train.learning_rate=1e-3", "train.temperature=0.7"],
    "lr1e-3-control": ["train.learning_rate=1e-3", "train.reward_control=invert"],
}
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
MIN_GAIN = 0.15  # trained - base accuracy, every benchmark
MAX_LETTER_SHARE = 0.5  # of the questions, any one letter, base and trained


def run_variant(checkout: Path, name: str, overrides: list[str], target: str) -> Path:
    """`dvc repro target` in the variant's folder; returns the folder."""
    folder = prepare_run_dir(checkout, "tiny", overrides, f"sweep-{name}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", target], cwd=folder, env=env, capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{name}: dvc repro {target} failed in {folder}:\n{(done.stdout + done.stderr)[-4000:]}")
    print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    return folder


def seed_results(folder: Path) -> dict[str, dict]:
    """Per benchmark: base and trained accuracy, each model's letter shares, and whether the seed clears the bar."""
    evaluation = json.loads((folder / "reports" / "evaluate.json").read_text(encoding="utf-8"))
    results = {}
    for benchmark, row in evaluation.items():
        letters = {  # letters only: "none" (no <answer>) and "other" are not one letter
            label: {k: v for k, v in row[f"{label}_answer_shares"].items() if len(k) == 1}
            for label in ("base", "trained")
        }
        top = max(max(shares.values(), default=0.0) for shares in letters.values())
        results[benchmark] = {
            "base": row["base"],
            "trained": row["trained"],
            "letters": letters,
            "passes": row["trained"] - row["base"] >= MIN_GAIN - 1e-9 and top <= MAX_LETTER_SHARE,
        }
    return results


def seeds_table(results: dict[int, dict[str, dict]]) -> str:
    """The sweep as a markdown table: a row per seed and benchmark."""
    shares = lambda letters: shares_text(letters) or "no letter"  # noqa: E731
    lines = ["| warm-up seed | benchmark | base | trained | gain | answers: base \\| trained | bar |",
             "|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for seed, benchmarks in results.items():
        for name, r in benchmarks.items():
            lines.append(
                f"| {seed} | {name} | {100 * r['base']:.1f} | {100 * r['trained']:.1f} | "
                f"{100 * (r['trained'] - r['base']):+.1f} | {shares(r['letters']['base'])} \\| "
                f"{shares(r['letters']['trained'])} | {'met' if r['passes'] else '**missed**'} |"
            )
    return "\n".join(lines)


def sweep_seeds(checkout: Path, seeds: list[int], jobs: int = 1) -> dict[int, dict[str, dict]]:
    """Each seed's whole default, `jobs` at a time (each stage computes on one thread: satori.core.cpu_numerics)."""

    def one(seed: int) -> dict[str, dict]:
        return seed_results(run_variant(checkout, f"seed{seed}", [f"base_model.tiny.seed={seed}"], "evaluate"))

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(seeds, pool.map(one, seeds)))


def sweep_settings(checkout: Path, names: list[str], steps: int) -> str:
    steps_set = [f"train.max_steps={steps}", f"train.eval_steps={steps}", f"train.save_steps={steps}"]
    lines = [f"{'setting':<15} {'reward':<22} {'first quarter':>16} {'last quarter':>16} {'change':>8}"]
    for name in names:
        folder = run_variant(checkout, name, [*SETTINGS[name], *steps_set], "train")
        for column, row in quarter_summary(read_reward_table(folder / "reports" / "train_rewards.csv")).items():
            lines.append(f"{name:<15} {column:<22} {row['first']:>8.3f} ± {row['first_std']:.3f} "
                         f"{row['last']:>8.3f} ± {row['last_std']:.3f} {row['last'] - row['first']:>+8.3f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--seeds", nargs="+", type=int, help=f"warm-up seeds (default {DEFAULT_SEEDS})")
    mode.add_argument("--settings", nargs="+", choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=160, help="train steps of a --settings run")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (one per core)")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT, help="the checkout whose variants run")
    parser.add_argument("--write", action="store_true", help=f"also write the seeds' table to {SWEEP_TABLE}")
    args = parser.parse_args(argv)
    if args.settings:
        print(sweep_settings(args.checkout, args.settings, args.steps))
        return
    results = sweep_seeds(args.checkout, args.seeds or list(DEFAULT_SEEDS), args.jobs)
    table = seeds_table(results)
    print(table)
    if args.write:
        (args.checkout / SWEEP_TABLE).write_text(table + "\n", encoding="utf-8")
    missed = [seed for seed, benchmarks in results.items() if not all(r["passes"] for r in benchmarks.values())]
    if missed:
        raise SystemExit(f"seeds {missed} miss the bar (trained >= base + {100 * MIN_GAIN:.0f} points, no letter over "
                         f"{100 * MAX_LETTER_SHARE:.0f}% of the answers)")  # fmt: skip


if __name__ == "__main__":
    main()
