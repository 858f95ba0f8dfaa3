"""Reference values for tests/it/dlib_detect.rs from dlib's own Python bindings, on every photo
under faces-photos: dlib's MMOD CNN face detector (boxes and scores, no upsampling, and with one
pyramid_up for the small dlib-faces photos), and for each CNN face the 5 landmarks, the 150x150
RGB face chip (sha256) and the 128-d descriptor (compute_face_descriptor, no jitter). The HOG
detector's boxes (face_recognition's default, upsample 1) are recorded beside them for the
recall comparison on dlib-faces/training.xml.

    /work/venv-dlib/bin/python benches/peers/dlib_detect_reference.py \
        --models corpora/dlib-models --photos ../shared/corpora/faces-photos \
        --out tests/data/dlib_detect_reference.json

Needs numpy, pillow and dlib (PyPI's `dlib-bin` wheel). Images are read as face_recognition's
load_image_file does: PIL, converted to RGB (alpha dropped). JPEG decoders differ in the last
bit of some pixels (PIL's libjpeg-turbo and twindex's zune-jpeg do), and dlib's landmark trees
compare single pixels; so with `--decoded DIR` each photo is read instead from DIR/<photo>.png,
the pixels twindex decodes (`cargo run --release --example decode_rgb -- PHOTOS DIR`), and the
comparison is of the models alone. The sha256 of the RGB pixels used is recorded."""
import argparse, glob, hashlib, json, os, time

import dlib
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--models", default="corpora/dlib-models")
ap.add_argument("--photos", default="../shared/corpora/faces-photos")
ap.add_argument("--out", default="tests/data/dlib_detect_reference.json")
ap.add_argument("--decoded", default=None)
ap.add_argument("--only", default="", help="only the photos under this sub-folder of --photos")
a = ap.parse_args()
m = lambda f: os.path.join(a.models, f)
cnn = dlib.cnn_face_detection_model_v1(m("mmod_human_face_detector.dat"))
hog = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(m("shape_predictor_5_face_landmarks.dat"))
rec = dlib.face_recognition_model_v1(m("dlib_face_recognition_resnet_model_v1.dat"))

paths = sorted(
    p for p in glob.glob(os.path.join(a.photos, "**", "*"), recursive=True)
    if p.lower().endswith((".jpg", ".jpeg", ".png"))
    and os.path.relpath(p, a.photos).startswith(a.only)
)
box = lambda r: [r.left(), r.top(), r.right(), r.bottom()]
out = []
for p in paths:
    rel = os.path.relpath(p, a.photos)
    src = os.path.join(a.decoded, rel + ".png") if a.decoded else p
    img = np.ascontiguousarray(np.array(Image.open(src).convert("RGB")))
    t = time.process_time()
    dets = cnn(img, 0)
    took = time.process_time() - t
    faces = []
    for d in dets:
        shape = sp(img, d.rect)
        chip = dlib.get_face_chip(img, shape, 150, 0.25)
        desc = np.array(rec.compute_face_descriptor(img, shape))
        faces.append({
            "box": box(d.rect),
            "score": round(float(d.confidence), 6),
            "parts": [[shape.part(k).x, shape.part(k).y] for k in range(5)],
            "chip_sha256": hashlib.sha256(np.ascontiguousarray(chip).tobytes()).hexdigest(),
            "descriptor": [round(float(x), 6) for x in desc],
        })
    rec_ = {
        "path": rel,
        "width": img.shape[1],
        "height": img.shape[0],
        "decoded_by": "twindex" if a.decoded else "PIL",
        "rgb_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
        "cnn_cpu_seconds": round(took, 3),
        "cnn": faces,
        "hog_upsample1": [box(r) for r in hog(img, 1)],
    }
    if rel.startswith("dlib-faces"):
        rec_["cnn_upsample1"] = [
            {"box": box(d.rect), "score": round(float(d.confidence), 6)} for d in cnn(img, 1)
        ]
    out.append(rec_)
    print(f"{rel}: {len(faces)} faces, {took:.1f} CPU-s", flush=True)
with open(a.out, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {a.out}: {len(out)} photos")
