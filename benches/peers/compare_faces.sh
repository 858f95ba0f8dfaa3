#!/usr/bin/env bash
# Side-by-side face embedding, one thread each: dlib's Python bindings (the tool a user of dlib's
# face model would run) vs `twindex index build` with the imported encoder, over the 400 ORL
# faces (fixed face box, 5-point landmarks, aligned 150x150 chip, 128-d descriptor). Writes
# benches/peers/results/compare_faces_<stamp>.json and prints the ratios.
#
#   bash benches/peers/compare_faces.sh
#
# Needs: corpora/dlib-models (fetch_dlib_models.sh), corpora/encoders/dlib-face (twindex import
# dlib-face), and a Python with numpy, pillow and dlib-bin (PY, default benches/peers/.venv-face).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PY:-$HERE/.venv-face/bin/python}"
TWINDEX="${TWINDEX:-target/release/twindex}"
if [ ! -x "$PY" ]; then
    python3 -m venv "$HERE/.venv-face"
    "$HERE/.venv-face/bin/pip" install --quiet numpy pillow dlib-bin
    PY="$HERE/.venv-face/bin/python"
fi
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$HERE/results/compare_faces_$STAMP.json"; mkdir -p "$HERE/results"
PEER=$(OMP_NUM_THREADS=1 "$PY" "$HERE/dlib_face_bench.py" --models corpora/dlib-models --corpus corpora/orl-faces)
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
/usr/bin/time -f '%e %U %S' -o "$TMP/time" "$TWINDEX" --threads 1 index build \
    --model corpora/encoders/dlib-face --corpus corpora/orl-faces --out "$TMP/idx" --backend flat >/dev/null 2>"$TMP/log"
read -r TW_WALL TW_USER TW_SYS < "$TMP/time"
python3 - "$PEER" "$TW_WALL" "$TW_USER" "$TW_SYS" "$OUT" <<'PYEOF'
import json, sys
peer = json.loads(sys.argv[1]); wall, user, sys_ = map(float, sys.argv[2:5])
n = peer["faces"]; cpu = user + sys_
tw = {"tool": "twindex", "faces": n, "wall_seconds": wall, "cpu_seconds": cpu,
      "faces_per_second": n / wall, "faces_per_cpu_second": n / cpu}
r = {"peer": peer, "twindex": tw,
     "ratio_faces_per_second": tw["faces_per_second"] / peer["faces_per_second"],
     "ratio_faces_per_cpu_second": tw["faces_per_cpu_second"] / peer["faces_per_cpu_second"]}
json.dump(r, open(sys.argv[5], "w"), indent=2)
print(f"{peer['tool']}: {peer['faces_per_second']:.2f} faces/s, {peer['faces_per_cpu_second']:.2f} per CPU-s")
print(f"twindex: {tw['faces_per_second']:.2f} faces/s, {tw['faces_per_cpu_second']:.2f} per CPU-s (index build, 1 thread)")
print(f"twindex / dlib: {r['ratio_faces_per_second']:.2f}x faces/s, {r['ratio_faces_per_cpu_second']:.2f}x per CPU-s")
print("results:", sys.argv[5])
PYEOF
