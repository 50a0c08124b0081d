#!/usr/bin/env bash
# For a lent GPU machine (no internet), once the tree and .whl/ (`make gpu-bundle`) are there:
#   benchmarks/gpu_check.sh [--cycles N] [--questions N]
# Installs the bundle beside the machine's own packages (--no-deps, into $DEPS), then runs benchmarks.gpu_check:
# the train stage's code path on a Qwen2.5-VL-3B-shaped random bf16 model for both rollout settings, then the
# batched evaluation check; one table on stdout and in $OUT when set. No Prefect, DVC, MLflow or VLMEvalKit.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DEPS=${DEPS:-${TMPDIR:-/tmp}/satori-gpu-deps}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
ls .whl/*.whl > /dev/null || { echo "no .whl/: run 'make gpu-bundle' where there is a package registry" >&2; exit 2; }
"$PYTHON" -m pip install --quiet --no-index --no-deps --target "$DEPS" .whl/*.whl
PYTHONPATH="$DEPS:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
  timeout "${TIMEOUT_S:-530}" "$PYTHON" -m benchmarks.gpu_check "$@"
