#!/usr/bin/env bash
# CUDA checks of the embedding model, for a machine with a GPU and a CUDA build of torch in the environment:
#   1. the tests marked `gpu` (a bf16 train step on CUDA, GPU embeddings against the CPU's, the check script);
#   2. benchmarks/embedding_cuda_check.py: every training stage on the GPU in bf16 and fp32, the CPU as peer,
#      a killed bf16 run resumed, GPU embeddings against the CPU's;
#   3. benchmarks/embedding_throughput.py: training pairs/s and inference items/s, CUDA fp32 / bf16 and CPU fp32.
# Results: benchmarks/results/embedding_cuda_check.{json,md} and embedding_throughput_cuda.{json,md}.
#
#   PYTHON=python3 bash scripts/gpu_check.sh [WORLD_DIR]     (default: the tiny world, generated once)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" - <<'PY'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; nothing to check here")
print(f"gpu_check: torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
PY
world=${1:-runs/gpu_check/world}
if [ ! -f "$world/manifest.json" ]; then
  "$py" -m jobs.cli generate --size tiny --seed 7 --out "$world"
fi
threads=$(( $(nproc) < 8 ? $(nproc) : 8 ))
"$py" -m pytest -q -m gpu
"$py" benchmarks/embedding_cuda_check.py --world "$world" --runs runs/gpu_check/train \
  --out benchmarks/results/embedding_cuda_check.json
"$py" benchmarks/embedding_throughput.py --world "$world" --devices cuda,cpu --precisions fp32,bf16 \
  --threads "$threads" --batch-sizes 32,128 --steps 10 --items 256 \
  --out benchmarks/results/embedding_throughput_cuda.json
