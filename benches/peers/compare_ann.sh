#!/usr/bin/env bash
# Side-by-side HNSW benchmark, k=10, M=16, efConstruction=200, queries on one thread, on two
# data sets:
#   mnist    MNIST-784 (60k train as base, 10k test as queries, L2; ground truth
#            ../shared/reference/mnist784_gt_k100.ivecs)
#   glosses  MiniLM-L6 embeddings (384-d, cosine) of the first 100,000 WordNet glosses, read
#            from an index built by `twindex index build --text` (benches/peers/glosses_vectors.py,
#            default /work/main/index/glosses-100k, only read); 10,000 held out as queries
#            (seeded), 90,000 base; exact ground truth written by `twindex bench --write-gt`
#            (the flat oracle over the base).
# Peers (benches/peers/ann_mnist784.py): hnswlib 0.8.0, FAISS IndexHNSWFlat and IndexHNSWSQ
# (QT_8bit), each index also reloaded in a fresh process for its resident memory. twindex:
# `index build` with --quantize none and sq8, on 1 and on 2 threads; `bench` over an ef sweep
# (sq8: for each re-rank depth in RERANKS). Writes benches/peers/results/compare_ann_<stamp>.json
# and prints the ratios.
#
#   bash benches/peers/compare_ann.sh [--plot]
#
# --plot: also draw recall@10 against queries per CPU-second for every engine, one SVG per data
# set, into docs/ (benches/peers/plot_ann.py; it also redraws any earlier results file).
#
# Env: DATASETS (default "mnist glosses"), TWINDEX (default target/release/twindex), NICE
#      (default "nice -n 5"; "" for none), RERANKS (default "10 16 24"), GLOSSES_INDEX (the
#      index the gloss vectors are read from), LIMIT_QUERIES (default 0: all).
set -euo pipefail
PLOT=0
for a in "$@"; do
  case "$a" in
    --plot) PLOT=1 ;;
    *) echo "compare_ann: unknown argument $a (usage: compare_ann.sh [--plot])" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
PY="$HERE/.venv/bin/python"
TWINDEX="${TWINDEX:-target/release/twindex}"
NICE="${NICE-nice -n 5}"
DATASETS="${DATASETS:-mnist glosses}"
RERANKS="${RERANKS:-10 16 24}"
LIMIT_QUERIES="${LIMIT_QUERIES:-0}"
GLOSSES_INDEX="${GLOSSES_INDEX:-/work/main/index/glosses-100k}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR"
WORK="$OUTDIR/.ann_$STAMP"; mkdir -p "$WORK"
COMBINED="$OUTDIR/compare_ann_$STAMP.json"
DATA="$HERE/.data"

[ -x "$PY" ] || { echo "compare_ann: no venv; run: bash benches/peers/setup.sh" >&2; exit 2; }
[ -x "$TWINDEX" ] || { echo "compare_ann: $TWINDEX not found (cargo build --release first)" >&2; exit 2; }

# Wall and child CPU seconds of a command, measured from outside, with the load average.
timed() {
  local out="$1"; shift
  $NICE "$PY" - "$out" "$@" <<'PY'
import json, os, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
l0 = os.getloadavg()[0]
r0 = resource.getrusage(resource.RUSAGE_CHILDREN); w0 = time.perf_counter()
rc = subprocess.call(cmd, stdout=sys.stderr)
w = time.perf_counter() - w0; r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
json.dump({"command": " ".join(cmd), "rc": rc, "wall_seconds": round(w, 3),
           "cpu_seconds": round(cpu, 3), "loadavg_1m_start": round(l0, 2),
           "loadavg_1m_end": round(os.getloadavg()[0], 2)}, open(out, "w"))
sys.exit(rc)
PY
}

for ds in $DATASETS; do
  echo "== $ds" >&2
  case "$ds" in
    mnist)
      base=(--vectors corpora/mnist/train-images-idx3-ubyte.gz --metric l2)
      queries=corpora/mnist/t10k-images-idx3-ubyte.gz
      gt=../shared/reference/mnist784_gt_k100.ivecs
      peer=(--gt "$gt")
      efs="10,12,14,16,20,24,32,48" ;;
    glosses)
      if [ ! -s "$DATA/glosses/queries.fvecs" ]; then
        "$PY" "$HERE/glosses_vectors.py" --index "$GLOSSES_INDEX" --out "$DATA/glosses"
      fi
      base=(--vectors "$DATA/glosses/base.fvecs" --metric cosine)
      queries="$DATA/glosses/queries.fvecs"
      gt="$DATA/glosses/gt_k100.ivecs"
      peer=(--base "$DATA/glosses/base.fvecs" --queries "$queries" --gt "$gt" --metric cosine
            --name glosses-minilm-384-cosine)
      efs="10,16,20,24,28,32,48,64" ;;
    *) echo "compare_ann: unknown data set $ds" >&2; exit 2 ;;
  esac
  for q in none sq8; do
    for t in 1 2; do
      dir="$WORK/ann-$ds-$q-t$t"   # inside this run's own folder, removed at the end
      echo "-- twindex build $q, $t thread(s)" >&2
      timed "$WORK/$ds.build.$q.t$t.json" "$TWINDEX" --threads "$t" index build "${base[@]}" \
        --out "$dir" --m 16 --ef-construction 200 --quantize "$q"
      cp "$dir/build.json" "$WORK/$ds.buildrec.$q.t$t.json"
    done
  done
  if [ ! -s "$gt" ]; then
    echo "-- exact ground truth (flat oracle) -> $gt" >&2
    $NICE "$TWINDEX" bench --index "$WORK/ann-$ds-none-t1" --queries "$queries" \
      --write-gt "$gt" --k 10 --ef 10 > /dev/null
  fi
  echo "-- peers" >&2
  lim=(); [ "$LIMIT_QUERIES" != 0 ] && lim=(--limit-queries "$LIMIT_QUERIES")
  # The same ef grid for every engine.
  $NICE "$PY" "$HERE/ann_mnist784.py" "${peer[@]}" "${lim[@]}" --ef "$efs" --rss \
    --json-out "$WORK/$ds.peers.json" > /dev/null
  tlim=(); [ "$LIMIT_QUERIES" != 0 ] && tlim=(--limit "$LIMIT_QUERIES")
  echo "-- twindex bench none" >&2
  $NICE "$TWINDEX" --threads 1 bench --index "$WORK/ann-$ds-none-t1" --queries "$queries" \
    --gt "$gt" --k 10 --ef "$efs" "${tlim[@]}" --json > "$WORK/$ds.bench.none.json"
  for r in $RERANKS; do
    echo "-- twindex bench sq8, rerank $r" >&2
    $NICE "$TWINDEX" --threads 1 bench --index "$WORK/ann-$ds-sq8-t1" --queries "$queries" \
      --gt "$gt" --k 10 --ef "$efs" --rerank "$r" "${tlim[@]}" --json \
      > "$WORK/$ds.bench.sq8.r$r.json"
  done
  uptime > "$WORK/$ds.uptime.txt"
done

"$PY" - "$WORK" "$COMBINED" "$DATASETS" "$RERANKS" <<'PY'
import json, os, sys
work, out_p, datasets, reranks = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
TARGET = 0.95
J = lambda n: json.load(open(os.path.join(work, n)))

def at(sweep):
    ok = sorted((r for r in sweep or [] if r.get("recall", 0) >= TARGET), key=lambda r: r["ef"])
    return ok[0] if ok else None

def div(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None

res = {"recall_target": TARGET, "k": 10, "m": 16, "ef_construction": 200, "datasets": {}}
for ds in datasets:
    peers = J(f"{ds}.peers.json")
    d = {"peers": peers, "twindex": {}, "ratios": {}, "uptime_end": open(os.path.join(work, f"{ds}.uptime.txt")).read().strip()}
    tw = d["twindex"]
    for q in ("none", "sq8"):
        b = {"build": {t: {"measured": J(f"{ds}.build.{q}.t{t}.json"),
                           "record": J(f"{ds}.buildrec.{q}.t{t}.json")} for t in (1, 2)}}
        runs = {"none": J(f"{ds}.bench.none.json")} if q == "none" else \
               {f"rerank{r}": J(f"{ds}.bench.sq8.r{r}.json") for r in reranks}
        best = None
        for name, bj in runs.items():
            p = at(bj["sweep"])
            if p and (best is None or p["qps_per_cpu_second"] > best[1]["qps_per_cpu_second"]):
                best = (name, p, bj)
        b["bench"] = runs
        if best:
            name, p, bj = best
            ro, rb, rs = bj["rss_after_open"], bj["rss_before_open"], bj["rss_after_sweep"]
            b["at_target"] = {"run": name, "ef": p["ef"], "recall": p["recall"],
                              "qps_per_cpu_second": p["qps_per_cpu_second"], "qps": p["qps"],
                              "rss_load_bytes": ro["total"] - rb["total"],
                              "rss_load_anon_bytes": ro["anon"] - rb["anon"],
                              "rss_load_file_bytes": ro["file"] - rb["file"],
                              "rss_after_sweep_bytes": rs["total"] - rb["total"],
                              "rss_after_sweep_file_bytes": rs["file"] - rb["file"]}
        tw[q] = b
    h = peers.get("hnswlib", {})
    hp = at(h.get("sweep"))
    for q in ("none", "sq8"):
        t = tw[q].get("at_target")
        b1, b2 = tw[q]["build"][1], tw[q]["build"][2]
        r = {"qps_per_cpu_second_vs_hnswlib": div(t and t["qps_per_cpu_second"], hp and hp["qps_per_cpu_second"]),
             "rss_load_vs_hnswlib": div(t and t["rss_load_bytes"], h.get("rss_load_bytes")),
             "graph_build_cpu_vs_hnswlib": div(b1["record"]["graph_cpu_seconds"], h.get("build_cpu_seconds")),
             "whole_build_command_cpu_vs_hnswlib": div(b1["measured"]["cpu_seconds"], h.get("build_cpu_seconds")),
             "graph_wall_2_threads_vs_1": div(b2["record"]["graph_seconds"], b1["record"]["graph_seconds"]),
             "whole_build_wall_2_threads_vs_1": div(b2["measured"]["wall_seconds"], b1["measured"]["wall_seconds"])}
        for lib in ("faiss", "faiss_sq8"):
            fp = at((peers.get(lib) or {}).get("sweep"))
            r[f"qps_per_cpu_second_vs_{lib}"] = div(t and t["qps_per_cpu_second"], fp and fp["qps_per_cpu_second"])
        d["ratios"][f"twindex_{q}"] = r
    res["datasets"][ds] = d
    print(f"== {ds} ({d['uptime_end']})")
    for lib in ("hnswlib", "faiss", "faiss_sq8"):
        blk = peers.get(lib) or {}
        p = at(blk.get("sweep"))
        print(f"  {lib:10s} build {blk.get('build_cpu_seconds')} CPU-s; RSS after load "
              f"{(blk.get('rss_load_bytes') or 0) / 1e6:.1f} MB; " +
              (f"recall>={TARGET} at ef {p['ef']}: {p['recall']}, {p['qps_per_cpu_second']} q/CPU-s" if p else "never reaches target"))
    for q in ("none", "sq8"):
        t = tw[q].get("at_target") or {}
        print(f"  twindex {q:4s} build {tw[q]['build'][1]['record']['graph_cpu_seconds']:.1f} graph CPU-s "
              f"(command {tw[q]['build'][1]['measured']['cpu_seconds']}); RSS after load "
              f"{(t.get('rss_load_bytes') or 0) / 1e6:.1f} MB; {t.get('run')} ef {t.get('ef')}: "
              f"{t.get('recall')}, {t.get('qps_per_cpu_second')} q/CPU-s")
        print(f"    ratios: {json.dumps(d['ratios'][f'twindex_{q}'])}")
json.dump(res, open(out_p, "w"), indent=2)
print(f"results: {out_p}")
PY
rm -rf "$WORK"
if [ "$PLOT" = 1 ]; then
  python3 "$HERE/plot_ann.py" "$COMBINED" "$ROOT/docs"
fi
