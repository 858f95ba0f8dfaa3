"""Reference values for tests/it/dlib_face.rs from dlib's own Python bindings: for six ORL faces,
the 5 landmarks found from a fixed box, the 150x150 face chip (its sha256, grey channel) and the
128-d descriptor.

    python benches/peers/dlib_face_reference.py --models corpora/dlib-models \
        --corpus corpora/orl-faces --out tests/data/dlib_face_reference.json

Needs numpy, pillow and dlib (the `dlib-bin` wheel on PyPI)."""
import argparse, hashlib, json, os

import dlib
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--models", default="corpora/dlib-models")
ap.add_argument("--corpus", default="corpora/orl-faces")
ap.add_argument("--out", default="tests/data/dlib_face_reference.json")
a = ap.parse_args()
rec = dlib.face_recognition_model_v1(os.path.join(a.models, "dlib_face_recognition_resnet_model_v1.dat"))
sp = dlib.shape_predictor(os.path.join(a.models, "shape_predictor_5_face_landmarks.dat"))
box = [7, 28, 85, 106]  # left, top, right, bottom: ORL's framing (twindex's default --face-box)
out = []
for s, i in [(1, 1), (1, 2), (7, 3), (13, 5), (22, 9), (40, 10)]:
    path = f"s{s}/{i}.pgm"
    g = np.array(Image.open(os.path.join(a.corpus, path)).convert("L"))
    rgb = np.ascontiguousarray(np.stack([g] * 3, -1))
    shape = sp(rgb, dlib.rectangle(*box))
    chip = dlib.get_face_chip(rgb, shape, 150, 0.25)
    desc = np.array(rec.compute_face_descriptor(rgb, shape))
    out.append({
        "path": path,
        "rect": box,
        "parts": [[shape.part(k).x, shape.part(k).y] for k in range(5)],
        "chip_sha256": hashlib.sha256(np.ascontiguousarray(chip[:, :, 0]).tobytes()).hexdigest(),
        "descriptor": [round(float(x), 6) for x in desc],
    })
with open(a.out, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {a.out}: {len(out)} faces")
