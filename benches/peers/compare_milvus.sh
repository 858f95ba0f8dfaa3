#!/usr/bin/env bash
# Issue 13's figures: the 117,659 WordNet glosses embedded with MiniLM by `twindex embed
# --shard i/4` (4 parts) and by one `twindex embed` (checked identical), a local index built from
# the parts, the parts pushed into a real Milvus standalone (PyPI `milvus` 2.3.5, started here
# in its own network namespace: run as root), and examples/milvus_bench.rs comparing the two
# on 1,000 queries (recall@10 against exact search, top-1 duplicate decisions, latency).
#
#   benches/peers/compare_milvus.sh            # WORK defaults to /tmp/twindex-milvus-bench
#
# Writes benches/peers/results/compare_milvus_<UTC>.json. Files it makes in WORK are its own
# (a marker file); it never removes a WORK it did not make.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WORK=${WORK:-/tmp/twindex-milvus-bench}
SHARED=${SHARED:-$ROOT/../shared}
GLOSSES=$SHARED/corpora/text/wordnet-glosses.tsv.gz
MODEL=$SHARED/models/all-MiniLM-L6-v2
# The QQP-dev calibration of MiniLM (similarity 0.7446, distance 0.2554; index/glosses-100k was
# calibrated so), recorded in the parts by embed --threshold.
THRESHOLD=${THRESHOLD:-0.2554}
VENV=${VENV:-$ROOT/target/milvus-venv}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/benches/peers/results/compare_milvus_$STAMP.json

if [ -e "$WORK" ] && [ ! -e "$WORK/.twindex-milvus-bench" ]; then
    echo "$WORK exists and was not made by this script: set WORK to a new folder" >&2
    exit 2
fi
mkdir -p "$WORK" && touch "$WORK/.twindex-milvus-bench"
bash benches/peers/milvus_setup.sh "$VENV"
cargo build --release --bin twindex --example milvus_bench
BIN=$ROOT/target/release/twindex
BENCH=$ROOT/target/release/examples/milvus_bench

echo "== embed: 4 shards, then one run (uptime: $(uptime))"
rm -f "$WORK"/part-*.parquet* "$WORK"/single.parquet*
for i in 0 1 2 3; do
    "$BIN" embed --model "$MODEL" --text "$GLOSSES" --text-column gloss --label-column pos \
        --shard "$i/4" --threshold "$THRESHOLD" --out "$WORK/part-$i.parquet" --json | tee "$WORK/embed-$i.json"
done
"$BIN" embed --model "$MODEL" --text "$GLOSSES" --text-column gloss --label-column pos \
    --threshold "$THRESHOLD" --out "$WORK/single.parquet" --json | tee "$WORK/embed-single.json"
"$VENV/bin/python" - "$WORK" <<'EOF' | tee "$WORK/identical.json"
import json, sys, pyarrow.parquet as pq, numpy as np
w = sys.argv[1]
parts = [pq.read_table(f"{w}/part-{i}.parquet") for i in range(4)]
one = pq.read_table(f"{w}/single.parquet")
ids = np.concatenate([p.column("id").to_numpy() for p in parts])
vec = np.concatenate([np.stack(p.column("vector").to_numpy(zero_copy_only=False)) for p in parts])
ref = np.stack(one.column("vector").to_numpy(zero_copy_only=False))
same = bool(np.array_equal(ids, one.column("id").to_numpy()) and np.array_equal(vec, ref))
texts = [t for p in parts for t in p.column("text").to_pylist()] == one.column("text").to_pylist()
print(json.dumps({"rows": int(len(ids)), "vectors_identical": same, "texts_identical": texts,
                  "max_abs_diff": float(np.abs(vec - ref).max())}))
EOF

echo "== local index from the parts"
rm -rf "$WORK/local"
"$BIN" index build --parts "$WORK/part-*.parquet" --out "$WORK/local" --m 16 --ef-construction 200 --json \
    | tee "$WORK/local-build.json"

echo "== queries: the first 60% of the words of every 117th gloss"
zcat "$GLOSSES" | tail -n +2 | awk -F'\t' 'NR % 117 == 1 { n = split($4, w, " "); m = int(n * 0.6 + 0.999); s = w[1]; for (i = 2; i <= m; i++) s = s " " w[i]; print s }' \
    | head -1000 > "$WORK/queries.txt"
wc -l "$WORK/queries.txt"

echo "== Milvus standalone in its own network namespace: push, then the side-by-side bench"
export BIN BENCH VENV WORK THRESHOLD OUT
unshare -n bash -euo pipefail -c '
ip link set lo up
rm -rf "$WORK/milvus"
setsid "$VENV/bin/milvus-server" --data "$WORK/milvus" > "$WORK/milvus.log" 2>&1 &
PID=$!
trap "kill -TERM -$PID 2>/dev/null; sleep 5; kill -KILL -$PID 2>/dev/null || true" EXIT
for i in $(seq 1 240); do
    if curl -sf http://127.0.0.1:9091/healthz >/dev/null; then break; fi
    sleep 1
done
curl -sf http://127.0.0.1:9091/healthz
echo " Milvus healthy"
"$BIN" index push --parts "$WORK/part-*.parquet" --milvus milvus://127.0.0.1:19530 \
    --collection glosses --m 16 --ef-construction 200 --json | tee "$WORK/push.json"
uptime
RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 "$BENCH" --local "$WORK/local" \
    --milvus milvus://127.0.0.1:19530 --collection glosses --queries "$WORK/queries.txt" \
    --k 10 --efs 10,16,32,64,128 --out "$WORK/bench.json"
uptime
'
"$VENV/bin/python" - "$WORK" "$OUT" <<'EOF'
import json, sys, glob
w, out = sys.argv[1], sys.argv[2]
r = {"embed_shards": [json.load(open(f"{w}/embed-{i}.json")) for i in range(4)],
     "embed_single": json.load(open(f"{w}/embed-single.json")),
     "identical": json.load(open(f"{w}/identical.json")),
     "local_build": json.load(open(f"{w}/local-build.json")),
     "push": json.load(open(f"{w}/push.json")),
     "bench": json.load(open(f"{w}/bench.json"))}
json.dump(r, open(out, "w"), indent=2)
print("wrote", out)
EOF
