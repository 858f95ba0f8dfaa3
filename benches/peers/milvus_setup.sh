#!/usr/bin/env bash
# Install the Milvus standalone server from PyPI (the `milvus` package, 2.3.5, carries the
# server binaries) and pymilvus into a venv: benches/peers/milvus_setup.sh [VENV]
# (default target/milvus-venv, where tests/it/scale.rs looks). Idempotent.
set -euo pipefail
VENV="${1:-target/milvus-venv}"
if [ -x "$VENV/bin/milvus-server" ]; then
    echo "Milvus standalone already in $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "milvus==2.3.5" "pymilvus<2.4" "setuptools<70" "marshmallow<4" \
    "numpy<2" "pandas<2.3" "pyarrow<18"
echo "Milvus standalone installed in $VENV"
