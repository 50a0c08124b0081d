#!/usr/bin/env bash
# For a lent GPU machine (no internet): the paper profile's train stage on a Qwen2.5-VL-3B-shaped random bf16
# model for a few steps on 1 GPU (seconds per step, completion tokens/s/GPU, peak memory), then the
# batched evaluation check. Needs the project's Python dependencies; see the README's GPU section.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout "${TRAIN_TIMEOUT_S:-420}" "$PYTHON" -m benchmarks.gpu_train_check --steps "${STEPS:-5}"
TIMEOUT_S="${EVAL_TIMEOUT_S:-300}" PYTHON="$PYTHON" benchmarks/gpu_eval_check.sh
