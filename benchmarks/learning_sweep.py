"""The sweep that chose the learning profile's settings: the tiny train stage under a few settings, side by side.

Each setting trains in its own copy of the checkout (.runs/sweep-<name>; fetch and preprocess come
from DVC's run cache), then the table shows, per reward, the mean of the first and of the last
quarter of the steps, with the standard deviation across those steps.

    .venv/bin/python -m benchmarks.learning_sweep --steps 60
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from flows.pipeline import checkout_files
from satori.config import REPO_ROOT, read_params
from satori.learning import quarter_summary, read_reward_table

SETTINGS = {
    "lr2e-4": {"learning_rate": 2.0e-4},
    "lr5e-4": {"learning_rate": 5.0e-4},
    "lr1e-3": {"learning_rate": 1.0e-3},
    "lr1e-3-control": {"learning_rate": 1.0e-3, "reward_control": "invert"},
}


def run(name: str, train: dict, steps: int) -> Path:
    folder = REPO_ROOT / ".runs" / f"sweep-{name}"
    for rel in checkout_files(REPO_ROOT):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, folder / rel)
    cache = (REPO_ROOT / ".dvc" / "cache").resolve()
    (folder / ".dvc/config.local").write_text(f"[core]\n    no_scm = true\n[cache]\n    dir = {cache}\n")
    raw = read_params(REPO_ROOT / "params.yaml")
    profile = raw["learn"]
    profile["train"] = {**profile["train"], **train, "max_steps": steps, "eval_steps": steps, "save_steps": steps}
    (folder / "params.yaml").write_text(yaml.safe_dump({"profile": "learn", "learn": profile}, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "dvc", "repro", "train"], cwd=folder, env=env, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    print(f"{name}: {time.monotonic() - start:.0f} s", flush=True)
    return folder / "reports" / "train_rewards.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    results = {name: read_reward_table(run(name, SETTINGS[name], args.steps)) for name in args.only}
    print(f"\n{'setting':<10} {'reward':<22} {'first quarter':>16} {'last quarter':>16} {'change':>8}")
    for name, table in results.items():
        for column, row in quarter_summary(table).items():
            print(f"{name:<10} {column:<22} {row['first']:>8.3f} ± {row['first_std']:.3f} "
                  f"{row['last']:>8.3f} ± {row['last_std']:.3f} {row['last'] - row['first']:>+8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
