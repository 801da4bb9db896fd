#!/usr/bin/env bash
# Everything that needs a GPU, in one command of under 10 minutes: the GPU tests, then the GPU
# benchmark (its table goes into docs/benchmarks.md with the device name).
set -euo pipefail
cd "$(dirname "$0")/../.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
timeout 240 python -m pytest -q tests/gpu
cd benchmarks && timeout 300 python gpu.py
