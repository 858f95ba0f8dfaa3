#!/usr/bin/env bash
# Side-by-side text fine-tuning on QQP: `twindex train text` and sentence-transformers
# (benches/peers/st_finetune.py) with the same loss, data split and hyper-parameters, in one run
# on the same machine; then test AP of both, and the zero-shot AP of the base model.
# Writes benches/peers/results/compare_finetune_<stamp>_<loss>.json and prints the figures.
#
#   bash benches/peers/compare_finetune.sh [LOSS] [EPOCHS] [BATCH]     # default mnrl 1 32
#
# Env: TWINDEX (default target/release/twindex), ST_PYTHON (a Python with sentence-transformers,
#      datasets, accelerate, scikit-learn; default benches/peers/.venv-st/bin/python, made by
#      st_setup.sh, then `pip install datasets accelerate scikit-learn` in it), THREADS (default 1, both sides), MAX_TRAIN (default: all
#      pairs), NICE (default "nice -n 5"), SHARED (default ../shared), LR (default 2e-5, both),
#      SEED (default 42, both),
#      SIDE (both | twindex | st; default both: one after the other. Two runs with SIDE=twindex
#      and SIDE=st and the same RUN_ID may run at once on separate cores; whichever ends last
#      writes the combined JSON; SIDE=combine only combines), RUN_ID (default: a UTC time stamp).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
LOSS="${1:-mnrl}"; EPOCHS="${2:-1}"; BATCH="${3:-32}"
TWINDEX="${TWINDEX:-target/release/twindex}"
PY="${ST_PYTHON:-$HERE/.venv-st/bin/python}"
THREADS="${THREADS:-1}"
LR="${LR:-2e-5}"
SEED="${SEED:-42}"
NICE="${NICE-nice -n 5}"
SHARED="${SHARED:-../shared}"
BASE="$SHARED/models/all-MiniLM-L6-v2"
Q="$SHARED/corpora/pairs"
STAMP="${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}"
SIDE="${SIDE:-both}"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR" runs
MAXARG=(); [ -n "${MAX_TRAIN:-}" ] && MAXARG=(--max-train "$MAX_TRAIN")
TAG="${STAMP}_${LOSS}_e${EPOCHS}_b${BATCH}_lr${LR}_s${SEED}${MAX_TRAIN:+_n$MAX_TRAIN}"
ZS="$OUTDIR/.ft_zeroshot_$TAG.json"; TWT="$OUTDIR/.ft_twindex_train_$TAG.json"
TWE="$OUTDIR/.ft_twindex_eval_$TAG.json"; STJ="$OUTDIR/.ft_st_$TAG.json"
COMBINED="$OUTDIR/compare_finetune_$TAG.json"
MODEL_OUT="runs/qqp-ft-$TAG"
export HF_HUB_OFFLINE=1 RAYON_NUM_THREADS="$THREADS" CANDLE_NUM_THREADS="$THREADS"

[ -x "$TWINDEX" ] || { echo "compare_finetune: build $TWINDEX first (cargo build --release)" >&2; exit 2; }
"$PY" -c "import sentence_transformers, datasets, accelerate, sklearn" 2>/dev/null \
  || { echo "compare_finetune: $PY lacks sentence-transformers/datasets/accelerate/scikit-learn" >&2; exit 2; }
echo "== load: $(uptime)" >&2
if [ "$SIDE" = both ] || [ "$SIDE" = twindex ]; then
  echo "== zero-shot: twindex eval $BASE on test" >&2
  $NICE "$TWINDEX" --threads "$THREADS" eval --model "$BASE" --pairs "$Q/qqp-10k.test.tsv" --json > "$ZS.tmp"
  mv "$ZS.tmp" "$ZS"
  echo "== twindex: train text --loss $LOSS, $EPOCHS epoch(s), batch $BATCH" >&2
  $NICE "$TWINDEX" --threads "$THREADS" train text --pairs "$Q/qqp-10k.train.tsv" --dev "$Q/qqp-10k.dev.tsv" \
    --base "$BASE" --loss "$LOSS" --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --seed "$SEED" "${MAXARG[@]}" \
    --out "$MODEL_OUT" --json > "$TWT.tmp"
  $NICE "$TWINDEX" --threads "$THREADS" eval --model "$MODEL_OUT" --pairs "$Q/qqp-10k.test.tsv" --json > "$TWE.tmp"
  mv "$TWT.tmp" "$TWT"; mv "$TWE.tmp" "$TWE"
  echo "== load: $(uptime)" >&2
fi
if [ "$SIDE" = both ] || [ "$SIDE" = st ]; then
  echo "== sentence-transformers: same loss and hyper-parameters" >&2
  $NICE "$PY" "$HERE/st_finetune.py" --base "$BASE" --train "$Q/qqp-10k.train.tsv" --dev "$Q/qqp-10k.dev.tsv" \
    --test "$Q/qqp-10k.test.tsv" --loss "$LOSS" --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --seed "$SEED" \
    --threads "$THREADS" "${MAXARG[@]}" --json-out "$STJ.tmp" > /dev/null
  mv "$STJ.tmp" "$STJ"
  echo "== load: $(uptime)" >&2
fi
for f in "$ZS" "$TWT" "$TWE" "$STJ"; do
  [ -s "$f" ] || { echo "compare_finetune: $SIDE side done; $f not there yet (the other side writes the combined JSON)" >&2; exit 0; }
done

"$PY" - "$ZS" "$TWT" "$TWE" "$STJ" "$COMBINED" "$THREADS" <<'PY'
import json, sys
zs, twt, twe, stj = (json.load(open(p)) for p in sys.argv[1:5])
out_p, threads = sys.argv[5], int(sys.argv[6])
tw_ap, st_ap, z = twe["average_precision"], stj["test_average_precision"], zs["average_precision"]
res = {"benchmark": "qqp-10k fine-tuning", "loss": twt["config"]["loss"], "threads": threads,
       "zero_shot_test_ap": z, "twindex_test_ap": tw_ap, "st_test_ap": st_ap,
       "twindex_minus_zero_shot": tw_ap - z, "twindex_minus_st": tw_ap - st_ap,
       "twindex_train_wall_seconds": twt["wall_seconds"], "twindex_train_cpu_seconds": twt["cpu_seconds"],
       "twindex_pairs_per_second": twt["pairs_per_second"],
       "st_train_wall_seconds": stj["wall_seconds"], "st_pairs_per_second": stj["pairs_per_second"],
       "zero_shot": zs, "twindex_train": twt, "twindex_eval": twe, "sentence_transformers": stj}
json.dump(res, open(out_p, "w"), indent=2)
print(f"zero-shot test AP      {z:.4f}")
print(f"twindex   test AP      {tw_ap:.4f}  ({tw_ap - z:+.4f} vs zero-shot; train {twt['wall_seconds']:.0f} s wall, "
      f"{twt['cpu_seconds']:.0f} CPU-s, {twt['train_examples']} examples, "
      f"{twt['examples_per_second']:.2f}/s; dev AP {twt['dev_average_precision']})")
print(f"sent-trf  test AP      {st_ap:.4f}  (train {stj['wall_seconds']:.0f} s wall excl. dev eval, "
      f"{stj['cpu_seconds_including_dev_eval']:.0f} CPU-s incl. dev eval, {stj['pairs_per_second']:.2f} examples/s; "
      f"dev {[round(h['dev_ap'], 4) for h in stj['dev_history']]})")
print(f"written {out_p}")
PY
