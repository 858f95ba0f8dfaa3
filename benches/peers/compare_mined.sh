#!/usr/bin/env bash
# Hard negatives mined from an index, then MNRL, side by side on QQP (issue 24, number 3):
#   twindex:  index build --text (the training texts) -> mine-negatives -> train text --loss mnrl
#   peer:     sentence-transformers' util.mine_hard_negatives on the same texts -> MNRL
#             (benches/peers/st_finetune.py --mine-corpus), the same settings and seed;
# both 1 thread, the two sides at once on separate cores. Then, with the same evaluator
# (`twindex eval`): duplicate-retrieval MRR@10 over the 19,413 questions of qqp-10k (test
# queries; the dev split's queries too, which is where settings are chosen) and test AP, for the
# base model (zero-shot) and both fine-tuned models. Writes
# benches/peers/results/compare_mined_<stamp>.json and prints it. RANKS must start at 1 for the
# two sides to mean the same (sentence-transformers counts range_min among the candidates left
# after its filters, twindex counts the index's ranks).
#
#   bash benches/peers/compare_mined.sh [RANKS] [NEGATIVES] [RELATIVE_MARGIN]   # default 1..30 1 0.05
#
# Env: TWINDEX (default target/release/twindex), ST_PYTHON (default benches/peers/.venv-st/bin/python,
#      made by st_setup.sh, plus `pip install datasets accelerate scikit-learn`), EPOCHS (1),
#      BATCH (32), LR (2e-5), SEED (42), SHARED (../shared), RUN_ID (default: a UTC time stamp).
# CPU seconds are whole processes on the twindex side (index build + mine-negatives + train text,
# model loading and the per-epoch dev evaluation included) and the peer's own process_time
# around mine_hard_negatives and trainer.train() (its dev evaluation included).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
RANKS="${1:-1..30}"; NEG="${2:-1}"; REL="${3:-0.05}"
TWINDEX="${TWINDEX:-target/release/twindex}"
PY="${ST_PYTHON:-$HERE/.venv-st/bin/python}"
EPOCHS="${EPOCHS:-1}"; BATCH="${BATCH:-32}"; LR="${LR:-2e-5}"; SEED="${SEED:-42}"
SHARED="${SHARED:-../shared}"
BASE="$SHARED/models/all-MiniLM-L6-v2"
Q="$SHARED/corpora/pairs"
STAMP="${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}"
W="runs/mined-$STAMP"
OUT="$HERE/results/compare_mined_$STAMP.json"
export HF_HUB_OFFLINE=1 RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 OMP_NUM_THREADS=1
case "$RANKS" in 1..*) ;; *) echo "compare_mined: RANKS must start at 1 (got $RANKS): see the header" >&2; exit 2;; esac
[ -x "$TWINDEX" ] || { echo "compare_mined: build $TWINDEX first (cargo build --release)" >&2; exit 2; }
"$PY" -c "import sentence_transformers, datasets, accelerate, sklearn" 2>/dev/null \
  || { echo "compare_mined: $PY lacks sentence-transformers/datasets/accelerate/scikit-learn" >&2; exit 2; }
mkdir -p runs "$HERE/results"
mkdir "$W"   # a new folder: this script never writes over an earlier run
# The candidate corpus of both sides: every distinct question of the training pairs.
"$PY" - "$Q/qqp-10k.train.tsv" "$W/train-texts.txt" <<'PY'
import csv, sys
rows = csv.DictReader(open(sys.argv[1], newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
texts = dict.fromkeys(t for r in rows for t in (r["q1"], r["q2"]))
open(sys.argv[2], "w", encoding="utf-8").write("".join(t + "\n" for t in texts))
PY
cpu() { /usr/bin/time -f "%U %S" -o "$1" "${@:2}"; }   # whole-process user + system seconds

echo "== $(date -u +%T) both sides start (load: $(uptime | sed 's/.*average: //'))" >&2
(
  cpu "$W/tw-build.cpu" "$TWINDEX" --threads 1 index build --text "$W/train-texts.txt" --model "$BASE" \
    --out "$W/tw-index" --json > "$W/tw-build.json"
  cpu "$W/tw-mine.cpu" "$TWINDEX" --threads 1 mine-negatives --index "$W/tw-index" \
    --pairs "$Q/qqp-10k.train.tsv" --ranks "$RANKS" --negatives "$NEG" --relative-margin "$REL" \
    --out "$W/tw-mined.tsv" --json > "$W/tw-mine.json"
  cpu "$W/tw-train.cpu" "$TWINDEX" --threads 1 train text --pairs "$W/tw-mined.tsv" \
    --dev "$Q/qqp-10k.dev.tsv" --base "$BASE" --loss mnrl --epochs "$EPOCHS" --batch "$BATCH" \
    --lr "$LR" --seed "$SEED" --out "$W/tw-model" --json > "$W/tw-train.json"
  echo "== $(date -u +%T) twindex side done" >&2
) &
TWPID=$!
"$PY" "$HERE/st_finetune.py" --base "$BASE" --train "$Q/qqp-10k.train.tsv" --dev "$Q/qqp-10k.dev.tsv" \
  --test "$Q/qqp-10k.test.tsv" --loss mnrl --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" \
  --seed "$SEED" --threads 1 --mine-corpus "$W/train-texts.txt" --mine-ranks "$RANKS" \
  --mine-negatives "$NEG" --mine-relative-margin "$REL" --out "$W/st-model" \
  --json-out "$W/st.json" > /dev/null 2> "$W/st.log"
echo "== $(date -u +%T) sentence-transformers side done" >&2
wait "$TWPID"

for m in base tw st; do
  case $m in base) M="$BASE";; tw) M="$W/tw-model";; st) M="$W/st-model";; esac
  for split in test dev; do
    others=(train test dev); D=()
    for o in "${others[@]}"; do [ "$o" = "$split" ] || D+=(--distractors "$Q/qqp-10k.$o.tsv"); done
    "$TWINDEX" --threads 2 eval --model "$M" --pairs "$Q/qqp-10k.$split.tsv" --retrieval "${D[@]}" \
      --json > "$W/$m-retrieval-$split.json" 2>/dev/null
  done
  "$TWINDEX" --threads 2 eval --model "$M" --pairs "$Q/qqp-10k.test.tsv" --dev "$Q/qqp-10k.dev.tsv" \
    --json > "$W/$m-pairs.json"
done

"$PY" - "$W" "$OUT" "$RANKS" "$NEG" "$REL" <<'PY'
import json, sys
w, out = sys.argv[1], sys.argv[2]
j = lambda f: json.load(open(f"{w}/{f}"))
c = lambda f: sum(map(float, open(f"{w}/{f}").read().split()[-2:]))
st = j("st.json")
tw_cpu = {k: c(f"tw-{k}.cpu") for k in ("build", "mine", "train")}
st_cpu = {"mine": st["mined_negatives"]["cpu_seconds"], "train": st["cpu_seconds_including_dev_eval"]}
res = {
    "benchmark": "qqp-10k: MNRL on hard negatives mined from an index", "run": w,
    "settings": {"ranks": sys.argv[3], "negatives": int(sys.argv[4]), "relative_margin": float(sys.argv[5]),
                 "threads_per_side": 1, "st_versions": st["versions"]},
    "mined_rows": {"twindex": j("tw-mine.json")["rows"], "st": st["mined_negatives"]["rows"]},
    "mrr_at_10_test": {m: j(f"{m}-retrieval-test.json")["encoder"]["mrr_at_10"] for m in ("base", "tw", "st")},
    "mrr_at_10_dev": {m: j(f"{m}-retrieval-dev.json")["encoder"]["mrr_at_10"] for m in ("base", "tw", "st")},
    "test_ap": {m: j(f"{m}-pairs.json")["average_precision"] for m in ("base", "tw", "st")},
    "cpu_seconds": {"twindex": tw_cpu, "st": st_cpu},
    "cpu_ratio_twindex_over_st": sum(tw_cpu.values()) / sum(st_cpu.values()),
}
json.dump(res, open(out, "w"), indent=2)
print(json.dumps(res, indent=2))
PY
