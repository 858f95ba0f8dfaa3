#!/usr/bin/env bash
# Side-by-side ANN benchmark, k=10, queries on one thread, on two data sets:
#   mnist    MNIST-784 (60k train as base, 10k test as queries, L2; ground truth
#            ../shared/reference/mnist784_gt_k100.ivecs)
#   glosses  MiniLM-L6 embeddings (384-d, cosine) of the first 100,000 WordNet glosses, read
#            from an index built by `twindex index build --text` (benches/peers/glosses_vectors.py,
#            default /work/main/index/glosses-100k, only read); 10,000 held out as queries
#            (seeded), 90,000 base; exact ground truth written by `twindex bench --write-gt`
#            (the flat oracle over the base).
# Peers (benches/peers/ann_mnist784.py, one fresh process per library so that one library's
# crash or state cannot touch another's figures): the HNSW engines at M=16, efConstruction=200
# over the same ef grid -- hnswlib 0.8.0, FAISS IndexHNSWFlat and IndexHNSWSQ (QT_8bit),
# usearch (f32), voyager (Float32) -- and, each with its own documented build recipe and its
# own knobs swept, ScaNN (tree + AH + reorder), NGT ONNG (epsilon) and FAISS IVF-PQ fast-scan
# with exact refinement (nprobe x k_factor). Every index is also saved and reloaded in a fresh
# process for its resident memory. Each sweep point: queries one per call on one thread, and
# all queries in one batched call on one thread (OMP/BLAS threads 1). twindex: `index build`
# with --quantize none and sq8, on 1 and on 2 threads; `bench` over the ef grid (sq8: for each
# re-rank depth in RERANKS); it has no batch call in its CLI, and its bench loop runs in-process
# with no per-call overhead, so its one figure stands in both columns. Writes
# benches/peers/results/compare_ann_<stamp>.json and prints, at recall@10 >= 0.95 and >= 0.99,
# each engine's smallest qualifying setting (the fastest qualifying point where an engine
# sweeps a grid of two knobs; its batched column then is its fastest qualifying batched point)
# and twindex's ratios to the best peer.
#
#   bash benches/peers/compare_ann.sh [--plot]
#
# --plot: also draw recall@10 against queries per CPU-second for every engine, one SVG per data
# set, into docs/ (benches/peers/plot_ann.py; it also redraws any earlier results file).
#
# Env: DATASETS (default "mnist glosses"), TWINDEX (default target/release/twindex), NICE
#      (default "nice -n 5"; "" for none), RERANKS (default "10 16 24"), GLOSSES_INDEX (the
#      index the gloss vectors are read from), LIMIT_QUERIES (default 0: all), PEERS (default
#      "hnswlib faiss faiss_sq8 usearch voyager scann faiss_ivfpqfs ngt").
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
GLOSSES_INDEX="${GLOSSES_INDEX:-index/glosses-100k}"   # docs/engine.md builds it
PEERS="${PEERS:-hnswlib faiss faiss_sq8 usearch voyager scann faiss_ivfpqfs ngt}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR"
WORK="$OUTDIR/.ann_$STAMP"; mkdir "$WORK"   # its own: removed at the end
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
      efs="10,12,14,16,20,24,32,48,64,96" ;;
    glosses)
      if [ ! -s "$DATA/glosses/queries.fvecs" ]; then
        "$PY" "$HERE/glosses_vectors.py" --index "$GLOSSES_INDEX" --out "$DATA/glosses"
      fi
      base=(--vectors "$DATA/glosses/base.fvecs" --metric cosine)
      queries="$DATA/glosses/queries.fvecs"
      gt="$DATA/glosses/gt_k100.ivecs"
      peer=(--base "$DATA/glosses/base.fvecs" --queries "$queries" --gt "$gt" --metric cosine
            --name glosses-minilm-384-cosine)
      efs="10,16,20,24,28,32,48,64,96,128,192" ;;
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
  lim=(); [ "$LIMIT_QUERIES" != 0 ] && lim=(--limit-queries "$LIMIT_QUERIES")
  # The same ef grid for every HNSW engine; one process per library.
  for lib in $PEERS; do
    echo "-- peer $lib" >&2
    rc=0
    $NICE "$PY" "$HERE/ann_mnist784.py" "${peer[@]}" "${lim[@]}" --ef "$efs" --rss \
      --libs "$lib" --json-out "$WORK/$ds.peer.$lib.json" > /dev/null || rc=$?
    if [ "$rc" != 0 ]; then
      echo "compare_ann: peer $lib failed (exit $rc); its block records the error" >&2
      printf '{"%s": {"library": "%s", "error": "process exited %s"}}\n' "$lib" "$lib" "$rc" \
        > "$WORK/$ds.peer.$lib.json"
    fi
  done
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

"$PY" - "$WORK" "$COMBINED" "$DATASETS" "$RERANKS" "$PEERS" <<'PY'
import json, os, sys
work, out_p = sys.argv[1], sys.argv[2]
datasets, reranks, peer_libs = sys.argv[3].split(), sys.argv[4].split(), sys.argv[5].split()
TARGETS = (0.95, 0.99)
J = lambda n: json.load(open(os.path.join(work, n)))
NAMES = {"hnswlib": "hnswlib", "faiss": "FAISS HNSWFlat", "faiss_sq8": "FAISS HNSWSQ8",
         "usearch": "usearch", "voyager": "voyager", "scann": "ScaNN", "ngt": "NGT ONNG",
         "faiss_ivfpqfs": "FAISS IVFPQfs+refine"}

def pick(sweep, target, kind="path"):
    """A path sweep (knobs in order of breadth): its first point with recall >= target. A grid
    of two knobs: its fastest such point (one query per call). None if no point qualifies."""
    ok = [r for r in sweep or [] if r.get("recall", 0) >= target]
    if not ok:
        return None
    if kind == "grid":
        return max(ok, key=lambda r: r["qps_per_cpu_second"] or 0)
    return min(ok, key=lambda r: r.get("point", r.get("ef")))

def pick_batched(sweep, target):
    """A grid's fastest point in the batched mode, among those with batched recall >= target."""
    ok = [r for r in sweep or [] if r.get("batch_qps_per_cpu_second")
          and r.get("batch_recall", r.get("recall", 0)) >= target]
    return max(ok, key=lambda r: r["batch_qps_per_cpu_second"]) if ok else None

def best_recall(sweep):
    return max((r.get("recall", 0) for r in sweep or []), default=None)

def div(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None

def row_of(p, **extra):
    keep = ("point", "setting", "ef", "recall", "qps", "qps_per_cpu_second", "p50_us", "p99_us",
            "batch_qps", "batch_qps_per_cpu_second", "batch_recall", "batch_cpu_per_wall")
    r = {k: p[k] for k in keep if k in p}
    r.update(extra)
    return r

res = {"recall_targets": list(TARGETS), "recall_target": TARGETS[0], "k": 10, "m": 16,
       "ef_construction": 200, "datasets": {}}
for ds in datasets:
    peers = {}
    for lib in peer_libs:
        pj = J(f"{ds}.peer.{lib}.json")
        for key, val in pj.items():   # the run's description, from the first library's file
            if key not in NAMES and key not in peers:
                peers[key] = val
        peers[lib] = pj.get(lib) or {"library": lib, "error": "no block in its output"}
        if isinstance(pj.get("versions"), dict):
            peers.setdefault("versions", {}).update({k: v for k, v in pj["versions"].items() if v})
        peers.setdefault("loadavg_by_library", {})[lib] = [pj.get("loadavg_1m_start"),
                                                           pj.get("loadavg_1m_end")]
    d = {"peers": peers, "twindex": {}, "ratios": {}, "summary": {}, "ratios_by_target": {},
         "uptime_end": open(os.path.join(work, f"{ds}.uptime.txt")).read().strip()}
    tw = d["twindex"]
    for q in ("none", "sq8"):
        b = {"build": {t: {"measured": J(f"{ds}.build.{q}.t{t}.json"),
                           "record": J(f"{ds}.buildrec.{q}.t{t}.json")} for t in (1, 2)}}
        b["bench"] = {"none": J(f"{ds}.bench.none.json")} if q == "none" else \
                     {f"rerank{r}": J(f"{ds}.bench.sq8.r{r}.json") for r in reranks}
        for target in TARGETS:
            best = None
            for name, bj in b["bench"].items():
                p = pick(bj["sweep"], target)
                if p and (best is None or p["qps_per_cpu_second"] > best[1]["qps_per_cpu_second"]):
                    best = (name, p, bj)
            if best:
                name, p, bj = best
                ro, rb, rs = bj["rss_after_open"], bj["rss_before_open"], bj["rss_after_sweep"]
                at = {"run": name, "ef": p["ef"], "recall": p["recall"],
                      "qps_per_cpu_second": p["qps_per_cpu_second"], "qps": p["qps"],
                      "rss_load_bytes": ro["total"] - rb["total"],
                      "rss_load_anon_bytes": ro["anon"] - rb["anon"],
                      "rss_load_file_bytes": ro["file"] - rb["file"],
                      "rss_after_sweep_bytes": rs["total"] - rb["total"],
                      "rss_after_sweep_file_bytes": rs["file"] - rb["file"]}
                b["at_target" if target == TARGETS[0] else f"at_{target}"] = at
        tw[q] = b
    # Per target: every engine's chosen point, with its memory and build cost.
    for target in TARGETS:
        rows = {}
        for lib in peer_libs:
            blk = peers.get(lib) or {}
            if blk.get("error") or not blk.get("sweep"):
                rows[lib] = {"error": blk.get("error", "no sweep")}
                continue
            p = pick(blk["sweep"], target, blk.get("sweep_kind", "path"))
            extra = {"rss_load_bytes": blk.get("rss_load_bytes"),
                     "build_cpu_seconds": blk.get("build_cpu_seconds")}
            rows[lib] = row_of(p, **extra) if p else {"not_reached": True,
                                                      "best_recall": best_recall(blk["sweep"]), **extra}
            pb = pick_batched(blk["sweep"], target) if blk.get("sweep_kind") == "grid" else None
            if pb is not None and p is not None and pb is not p:
                # A grid's batched column: its own fastest qualifying point.
                rows[lib].update({"batch_setting": pb["setting"], "batch_recall": pb.get("batch_recall"),
                                  "batch_qps_per_cpu_second": pb["batch_qps_per_cpu_second"],
                                  "batch_qps_per_cpu_second_at_setting": p.get("batch_qps_per_cpu_second")})
        for q in ("none", "sq8"):
            t = tw[q].get("at_target" if target == TARGETS[0] else f"at_{target}")
            extra = {"build_cpu_seconds": tw[q]["build"][1]["record"]["graph_cpu_seconds"],
                     "build_command_cpu_seconds": tw[q]["build"][1]["measured"]["cpu_seconds"]}
            if t:
                rows[f"twindex_{q}"] = {**t, "setting": f"ef={t['ef']}" + ("" if q == "none" else f" {t['run']}"),
                                        "batch_qps_per_cpu_second": t["qps_per_cpu_second"],
                                        "batch_note": "no batch API: the in-process bench loop's figure", **extra}
            else:
                runs = tw[q]["bench"].values()
                rows[f"twindex_{q}"] = {"not_reached": True, **extra,
                                        "best_recall": max(best_recall(bj["sweep"]) or 0 for bj in runs)}
        d["summary"][str(target)] = rows
        reached = {l: r for l, r in rows.items() if not l.startswith("twindex") and r.get("qps_per_cpu_second")}
        bp = max(reached.items(), key=lambda kv: kv[1]["qps_per_cpu_second"], default=(None, None))
        bb = max(((l, r) for l, r in reached.items() if r.get("batch_qps_per_cpu_second")),
                 key=lambda kv: kv[1]["batch_qps_per_cpu_second"], default=(None, None))
        rss_all = {l: (peers.get(l) or {}).get("rss_load_bytes") for l in peer_libs}
        rss_all = {l: v for l, v in rss_all.items() if v is not None}
        smallest = min(rss_all.items(), key=lambda kv: kv[1], default=(None, None))
        rt = {"best_peer_one_per_call": bp[0], "best_peer_batched": bb[0],
              "smallest_rss_peer": smallest[0], "smallest_rss_peer_bytes": smallest[1]}
        for q in ("none", "sq8"):
            t = rows[f"twindex_{q}"]
            tq = t.get("qps_per_cpu_second")
            rt[f"twindex_{q}"] = {
                "vs_best_peer_one_per_call": div(tq, bp[1] and bp[1]["qps_per_cpu_second"]),
                "vs_best_peer_batched": div(tq, bb[1] and bb[1]["batch_qps_per_cpu_second"]),
                "rss_vs_smallest_peer": div(t.get("rss_load_bytes"), smallest[1]),
                "rss_le_smallest_peer": (t.get("rss_load_bytes") <= smallest[1])
                if t.get("rss_load_bytes") is not None and smallest[1] is not None else None,
                "vs_each_peer_one_per_call": {l: div(tq, r["qps_per_cpu_second"]) for l, r in reached.items()},
                "vs_each_peer_batched": {l: div(tq, r.get("batch_qps_per_cpu_second")) for l, r in reached.items()}}
        d["ratios_by_target"][str(target)] = rt
    # The earlier runs' ratios (at 0.95, against the first three peers), kept for comparison.
    hp = pick((peers.get("hnswlib") or {}).get("sweep"), TARGETS[0])
    h = peers.get("hnswlib") or {}
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
            fp = pick((peers.get(lib) or {}).get("sweep"), TARGETS[0])
            r[f"qps_per_cpu_second_vs_{lib}"] = div(t and t["qps_per_cpu_second"], fp and fp["qps_per_cpu_second"])
        d["ratios"][f"twindex_{q}"] = r
    res["datasets"][ds] = d
    print(f"== {ds} ({d['uptime_end']})")
    for target in TARGETS:
        print(f"  recall@10 >= {target}:")
        print(f"    {'engine':22s} {'setting':28s} {'recall':>7s} {'q/CPU-s 1/call':>14s} {'q/CPU-s batch':>13s} {'RSS MB':>7s} {'build CPU-s':>11s}")
        for lib, r in d["summary"][str(target)].items():
            name = NAMES.get(lib, lib.replace("_", " "))
            rss = r.get("rss_load_bytes")
            rss = f"{rss / 1e6:7.1f}" if rss is not None else "      -"
            bc = r.get("build_cpu_seconds")
            bc = f"{bc:11.1f}" if bc is not None else "          -"
            if r.get("error"):
                print(f"    {name:22s} ERROR {r['error']}")
            elif r.get("not_reached"):
                print(f"    {name:22s} {'not reached, best ' + str(r.get('best_recall')):28s} {'':7s} {'':14s} {'':13s} {rss} {bc}")
            else:
                bq = r.get("batch_qps_per_cpu_second")
                print(f"    {name:22s} {r['setting']:28s} {r['recall']:7.4f} {r['qps_per_cpu_second']:14,.0f} "
                      f"{(f'{bq:13,.0f}' if bq else '            -')} {rss} {bc}" +
                      (f"  (batched at {r['batch_setting']}: recall {r['batch_recall']})" if r.get("batch_setting") else ""))
        rt = d["ratios_by_target"][str(target)]
        for q in ("none", "sq8"):
            x = rt[f"twindex_{q}"]
            print(f"    twindex {q}: x{x['vs_best_peer_one_per_call']} of the best peer one per call "
                  f"({rt['best_peer_one_per_call']}), x{x['vs_best_peer_batched']} of the best batched "
                  f"({rt['best_peer_batched']}); RSS x{x['rss_vs_smallest_peer']} of the smallest peer's "
                  f"({rt['smallest_rss_peer']})")
json.dump(res, open(out_p, "w"), indent=2)
print(f"results: {out_p}")
PY
rm -rf "$WORK"
if [ "$PLOT" = 1 ]; then
  python3 "$HERE/plot_ann.py" "$COMBINED" "$ROOT/docs"
fi
