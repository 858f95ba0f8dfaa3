#!/usr/bin/env bash
# Side-by-side face photos (issue 22's numbers 2 to 5): face_recognition (dlib's Python: HOG and
# CNN pipelines; benches/peers/face_recognition_photos.py) and twindex (dlib's models read by
# twindex: CNN detector, landmarks, RGB chip, descriptor; examples/face_photos.rs) on the same
# photos and pairs (deepface's face-recognition-pivot.csv), one thread each, in one run.
# Writes benches/peers/results/compare_face_photos_<UTC stamp>.json.
#
#   bash benches/peers/compare_face_photos.sh
#
# Env: PY (python with dlib-bin, face_recognition and face_recognition_models; default
#      /work/venv-dlib/bin/python), PHOTOS (default ../shared/corpora/faces-photos),
#      CNN_BUDGET (CPU-seconds for face_recognition's CNN pipeline, default 300).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="${PY:-/work/venv-dlib/bin/python}"
PHOTOS="${PHOTOS:-../shared/corpora/faces-photos}"
CNN_BUDGET="${CNN_BUDGET:-300}"
bash "$HERE/fetch_dlib_models.sh" >&2
cargo build --release --example face_photos >&2
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
RAYON_NUM_THREADS=1 nice -n 5 target/release/examples/face_photos --photos "$PHOTOS" --threads 1 > "$tmp/twindex.json"
OMP_NUM_THREADS=1 nice -n 5 "$PY" "$HERE/face_recognition_photos.py" --photos "$PHOTOS" --cnn-budget "$CNN_BUDGET" > "$tmp/fr.json"
out="$HERE/results/compare_face_photos_$stamp.json"
python3 - "$tmp/twindex.json" "$tmp/fr.json" "$out" <<'PY'
import json, sys
tw, fr = (json.load(open(p)) for p in sys.argv[1:3])
v = {"twindex": tw, "face_recognition": fr,
     "twindex_vs_hog_photos_per_cpu_second": tw["photos_per_cpu_second"] / fr["hog_photos_per_cpu_second"],
     "twindex_vs_cnn_photos_per_cpu_second": (tw["photos_per_cpu_second"] / fr["cnn_photos_per_cpu_second"]) if fr["cnn_photos_per_cpu_second"] else None}
json.dump(v, open(sys.argv[3], "w"), indent=1)
print(json.dumps(v, indent=1))
PY
echo "wrote $out" >&2
