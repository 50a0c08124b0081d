"""The sweep that chose the default profile's training settings: its train stage under a few settings,
side by side.

Each setting is a variant of the tiny profile in its own copy of the checkout (.runs/sweep-<name>, made
as `python -m flows.pipeline --set` makes one); fetch and preprocess come from DVC's run cache. The table
shows, per reward, the mean of the first and of the last quarter of the steps, with the standard
deviation across those steps.

    .venv/bin/python -m benchmarks.learning_sweep --steps 160
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from flows.pipeline import prepare_run_dir
from satori.config import REPO_ROOT
from satori.learning import quarter_summary, read_reward_table

SETTINGS = {
    "lr1e-4": ["train.learning_rate=1e-4"],
    "lr3e-4": ["train.learning_rate=3e-4"],
    "lr5e-4": ["train.learning_rate=5e-4"],
    "lr1e-3": ["train.learning_rate=1e-3"],
    "lr3e-3": ["train.learning_rate=3e-3"],
    "lr1e-3-t0.7": ["train.learning_rate=1e-3", "train.temperature=0.7"],
    "lr1e-3-control": ["train.learning_rate=1e-3", "train.reward_control=invert"],
}


def run(name: str, overrides: list[str], steps: int) -> Path:
    steps_set = [f"train.max_steps={steps}", f"train.eval_steps={steps}", f"train.save_steps={steps}"]
    folder = prepare_run_dir(REPO_ROOT, "tiny", [*overrides, *steps_set], f"sweep-{name}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "dvc", "repro", "train"], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    return folder / "reports" / "train_rewards.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--only", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    results = {name: read_reward_table(run(name, SETTINGS[name], args.steps)) for name in args.only}
    print(f"\n{'setting':<15} {'reward':<22} {'first quarter':>16} {'last quarter':>16} {'change':>8}")
    for name, table in results.items():
        for column, row in quarter_summary(table).items():
            print(f"{name:<15} {column:<22} {row['first']:>8.3f} ± {row['first_std']:.3f} "
                  f"{row['last']:>8.3f} ± {row['last_std']:.3f} {row['last'] - row['first']:>+8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
