#!/usr/bin/env bash
# Side-by-side HNSW benchmark on MNIST-784 (60k train as base, 10k test as queries, L2, k=10):
# the peers (hnswlib 0.8.0, FAISS IndexHNSWFlat; benches/peers/ann_mnist784.py), then twindex
# (`twindex index build` + `twindex bench`), in one run on the same machine. Writes
# benches/peers/results/compare_ann_<stamp>.json and prints the ratios.
#
#   bash benches/peers/compare_ann.sh [extra args for ann_mnist784.py, e.g. --limit-queries 2000]
#
# Env: TWINDEX (default target/release/twindex), NICE (default "nice -n 5"; "" for none),
#      PEER_EFS (default: the peer script's default sweep, a superset of twindex's).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="$HERE/.venv/bin/python"
TWINDEX="${TWINDEX:-target/release/twindex}"
NICE="${NICE-nice -n 5}"
GT="../shared/reference/mnist784_gt_k100.ivecs"
TWINDEX_EFS="10,12,16,20,24,32,48,64"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR"
PEER_JSON="$OUTDIR/.ann_peer_$STAMP.json"
TW_JSON="$OUTDIR/.ann_twindex_$STAMP.json"
TW_BUILD_JSON="$OUTDIR/.ann_twindex_build_$STAMP.json"
COMBINED="$OUTDIR/compare_ann_$STAMP.json"

[ -x "$PY" ] || { echo "compare_ann: no venv; run: bash benches/peers/setup.sh" >&2; exit 2; }

echo "== peers: hnswlib + faiss" >&2
peer_efs=()
[ -n "${PEER_EFS:-}" ] && peer_efs=(--ef "$PEER_EFS")
$NICE "$PY" "$HERE/ann_mnist784.py" --gt "$GT" "${peer_efs[@]}" "$@" \
  --json-out "$PEER_JSON" > /dev/null

tw_ok=1
if [ ! -x "$TWINDEX" ]; then
  echo "compare_ann: $TWINDEX not found (cargo build --release first); peer results only" >&2
  tw_ok=0
else
  echo "== twindex: index build" >&2
  rm -rf index/mnist784   # a fresh build each run (`index build` refuses to overwrite)
  # Wall + child CPU seconds of the build, measured from outside as a cross-check of the
  # build_seconds / build_cpu_seconds twindex reports itself.
  if ! $NICE "$PY" - "$TW_BUILD_JSON" "$TWINDEX" <<'PY'
import json, resource, subprocess, sys, time
out, exe = sys.argv[1], sys.argv[2]
cmd = [exe, "index", "build", "--vectors", "corpora/mnist/train-images-idx3-ubyte.gz",
       "--out", "index/mnist784", "--m", "16", "--ef-construction", "200", "--threads", "1"]
r0 = resource.getrusage(resource.RUSAGE_CHILDREN); w0 = time.perf_counter()
rc = subprocess.call(cmd, stdout=sys.stderr)
w = time.perf_counter() - w0; r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
json.dump({"command": " ".join(cmd), "rc": rc, "wall_seconds": round(w, 3),
           "cpu_seconds": round(cpu, 3)}, open(out, "w"))
sys.exit(rc)
PY
  then
    echo "compare_ann: twindex index build failed" >&2; tw_ok=0
  fi
fi
if [ "$tw_ok" = 1 ]; then
  echo "== twindex: bench" >&2
  # shellcheck disable=SC2086
  if ! $NICE "$TWINDEX" bench --index index/mnist784 \
      --queries corpora/mnist/t10k-images-idx3-ubyte.gz --gt "$GT" --k 10 \
      --ef "$TWINDEX_EFS" --threads 1 --json > "$TW_JSON"; then
    echo "compare_ann: twindex bench failed" >&2; tw_ok=0
  fi
fi

"$PY" - "$PEER_JSON" "$TW_JSON" "$TW_BUILD_JSON" "$COMBINED" "$tw_ok" <<'PY'
import json, os, sys
peer_p, tw_p, twb_p, out_p, tw_ok = sys.argv[1:6]
peer = json.load(open(peer_p))
tw = json.load(open(tw_p)) if tw_ok == "1" and os.path.exists(tw_p) else None
twb = json.load(open(twb_p)) if os.path.exists(twb_p) else None
TARGET = 0.95

def at(sweep):
    ok = sorted((r for r in sweep or [] if r.get("recall", 0) >= TARGET), key=lambda r: r["ef"])
    return ok[0] if ok else None

def div(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None

res = {"benchmark": "mnist-784-euclidean", "recall_target": TARGET, "peers": peer,
       "twindex": {"bench": tw, "build_measured": twb}, "ratios": {}}
lines = []
if tw is None:
    lines.append("twindex: no results (peer results saved only)")
else:
    t = at(tw.get("sweep"))
    tw_build_cpu = tw.get("build_cpu_seconds", twb and twb.get("cpu_seconds"))
    tw_build_wall = tw.get("build_seconds", twb and twb.get("wall_seconds"))
    for lib in ("hnswlib", "faiss"):
        blk = peer.get(lib) or {}
        if "sweep" not in blk:
            continue
        p = at(blk["sweep"])
        r = {
            "twindex_ef": t and t["ef"], f"{lib}_ef": p and p["ef"],
            "qps_per_cpu_second_ratio": div(t and t["qps_per_cpu_second"],
                                            p and p["qps_per_cpu_second"]),
            "qps_ratio": div(t and t["qps"], p and p["qps"]),
            "build_cpu_seconds_ratio": div(tw_build_cpu, blk.get("build_cpu_seconds")),
            "build_seconds_ratio": div(tw_build_wall, blk.get("build_seconds")),
            "index_bytes_ratio": div(tw.get("index_bytes"), blk.get("index_bytes")),
        }
        res["ratios"][f"twindex_vs_{lib}"] = r
        lines.append(
            f"twindex / {lib}: QPS per CPU-s at recall>={TARGET} "
            f"(ef {r['twindex_ef']} vs {r[f'{lib}_ef']}): {r['qps_per_cpu_second_ratio']}  "
            f"| QPS {r['qps_ratio']}  | build CPU-s {r['build_cpu_seconds_ratio']} "
            f"(<1 = twindex builds with less CPU)  | build wall {r['build_seconds_ratio']}  "
            f"| index bytes {r['index_bytes_ratio']}")
json.dump(res, open(out_p, "w"), indent=2)
for lib in ("hnswlib", "faiss"):
    blk = peer.get(lib) or {}
    p = at(blk.get("sweep"))
    if p:
        print(f"{lib}: build {blk['build_seconds']}s wall / {blk['build_cpu_seconds']} CPU-s; "
              f"recall>={TARGET} at ef {p['ef']}: recall {p['recall']}, {p['qps']} QPS, "
              f"{p['qps_per_cpu_second']} QPS/CPU-s")
print("\n".join(lines))
print(f"results: {out_p}")
PY
rm -f "$PEER_JSON" "$TW_JSON" "$TW_BUILD_JSON"
[ "$tw_ok" = 1 ]
