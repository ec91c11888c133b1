#!/usr/bin/env bash
# Set up ./.venv for evonorm-search.  Usage: bash scripts/setup.sh [--dev]
#
# The venv sees the system's site-packages, so a torch that is already installed
# (a CUDA build, say) is reused; torch 2.13.0 is installed only where no torch is
# importable.  --dev adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
extras=""
case "${1:-}" in
  --dev) extras="[dev]" ;;
  "") ;;
  *) echo "usage: bash scripts/setup.sh [--dev]" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "setup: no importable torch; installing torch==2.13.0" >&2
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet --editable ".${extras}"
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2
