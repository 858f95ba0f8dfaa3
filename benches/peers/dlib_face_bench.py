"""Peer timing for twindex's dlib face encoder: dlib's own Python bindings embedding the 400 ORL
faces the same way (fixed face box, 5-point landmarks, 150x150 chip, ResNet descriptor).

    python benches/peers/dlib_face_bench.py --models corpora/dlib-models --corpus corpora/orl-faces

Prints one JSON object: faces, wall and CPU seconds, faces per second and per CPU-second.
Needs numpy, pillow and dlib (the `dlib-bin` wheel on PyPI)."""
import argparse, glob, json, os, time

import dlib
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--models", default="corpora/dlib-models")
ap.add_argument("--corpus", default="corpora/orl-faces")
ap.add_argument("--box", default="0.076,0.25,0.924,0.946")
a = ap.parse_args()
rec = dlib.face_recognition_model_v1(os.path.join(a.models, "dlib_face_recognition_resnet_model_v1.dat"))
sp = dlib.shape_predictor(os.path.join(a.models, "shape_predictor_5_face_landmarks.dat"))
l, t, r, b = (float(x) for x in a.box.split(","))
files = sorted(glob.glob(os.path.join(a.corpus, "*", "*.pgm")))
w0, c0 = time.perf_counter(), time.process_time()
out = []
for f in files:
    g = np.array(Image.open(f).convert("L"))
    h, w = g.shape
    rect = dlib.rectangle(round(l * w), round(t * h), round(r * w), round(b * h))
    rgb = np.ascontiguousarray(np.stack([g] * 3, -1))
    out.append(np.array(rec.compute_face_descriptor(rgb, sp(rgb, rect))))
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({"tool": "dlib " + dlib.__version__, "faces": len(files), "wall_seconds": wall,
                  "cpu_seconds": cpu, "faces_per_second": len(files) / wall,
                  "faces_per_cpu_second": len(files) / cpu}))
