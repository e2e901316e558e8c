#!/usr/bin/env bash
# Install hybrid-nas and its dependencies. Picks a CPU build of PyTorch where no GPU is present
# (an unpinned `torch` would pull a multi-GB CUDA build).
# Usage: bash scripts/install.sh          the package (to run `nas` and `scaling`) and Debian's
#                                          dataset-fashion-mnist (real data: --data fashion-mnist) where apt-get can
#        bash scripts/install.sh --test   plus the test tools (timm with a torch/torchvision pair that loads
#                                          together, optuna-dashboard, psycopg, SQLAlchemy), and Debian's
#                                          chromium (the report's and dashboard's headless-browser tests)
#                                          and postgresql (the database-storage tests start a throwaway
#                                          server) where apt-get can install them
# Without apt-get (or root) nothing fails: the commands fall back to the bundled digits data and
# this script says where to put Fashion-MNIST's four IDX files instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
can_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }
APT_UPDATED=""
apt_install() {  # apt_install PACKAGE: quietly, one apt-get update per run; fails without failing the script
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq || return 1; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

FMNIST_DIR=/usr/share/datasets/fashion-mnist  # where dataset-fashion-mnist puts the IDX files
install_fashion_mnist() {
  if [ -n "${HYBRID_NAS_FASHION_MNIST:-}" ] || [ -e "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
    return 0
  fi
  if can_apt && apt_install dataset-fashion-mnist; then
    return 0
  fi
  echo "install.sh: Fashion-MNIST not installed (--data fashion-mnist needs it)." \
       "To get it: apt-get install dataset-fashion-mnist (Debian, as root), or put train-images-idx3-ubyte.gz," \
       "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a folder" \
       "and set HYBRID_NAS_FASHION_MNIST=that folder (or pass --data fashion-mnist:DIR)" >&2
}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if has_gpu; then
    "$PY" -m pip install "torch>=2.2"                      # CUDA build from the default index
  elif [ -n "${TORCH_INDEX:-}" ]; then
    "$PY" -m pip install torch --index-url "$TORCH_INDEX"  # e.g. https://download.pytorch.org/whl/cpu
  elif [ "${1:-}" = "--test" ] && [ -z "${TORCH_SPEC:-}" ]; then
    :  # the test install takes a torch/torchvision pair below: no 2.13.0 first
  else
    "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"     # the CPU wheel on this project's machines
  fi
fi
torchvision_works() { "$PY" -c "import torchvision.ops, torch; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)" >/dev/null 2>&1; }
if [ "${1:-}" = "--test" ]; then
  # timm (train_proxy.timm_models, tested) needs torchvision, and PyPI's torchvision does not load
  # beside the CPU build of torch 2.13.0: take a torch/torchvision pair that loads together
  if ! torchvision_works; then
    if has_gpu; then
      "$PY" -m pip install -q torchvision                         # matches the CUDA torch installed above
    elif [ "$(uname -m)" = "aarch64" ]; then
      "$PY" -m pip install -q "torch==2.9.1" "torchvision==0.24.1"  # CPU builds
    else
      # shellcheck disable=SC2086  # a list of requirements
      "$PY" -m pip install -q ${TORCHVISION_SPEC:-torch==2.14.1 torchvision==0.29.1}  # a CUDA build; runs on the CPU
    fi
  fi
  "$PY" -m pip install -q -e ".[test,docs]"  # docs: tests/test_docs.py builds the site (mkdocs --strict)
  if ! command -v chromium >/dev/null 2>&1; then
    if can_apt; then
      apt_install chromium || echo "install.sh: could not install chromium; tests/test_report.py's browser test will be skipped" >&2
    else
      echo "install.sh: chromium not found (install Debian's chromium to run the report's browser test)" >&2
    fi
  fi
  # the storage tests run initdb/pg_ctl (server binaries in /usr/lib/postgresql/VERSION/bin on Debian)
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    if can_apt; then
      apt_install postgresql || echo "install.sh: could not install postgresql; tests/test_storage.py will be skipped" >&2
    else
      echo "install.sh: PostgreSQL not found (install Debian's postgresql to run the database-storage tests)" >&2
    fi
  fi
else
  "$PY" -m pip install -q -e .
fi
install_fashion_mnist
