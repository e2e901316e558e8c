#!/usr/bin/env bash
# Install hybrid-nas and its dependencies. Picks a CPU build of PyTorch where no GPU is present
# (an unpinned `torch` would pull a multi-GB CUDA build). Usage: bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if has_gpu; then
    "$PY" -m pip install "torch>=2.2"                      # CUDA build from the default index
  elif [ -n "${TORCH_INDEX:-}" ]; then
    "$PY" -m pip install torch --index-url "$TORCH_INDEX"  # e.g. https://download.pytorch.org/whl/cpu
  else
    "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"     # the CPU wheel on this project's machines
  fi
fi
"$PY" -m pip install -q -e ".[test]"
