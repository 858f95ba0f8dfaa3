#!/usr/bin/env bash
# twindex serve vs txtai's API server and a FastAPI + sentence-transformers + hnswlib server,
# side by side in one run: the same all-MiniLM-L6-v2, the same corpus (the 19,413 distinct
# questions of qqp-10k.tsv), the same 2,000 altered query questions, wrk on 127.0.0.1 at 1, 8
# and 32 connections (DUR each). Then, for twindex alone: 95% queries / 5% adds at 32
# connections (zero 5xx, every acknowledged add present after); SIGKILL mid-run and restart
# (every 2xx add present); overload at 256 connections (refused fast with 503 rather than slow);
# 200 malformed requests of 20+ kinds (all 4xx, still serving). Writes one JSON:
# benches/peers/results/compare_serve_<UTC stamp>.json.
#
#   bash benches/peers/compare_serve.sh            # needs target/release/twindex, wrk, python3
#   PEERS=0 bash benches/peers/compare_serve.sh    # twindex alone
#   DUR=10s bash benches/peers/compare_serve.sh    # shorter runs
#
# The peers run from VENV (default target/serve-bench/venv, created with
# `pip install "txtai[api]" sentence-transformers hnswlib fastapi uvicorn` when absent).
# All load goes to 127.0.0.1 and every run is bounded by DUR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TWINDEX="${TWINDEX:-$ROOT/target/release/twindex}"
MODEL="${MODEL:-$ROOT/../shared/models/all-MiniLM-L6-v2}"
PAIRS="${PAIRS:-$ROOT/../shared/corpora/pairs}"
WORK="${WORK:-$ROOT/target/serve-bench}"

# A fresh copy of the benchmark index at $1, replacing only a copy this script made before
# (it leaves a marker file): never a folder of the user's.
fresh_copy() {
  local dst="$1"
  if [ -e "$dst" ] && [ ! -f "$dst/.made-by-compare_serve" ]; then
    echo "compare_serve.sh: $dst exists and was not made by this script; remove it or set WORK" >&2
    exit 1
  fi
  rm -rf "$dst"
  cp -r "$WORK/qqp" "$dst"
  touch "$dst/.made-by-compare_serve"
}
VENV="${VENV:-$WORK/venv}"
DUR="${DUR:-30s}"
PEERS="${PEERS:-1}"
PORT_TW=8091 PORT_ST=8092 PORT_TX=8093
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$HERE/results/compare_serve_$STAMP.json"
mkdir -p "$WORK" "$HERE/results"
command -v wrk >/dev/null || { echo "compare_serve: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
[ -x "$TWINDEX" ] || { echo "compare_serve: $TWINDEX is missing (cargo build --release)" >&2; exit 1; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 "$HERE/serve_data.py" "$PAIRS/qqp-10k.tsv" "$WORK"
if [ ! -f "$WORK/qqp/manifest.json" ]; then
  "$TWINDEX" index build --model "$MODEL" --text "$WORK/corpus.txt" --out "$WORK/qqp"
  "$TWINDEX" calibrate --index "$WORK/qqp" --pairs "$PAIRS/qqp-10k.dev.tsv"
fi

# Request files: METHOD<TAB>PATH<TAB>BODY.
python3 - "$WORK" <<'PY'
import json, sys, urllib.parse
w = sys.argv[1]
qs = open(f"{w}/queries.txt", encoding="utf-8").read().splitlines()
def write(name, lines):
    open(f"{w}/{name}", "w", encoding="utf-8").write("\n".join(lines) + "\n")
write("req_twindex.txt", [f"POST\t/v1/indexes/qqp/query\t{json.dumps({'text': q, 'k': 10})}" for q in qs])
write("req_fastapi.txt", [f"POST\t/query\t{json.dumps({'text': q, 'k': 10})}" for q in qs])
write("req_txtai.txt", [f"GET\t/search?{urllib.parse.urlencode({'query': q, 'limit': 10})}\t" for q in qs])
write("add_twindex.txt", [f"POST\t/v1/indexes/qqp/items\t{json.dumps({'text': f'{q} (added {i})', 'label': 'wrk'})}" for i, q in enumerate(qs * 10)])
PY

# CPU seconds (user + system) of a process and its children so far.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14+$15+$16+$17)/t}' "/proc/$1/stat"; }

wait_http() { # URL PID
  for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "compare_serve: server $2 died" >&2; return 1; }
    sleep 0.5
  done
  echo "compare_serve: $1 never answered" >&2; return 1
}

# run_wrk NAME PID CONNS DUR REQFILE [ADDFILE SHARE]: one wrk run; appends to $WORK/runs.jsonl.
run_wrk() {
  local name=$1 pid=$2 c=$3 dur=$4 req=$5 adds=${6:-} share=${7:-0}
  local threads=2; [ "$c" -lt 2 ] && threads=1
  local out="$WORK/wrk_${name}_c${c}.json" before after
  before=$(cpu_s "$pid")
  WRK_REQUESTS="$req" WRK_ADDS="$adds" WRK_ADD_SHARE="$share" WRK_OUT="$out" \
    timeout 600 wrk -t"$threads" -c"$c" -d"$dur" --timeout 10s -s "$HERE/serve_wrk.lua" "http://127.0.0.1:$PORT" >/dev/null
  after=$(cpu_s "$pid" 2>/dev/null || echo "$before")
  python3 - "$out" "$name" "$c" "$before" "$after" >> "$WORK/runs.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cpu = float(sys.argv[5]) - float(sys.argv[4])
r.pop("acked_ids", None)
r.update(server=sys.argv[2], connections=int(sys.argv[3]), server_cpu_s=round(cpu, 2),
         queries_per_cpu_s=round(r["requests"] / cpu, 1) if cpu > 0 else None)
print(json.dumps(r))
PY
  tail -1 "$WORK/runs.jsonl" >&2
}

: > "$WORK/runs.jsonl"
: > "$WORK/checks.jsonl"

start_twindex() { # INDEX_DIR [FLAGS...]
  local dir=$1; shift
  "$TWINDEX" serve --index "qqp=$dir" --addr "127.0.0.1:$PORT_TW" "$@" 2>>"$WORK/twindex.log" &
  TW=$!; PIDS+=("$TW"); PORT=$PORT_TW
  wait_http "http://127.0.0.1:$PORT_TW/readyz" "$TW"
}
stop_twindex() { kill -TERM "$TW"; wait "$TW" || true; }

# --- twindex: queries at 1, 8, 32 connections ---
start_twindex "$WORK/qqp"
WRK_REQUESTS="$WORK/req_twindex.txt" WRK_OUT=/dev/null wrk -t1 -c4 -d3s -s "$HERE/serve_wrk.lua" "http://127.0.0.1:$PORT" >/dev/null # warm-up
for c in 1 8 32; do run_wrk twindex "$TW" "$c" "$DUR" "$WORK/req_twindex.txt"; done
# overload: 256 connections, refused fast rather than queued for seconds
run_wrk twindex_overload "$TW" 256 15s "$WORK/req_twindex.txt"
# 200 malformed requests of 20+ kinds
python3 "$HERE/serve_check.py" malformed "127.0.0.1:$PORT_TW" qqp 200 | sed 's/^/{"check": "malformed", "result": /; s/$/}/' >> "$WORK/checks.jsonl"
curl -s "http://127.0.0.1:$PORT_TW/metrics" > "$WORK/metrics_twindex.txt"
stop_twindex
# the same overload against a small queue (32 waiting texts): the excess is refused at once
# with 503 + Retry-After instead of waiting
start_twindex "$WORK/qqp" --queue-capacity 32
run_wrk twindex_overload_queue32 "$TW" 256 15s "$WORK/req_twindex.txt"
stop_twindex

# --- mixed 95% query / 5% add at 32 connections, on a copy ---
fresh_copy "$WORK/qqp-mixed"
start_twindex "$WORK/qqp-mixed"
run_wrk twindex_mixed "$TW" 32 "$DUR" "$WORK/req_twindex.txt" "$WORK/add_twindex.txt" 0.05
cp "$WORK/wrk_twindex_mixed_c32.json" "$WORK/acked_mixed.json"
stop_twindex
start_twindex "$WORK/qqp-mixed"
python3 "$HERE/serve_check.py" acked "127.0.0.1:$PORT_TW" qqp "$WORK/acked_mixed.json" | sed 's/^/{"check": "mixed_adds_after_restart", "result": /; s/$/}/' >> "$WORK/checks.jsonl"
stop_twindex

# --- SIGKILL mid-run: every acknowledged add present after a restart ---
fresh_copy "$WORK/qqp-kill"
start_twindex "$WORK/qqp-kill"
WRK_REQUESTS="$WORK/req_twindex.txt" WRK_ADDS="$WORK/add_twindex.txt" WRK_ADD_SHARE=0.2 WRK_OUT="$WORK/acked_kill.json" \
  timeout 120 wrk -t2 -c32 -d20s --timeout 5s -s "$HERE/serve_wrk.lua" "http://127.0.0.1:$PORT" >/dev/null &
WRKPID=$!
sleep 8; kill -9 "$TW"; wait "$TW" 2>/dev/null || true
wait "$WRKPID" || true
start_twindex "$WORK/qqp-kill"
python3 "$HERE/serve_check.py" acked "127.0.0.1:$PORT_TW" qqp "$WORK/acked_kill.json" | sed 's/^/{"check": "sigkill_adds_after_restart", "result": /; s/$/}/' >> "$WORK/checks.jsonl"
stop_twindex

# --- peers (a peer that fails is reported; the figures measured so far are still written) ---
fastapi_peer() {
  ( cd "$HERE" && MODEL="$MODEL" CORPUS="$WORK/corpus.txt" "$VENV/bin/uvicorn" serve_st_fastapi:app --host 127.0.0.1 --port "$PORT_ST" --log-level warning ) &
  ST=$!; PIDS+=("$ST"); PORT=$PORT_ST
  wait_http "http://127.0.0.1:$PORT_ST/docs" "$ST"
  STPID=$(pgrep -P "$ST" -f uvicorn || echo "$ST")
  WRK_REQUESTS="$WORK/req_fastapi.txt" WRK_OUT=/dev/null wrk -t1 -c4 -d3s -s "$HERE/serve_wrk.lua" "http://127.0.0.1:$PORT" >/dev/null
  for c in 1 8 32; do run_wrk fastapi_st_hnswlib "$STPID" "$c" "$DUR" "$WORK/req_fastapi.txt"; done
  kill -TERM "$ST" 2>/dev/null; wait "$ST" 2>/dev/null || true
}
txtai_peer() {
  if [ ! -f "$WORK/txtai/config.yml" ]; then
    mkdir -p "$WORK/txtai"; "$VENV/bin/python" "$HERE/serve_txtai_build.py" "$MODEL" "$WORK/corpus.txt" "$WORK/txtai"
  fi
  CONFIG="$WORK/txtai/config.yml" "$VENV/bin/uvicorn" "txtai.api:app" --host 127.0.0.1 --port "$PORT_TX" --log-level warning &
  TX=$!; PIDS+=("$TX"); PORT=$PORT_TX
  wait_http "http://127.0.0.1:$PORT_TX/count" "$TX"
  WRK_REQUESTS="$WORK/req_txtai.txt" WRK_OUT=/dev/null wrk -t1 -c4 -d3s -s "$HERE/serve_wrk.lua" "http://127.0.0.1:$PORT" >/dev/null
  for c in 1 8 32; do run_wrk txtai_api "$TX" "$c" "$DUR" "$WORK/req_txtai.txt"; done
  kill -TERM "$TX" 2>/dev/null; wait "$TX" 2>/dev/null || true
}
if [ "$PEERS" = 1 ]; then
  if [ ! -x "$VENV/bin/uvicorn" ] || ! "$VENV/bin/python" -c "import txtai, sentence_transformers, hnswlib" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "txtai[api]" sentence-transformers hnswlib fastapi uvicorn
  fi
  fastapi_peer || echo "compare_serve: the FastAPI peer failed" >&2
  txtai_peer || echo "compare_serve: the txtai peer failed" >&2
fi

python3 - "$WORK" "$OUT" "$DUR" <<'PY'
import json, os, sys
w, out, dur = sys.argv[1:4]
runs = [json.loads(l) for l in open(f"{w}/runs.jsonl")]
checks = [json.loads(l) for l in open(f"{w}/checks.jsonl")]
by = {(r["server"], r["connections"]): r for r in runs}
ratios = {}
peers = [p for p in ("txtai_api", "fastapi_st_hnswlib") if (p, 32) in by]
tw = lambda c: by.get(("twindex", c))
if peers and tw(32):
    best = max(peers, key=lambda p: by[(p, 32)]["rps"])
    b = by[(best, 32)]
    ratios = {
        "better_peer_at_32": best,
        "rps_32_ratio": round(tw(32)["rps"] / b["rps"], 2),
        "p99_32_ratio": round(tw(32)["p99_ms"] / b["p99_ms"], 4),
        "queries_per_cpu_s_ratio": round(tw(32)["queries_per_cpu_s"] / max(by[(p, 32)]["queries_per_cpu_s"] for p in peers), 2),
    }
doc = {"stamp": os.path.basename(out), "duration": dur, "loadavg": open("/proc/loadavg").read().split()[:3],
       "nproc": os.cpu_count(), "runs": runs, "checks": checks, "ratios": ratios}
json.dump(doc, open(out, "w"), indent=1)
print(f"{'server':<22}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'q/CPU-s':>9}  statuses")
for r in runs:
    print(f"{r['server']:<22}{r['connections']:>6}{r['rps']:>10.1f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.1f}{(r['queries_per_cpu_s'] or 0):>9.1f}  {r['statuses']}")
for c in checks:
    print(c["check"], json.dumps(c["result"])[:300])
print("ratios", ratios)
print("wrote", out)
PY
