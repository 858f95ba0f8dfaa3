#!/usr/bin/env bash
# The MNIST loss table (issue 24): each loss with one miner, LeNet and the CNN, seeds 1-3, the
# same short budget for all (EPOCHS epochs on the first MAX_TRAIN training digits), then
# `twindex eval` on the 10,000 test digits (pair accuracy at the calibrated threshold,
# precision@1, MAP@R against the 60,000 training digits). One JSON line per run in OUT.
#   benches/mnist_losses.sh [OUT]        (default runs/mnist-losses.jsonl)
# Environment: ARCHS ("lenet cnn"), RUNS (loss:miner:margin list), SEEDS ("1 2 3"), EPOCHS (1),
# MAX_TRAIN (20000), THREADS (1), BIN, EXTRA (more `train image` flags, e.g. --avg-non-zero).
set -euo pipefail
BIN=${BIN:-target/release/twindex}
OUT=${1:-runs/mnist-losses.jsonl}
EPOCHS=${EPOCHS:-1}
MAX_TRAIN=${MAX_TRAIN:-20000}
THREADS=${THREADS:-1}
mkdir -p "$(dirname "$OUT")" runs/mnist-losses
: > "$OUT"
# loss:miner:margin (margin only read by triplet and contrastive)
RUNS=${RUNS:-"triplet:semi-hard:0.2 multi-similarity:multi-similarity:1 angular:none:1 supcon:none:1 ntxent:none:1 proxy-anchor:none:1 circle:none:1 lifted:none:1"}
for arch in ${ARCHS:-lenet cnn}; do
  for spec in $RUNS; do
    IFS=: read -r loss miner margin <<<"$spec"
    for seed in ${SEEDS:-1 2 3}; do
      dir=runs/mnist-losses/$arch-$loss-$seed
      rm -rf "$dir"
      train=$(nice "$BIN" --threads "$THREADS" train image --corpus mnist --arch "$arch" --loss "$loss" \
        --miner "$miner" --margin "$margin" --epochs "$EPOCHS" --max-train "$MAX_TRAIN" \
        --seed "$seed" ${EXTRA:-} --out "$dir" --json 2>/dev/null)
      eval=$(nice "$BIN" --threads "$THREADS" eval --model "$dir" --corpus mnist --json 2>/dev/null)
      python3 - "$arch" "$loss" "$miner" "$seed" "$train" "$eval" >>"$OUT" <<'PY'
import json, sys
arch, loss, miner, seed, train, ev = sys.argv[1:]
t, e = json.loads(train), json.loads(ev)
print(json.dumps({"arch": arch, "loss": loss, "miner": miner, "seed": int(seed),
  "train_cpu_seconds": t["cpu_seconds"], "pair_accuracy": e["pair_accuracy"],
  "precision_at_1": e["precision_at_1"], "map_at_r": e["map_at_r"], "r_precision": e["r_precision"],
  "mrr": e["mrr"], "nmi": e["nmi"], "ami": e["ami"]}))
PY
      tail -1 "$OUT" >&2
    done
  done
done
