#!/usr/bin/env bash
# For a lent GPU machine: batched evaluation of a Qwen2.5-VL-3B-shaped model (random bf16 weights,
# built from the published config values, no download) on 256 synthetic MMBench-shaped questions,
# batch 1 against batch 16. Goal: at least 10x. In bf16, batched kernels can flip near-ties, so the
# script reports the agreement rate and both accuracies rather than asserting identity.
# Needs the project's Python dependencies (see the device README for carrying wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout "${TIMEOUT_S:-540}" "$PYTHON" -m benchmarks.eval_throughput --random-3b --questions 256 --batch-size 16 \
  --max-new-tokens 64 --min-pixels 200704 --max-pixels 401408
