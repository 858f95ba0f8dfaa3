#!/usr/bin/env bash
# Side-by-side Siamese-MNIST training (LeNet tower, contrastive loss m=1, Adam 1e-3, batch 128,
# seed 1): Keras (benches/peers/keras_siamese_mnist.py), then `twindex train image`, in one
# run on the same machine. Writes benches/peers/results/compare_train_<stamp>.json and prints
# the ratios.
#
#   bash benches/peers/compare_train.sh [EPOCHS]        # default 20
#
# Env: TWINDEX (default target/release/twindex), NICE (default "nice -n 5"; "" for none),
#      KERAS_THREADS (default 0 = TensorFlow's default thread pools; 1 or 2 to pin).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
EPOCHS="${1:-20}"
PY="$HERE/.venv/bin/python"
TWINDEX="${TWINDEX:-target/release/twindex}"
NICE="${NICE-nice -n 5}"
KERAS_THREADS="${KERAS_THREADS:-0}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR"
PEER_JSON="$OUTDIR/.train_keras_$STAMP.json"
TW_JSON="$OUTDIR/.train_twindex_$STAMP.json"
COMBINED="$OUTDIR/compare_train_${STAMP}_e${EPOCHS}.json"

[ -x "$PY" ] || { echo "compare_train: no venv; run: bash benches/peers/setup.sh" >&2; exit 2; }

echo "== peer: keras, $EPOCHS epochs" >&2
$NICE "$PY" "$HERE/keras_siamese_mnist.py" --epochs "$EPOCHS" --batch 128 --lr 0.001 \
  --margin 1 --seed 1 --threads "$KERAS_THREADS" --json-out "$PEER_JSON" > /dev/null

tw_ok=1
if [ ! -x "$TWINDEX" ]; then
  echo "compare_train: $TWINDEX not found (cargo build --release first); peer results only" >&2
  tw_ok=0
else
  echo "== twindex: train image, $EPOCHS epochs" >&2
  if ! $NICE "$TWINDEX" train image --corpus mnist --arch lenet --loss contrastive --margin 1 \
      --epochs "$EPOCHS" --batch 128 --lr 0.001 --seed 1 --out runs/lenet-compare --json \
      > "$TW_JSON"; then
    echo "compare_train: twindex train failed" >&2; tw_ok=0
  fi
fi

"$PY" - "$PEER_JSON" "$TW_JSON" "$COMBINED" "$tw_ok" <<'PY'
import json, os, sys
peer_p, tw_p, out_p, tw_ok = sys.argv[1:5]
keras = json.load(open(peer_p))
tw = json.load(open(tw_p)) if tw_ok == "1" and os.path.exists(tw_p) else None

def div(a, b):
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

res = {"benchmark": "siamese-mnist-lenet-contrastive", "epochs": keras["epochs"],
       "keras": keras, "twindex": tw, "ratios": {}}
print(f"keras ({keras['versions']['tensorflow']}, threads {keras['threads']}): "
      f"{keras['pairs_per_second']} pairs/s ({keras['pairs_per_second_after_warmup']} after "
      f"epoch 1), {keras['pairs_per_cpu_second']} pairs/CPU-s, {keras['wall_seconds']} s wall, "
      f"{keras['cpu_seconds']} CPU-s; test pair acc {keras['test_pair_accuracy']}, "
      f"P@1 {keras['precision_at_1']}")
if tw is None:
    print("twindex: no results (keras results saved only)")
else:
    r = {k: div(tw.get(k), keras.get(k)) for k in
         ("pairs_per_second", "pairs_per_cpu_second", "wall_seconds", "cpu_seconds")}
    r["pairs_per_second_vs_keras_after_warmup"] = div(tw.get("pairs_per_second"),
                                                      keras.get("pairs_per_second_after_warmup"))
    res["ratios"]["twindex_vs_keras"] = r
    print(f"twindex: {tw.get('pairs_per_second')} pairs/s, {tw.get('pairs_per_cpu_second')} "
          f"pairs/CPU-s, {tw.get('wall_seconds')} s wall, {tw.get('cpu_seconds')} CPU-s")
    print(f"twindex / keras: pairs/s {r['pairs_per_second']} (vs keras after warm-up "
          f"{r['pairs_per_second_vs_keras_after_warmup']})  | pairs/CPU-s "
          f"{r['pairs_per_cpu_second']}  | wall {r['wall_seconds']}  | CPU-s {r['cpu_seconds']}")
    acc = {k: (tw.get(k), keras.get(k)) for k in
           ("test_pair_accuracy", "train_pair_accuracy", "precision_at_1") if k in tw}
    if acc:
        res["accuracy_twindex_keras"] = acc
        print("accuracy (twindex, keras): " + ", ".join(f"{k} {v}" for k, v in acc.items()))
json.dump(res, open(out_p, "w"), indent=2)
print(f"results: {out_p}")
PY
rm -f "$PEER_JSON" "$TW_JSON"
[ "$tw_ok" = 1 ]
