#!/usr/bin/env bash
# Install hybrid-nas and its dependencies. Picks a CPU build of PyTorch where no GPU is present
# (an unpinned `torch` would pull a multi-GB CUDA build).
# Usage: bash scripts/install.sh          the package (to run `nas` and `scaling`)
#        bash scripts/install.sh --test   plus the test tools, and Debian's chromium for the
#                                          report's headless-browser test where apt-get can install it
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
if [ "${1:-}" = "--test" ]; then
  "$PY" -m pip install -q -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
        || echo "install.sh: could not install chromium; tests/test_report.py's browser test will be skipped" >&2
    else
      echo "install.sh: chromium not found (install Debian's chromium to run the report's browser test)" >&2
    fi
  fi
else
  "$PY" -m pip install -q -e .
fi
