#!/usr/bin/env bash
# Creates benches/peers/.venv-st with the sentence-transformers peer of the text-encoding
# comparison (compare_encode.sh, st_encode.py): torch (CPU wheels), sentence-transformers,
# transformers, pinned to the versions of the recorded measurements. Idempotent.
#
#   bash benches/peers/st_setup.sh
#   PYTHON=python3.11 TORCH_INDEX=https://pypi.org/simple bash benches/peers/st_setup.sh
#
# TORCH_INDEX: where torch comes from (default: PyTorch's CPU-only wheel index, a ~200 MB
# download instead of the CUDA build's gigabytes; the recorded runs used torch 2.15.0+cu132
# from PyPI on the CPU, which runs the same oneDNN/MKL CPU kernels).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-st"
PYTHON="${PYTHON:-python3}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
TORCH="torch==2.15.0"
PINS=("sentence-transformers==6.2.0" "transformers==5.24.0" "numpy==2.4.6")

if [ ! -x "$VENV/bin/python" ]; then
  echo "st_setup: creating $VENV with $($PYTHON --version 2>&1)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "st_setup: installing $TORCH from $TORCH_INDEX" >&2
  "${PIP[@]}" --index-url "$TORCH_INDEX" "$TORCH" >&2
fi
echo "st_setup: installing ${PINS[*]}" >&2
"${PIP[@]}" "${PINS[@]}" >&2
"$VENV/bin/python" -c "import torch, sentence_transformers as s; print('st_setup: torch', torch.__version__, 'sentence-transformers', s.__version__)"
