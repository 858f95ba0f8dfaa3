#!/usr/bin/env bash
# Creates benches/peers/.venv and installs the pinned peer libraries that twindex's
# performance claims are measured against. Idempotent: re-running only installs what is
# missing or at the wrong version. A package that cannot be installed is reported and
# skipped; the others are still installed (exit status 1 in that case).
#
#   bash benches/peers/setup.sh            # uses python3 from PATH
#   PYTHON=python3.11 bash benches/peers/setup.sh
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"

# Pins (all have cp311 manylinux x86_64 wheels, except hnswlib 0.8.0, which is an sdist
# and is compiled here with the system C++ compiler; its setup.py builds with
# -march=native unless HNSWLIB_NO_NATIVE is set, which is what a pip user gets).
# usearch, voyager, scann and ngt (module ngtpy) are the further ANN peers of compare_ann.sh.
# scann 1.4.2's TensorFlow ops do not load against tensorflow-cpu 2.21.0 (undefined absl
# symbol), so `import scann` fails while TF is importable; ann_mnist784.py uses scann's pybind
# searcher, which needs no TF, and hides TF while importing it.
PINS=(
  "numpy==2.4.6"
  "tensorflow-cpu==2.21.0"
  "hnswlib==0.8.0"
  "faiss-cpu==1.15.1"
  "usearch==2.26.6"
  "voyager==2.2.3"
  "scann==1.4.2"
  "ngt==2.8.0.post1"
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version 2>&1)" >&2
  "$PYTHON" -m venv "$VENV" || { echo "setup: cannot create venv" >&2; exit 2; }
  "$VENV/bin/python" -m pip install --quiet --upgrade pip setuptools wheel >&2 || true
fi

PIP=("$VENV/bin/python" -m pip)
failed=()
for spec in "${PINS[@]}"; do
  name="${spec%%==*}"; want="${spec##*==}"
  have="$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')"
  if [ "$have" = "$want" ]; then
    echo "setup: $name $have already installed" >&2
    continue
  fi
  echo "setup: installing $spec" >&2
  # numpy is pinned in every call so a later package cannot move it.
  if ! "${PIP[@]}" install --quiet "$spec" "numpy==2.4.6" >&2; then
    echo "setup: FAILED to install $spec (continuing with the others)" >&2
    failed+=("$spec")
  fi
done

"$VENV/bin/python" - <<'PY' >&2
import importlib
import sys
for mod, attr in [("numpy", "__version__"), ("tensorflow", "__version__"),
                  ("keras", "__version__"), ("hnswlib", None), ("faiss", "__version__"),
                  ("usearch", "__version__"), ("voyager", None), ("ngtpy", None),
                  ("scann.scann_ops.py.scann_ops_pybind", None)]:
    try:
        if mod.startswith("scann"):  # see the note at PINS
            tf = sys.modules.pop("tensorflow", None)
            sys.modules["tensorflow"] = None
            try:
                m = importlib.import_module(mod)
            finally:
                sys.modules["tensorflow"] = tf
                if tf is None:
                    del sys.modules["tensorflow"]
        else:
            m = importlib.import_module(mod)
        v = getattr(m, attr, "?") if attr else "importable"
        print(f"setup: {mod:<10} {v}")
    except Exception as e:  # report, don't fail the whole setup
        print(f"setup: {mod:<10} NOT AVAILABLE ({type(e).__name__}: {e})")
PY

if [ "${#failed[@]}" -gt 0 ]; then
  echo "setup: could not install: ${failed[*]}" >&2
  exit 1
fi
echo "setup: ok ($VENV)" >&2
