#!/usr/bin/env bash
# The GPU check (README "GPU check"): ZeRO-2 fp16 and bf16 with ALUM on BERT-base shapes, MFU, the ALUM/plain
# step ratio and the fp16 loss-scale hand-off. Needs one CUDA device; at most 8 minutes. Extra flags go to
# scripts/gpu_check.py (e.g. --steps 40 --workdir runs/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec timeout 480 "$PY" scripts/gpu_check.py "$@"
