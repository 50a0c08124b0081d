"""GPU check of the paper profile's train stage: a Qwen2.5-VL-3B-shaped model (random bf16 weights from the
published config), a few GRPO steps on 1 GPU, as the stage runs them (dvc repro train in a copy of the checkout).

Prints seconds per step, completion tokens per second per GPU and peak GPU memory from ms-swift's
logging.jsonl. Needs a CUDA machine with the project's dependencies (no internet: the model and the
data are made here, see the README's GPU section for the wheels to carry).

    python -m benchmarks.gpu_train_check --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.eval_throughput import build_random_3b
from flows.pipeline import checkout_files
from satori import mirrors
from satori.config import REPO_ROOT, read_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=REPO_ROOT / ".runs" / "gpu_check")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_train_check needs a CUDA GPU")
    run_dir, mirror = args.folder, args.folder / "mirror"
    for rel in checkout_files(REPO_ROOT):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, run_dir / rel)
    (run_dir / "dvc.lock").unlink(missing_ok=True)
    (run_dir / ".dvc/config.local").write_text("[core]\n    no_scm = true\n")
    if not (mirror / "Qwen2.5-VL-3B-Instruct").is_dir():
        start = time.monotonic()
        build_random_3b(mirror / "Qwen2.5-VL-3B-Instruct")
        print(f"built the 3B-shaped model in {time.monotonic() - start:.0f} s", flush=True)
    if not (mirror / "VQA-Verify").is_dir():
        mirrors.write_dataset_snapshot(mirror / "VQA-Verify", rows=64, seed=7)

    # The paper profile, on 1 GPU, for a few steps, from the mirrors at the rehearsal's pinned commits.
    raw = read_params(REPO_ROOT / "params.yaml")
    paper = raw["paper"]
    paper["download"] = {**raw["rehearsal"]["download"]}
    paper["download"]["hub"] = {**paper["download"]["hub"], "local_mirror": str(mirror / "VQA-Verify")}
    paper["base_model"] = {**raw["rehearsal"]["base_model"], "local_mirror": str(mirror / "Qwen2.5-VL-3B-Instruct")}
    paper["preprocess"] = {**paper["preprocess"], "tables": ["**/*.parquet"]}
    paper["train"] = {
        **paper["train"], "nproc_per_node": 1, "max_steps": args.steps, "save_steps": args.steps,
        "eval_steps": args.steps, "logging_steps": 1, "dataloader_num_workers": 0,
    }  # fmt: skip
    (run_dir / "params.yaml").write_text(yaml.safe_dump({"profile": "paper", "paper": paper}, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{run_dir / 'mlflow.db'}"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    torch.cuda.reset_peak_memory_stats()
    subprocess.run([sys.executable, "-m", "dvc", "repro", "train"], cwd=run_dir, env=env, check=True)

    (logging_file,) = run_dir.glob(".work/train/*/swift_output/logging.jsonl")
    records = [json.loads(line) for line in logging_file.read_text().splitlines() if line.strip()]
    steps = [r for r in records if "reward" in r and "global_step/max_steps" in r]
    warm = steps[1:] or steps  # the first step includes compilation and allocation
    seconds = sum(float(r["step_time"]) for r in warm) / len(warm) if "step_time" in warm[0] else float("nan")
    per_device = paper["train"]["per_device_train_batch_size"]
    tokens = sum(float(r["completions/mean_length"]) * per_device for r in warm) / len(warm)
    memory = max(float(str(r.get("memory(GiB)", "nan"))) for r in steps)
    print("\nstep  seconds  mean completion tokens  reward")
    for r in steps:
        print(f"{r['global_step/max_steps']:>5}  {float(r.get('step_time', 'nan')):7.1f}  "
              f"{float(r['completions/mean_length']):22.0f}  {float(r['reward']):.3f}")  # fmt: skip
    print(f"\nseconds per step (after the first): {seconds:.1f}")
    print(f"completion tokens per second per GPU: {tokens / seconds:.0f}")
    print(f"peak memory (ms-swift's report): {memory:.1f} GiB")


if __name__ == "__main__":
    main()
