#!/usr/bin/env bash
# The GPU path in one run (under 5 minutes on a CUDA machine): the kernel benchmark's GPU
# part, proxy training with the fused kernels against the eager and native layers, and a tiny
# search with --gpus-per-trial 0.5.  One table; exit 1 on any mismatch, 2 without CUDA.
#   bash scripts/gpu_check.sh            (results under $OUT, or a temporary directory)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh >&2
exec .venv/bin/python benchmarks/gpu_check.py "$@"
