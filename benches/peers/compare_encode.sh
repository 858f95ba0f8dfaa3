#!/usr/bin/env bash
# Side-by-side text-encoding speed: sentence-transformers (torch CPU, float32;
# benches/peers/st_encode.py) and twindex (examples/encode_speed.rs) encode the same questions
# (the first N of qqp-10k.test.tsv, q1 then q2 of each row) with all-MiniLM-L6-v2, batch 32,
# T threads, in one run on the same machine. Reports process CPU-seconds per 1,000 questions
# of both sides and the ratio ST / twindex (> 1: twindex uses less CPU), for T = 1 and 2.
# Writes benches/peers/results/compare_encode_<UTC stamp>.json.
#
#   bash benches/peers/compare_encode.sh
#
# Env: N (questions, default 2000), BATCH (32), THREADS ("1 2"), ROUNDS (3: each round runs
#      every side once as a fresh process, in alternating order; the median round is
#      reported), TW_BACKENDS ("default f32": twindex backends; default = what TextEncoder
#      picks on this CPU), ST_PY (python with sentence-transformers; default
#      benches/peers/.venv-st from st_setup.sh, else /work/scratch/stvenv),
#      NICE (default "nice -n 5"; "" for none), ST_OMP_WAIT_POLICY (unset: torch's default,
#      OpenMP threads spin while waiting, which on a busy machine burns CPU-seconds at T > 1;
#      PASSIVE: they sleep, the peer's lowest CPU figure).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
N="${N:-2000}"; BATCH="${BATCH:-32}"; THREADS="${THREADS:-1 2}"; ROUNDS="${ROUNDS:-3}"
TW_BACKENDS="${TW_BACKENDS:-default f32}"
NICE="${NICE-nice -n 5}"
if [ -z "${ST_PY:-}" ]; then
  if [ -x "$HERE/.venv-st/bin/python" ]; then ST_PY="$HERE/.venv-st/bin/python"
  else ST_PY="/work/scratch/stvenv/bin/python"; fi
fi
[ -x "$ST_PY" ] || { echo "compare_encode: no python at $ST_PY; run: bash benches/peers/st_setup.sh" >&2; exit 2; }
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUTDIR="$HERE/results"; mkdir -p "$OUTDIR"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
COMBINED="$OUTDIR/compare_encode_$STAMP.json"

echo "== building examples/encode_speed (release)" >&2
cargo build --release --quiet --example encode_speed
TW="$ROOT/target/release/examples/encode_speed"

loadavg() { cut -d' ' -f1 /proc/loadavg; }
run_st() { # T ROUND
  local out="$TMP/st_t$1_r$2.json" l0; l0="$(loadavg)"
  local wait=(); [ -n "${ST_OMP_WAIT_POLICY:-}" ] && wait=(OMP_WAIT_POLICY="$ST_OMP_WAIT_POLICY")
  env "${wait[@]}" RAYON_NUM_THREADS="$1" OMP_NUM_THREADS="$1" MKL_NUM_THREADS="$1" \
    HF_HUB_OFFLINE=1 $NICE "$ST_PY" "$HERE/st_encode.py" --threads "$1" --n "$N" --batch "$BATCH" \
    --json-out "$out" >&2
  "$ST_PY" - "$out" "$l0" "$(loadavg)" <<'PY'
import json, sys
p, a, b = sys.argv[1:4]
d = json.load(open(p)); d["load1_before"], d["load1_after"] = float(a), float(b)
json.dump(d, open(p, "w"))
PY
}
run_tw() { # T ROUND BACKEND
  local out="$TMP/tw_$3_t$1_r$2.json" l0 args=(); l0="$(loadavg)"
  [ "$3" != default ] && args=(--backend "$3")
  RAYON_NUM_THREADS="$1" $NICE "$TW" --threads "$1" --n "$N" --batch "$BATCH" "${args[@]}" \
    --json > "$out"
  "$ST_PY" - "$out" "$l0" "$(loadavg)" <<'PY'
import json, sys
p, a, b = sys.argv[1:4]
d = json.load(open(p)); d["load1_before"], d["load1_after"] = float(a), float(b)
json.dump(d, open(p, "w"))
print(f"twindex {d['backend']} threads {d['threads']}: {d['cpu_s_per_1k']:.2f} CPU-s / 1k "
      f"questions, {d['wall_s_per_1k']:.2f} wall-s / 1k", file=sys.stderr)
PY
}

for t in $THREADS; do
  for r in $(seq 1 "$ROUNDS"); do
    echo "== threads $t round $r" >&2
    if [ $((r % 2)) = 1 ]; then
      run_st "$t" "$r"; for b in $TW_BACKENDS; do run_tw "$t" "$r" "$b"; done
    else
      for b in $TW_BACKENDS; do run_tw "$t" "$r" "$b"; done; run_st "$t" "$r"
    fi
  done
done

"$ST_PY" - "$TMP" "$COMBINED" "$N" "$BATCH" "$THREADS" "$TW_BACKENDS" "$ROUNDS" <<'PY'
import glob, json, os, platform, statistics, subprocess, sys
tmp, out_p, n, batch, threads, backends, rounds = sys.argv[1:8]
def load(pat):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(tmp, pat)))]
def med(rows, key):
    return statistics.median(r[key] for r in rows)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = None
res = {"benchmark": "text encoding, all-MiniLM-L6-v2, first N questions of qqp-10k.test.tsv",
       "n": int(n), "batch": int(batch), "rounds": int(rounds), "cpu": cpu,
       "nproc": os.cpu_count(), "twindex_commit": commit,
       "st_omp_wait_policy": os.environ.get("ST_OMP_WAIT_POLICY") or None, "by_threads": {}}
lines = []
for t in threads.split():
    st = load(f"st_t{t}_r*.json")
    entry = {"sentence_transformers": {"cpu_s_per_1k_median": med(st, "cpu_s_per_1k"),
                                       "wall_s_per_1k_median": med(st, "wall_s_per_1k"),
                                       "runs": st}, "twindex": {}}
    for b in backends.split():
        tw = load(f"tw_{b}_t{t}_r*.json")
        c = med(tw, "cpu_s_per_1k")
        entry["twindex"][b] = {"backend": tw[0]["backend"], "cpu_s_per_1k_median": c,
                               "wall_s_per_1k_median": med(tw, "wall_s_per_1k"), "runs": tw,
                               "st_over_twindex_cpu": round(entry["sentence_transformers"]["cpu_s_per_1k_median"] / c, 3)}
        lines.append(f"threads {t}: sentence-transformers {entry['sentence_transformers']['cpu_s_per_1k_median']:.2f} "
                     f"CPU-s/1k, twindex {tw[0]['backend']} {c:.2f} CPU-s/1k -> ratio "
                     f"{entry['twindex'][b]['st_over_twindex_cpu']:.2f}x (load1 during: "
                     f"{min(r['load1_before'] for r in st + tw):.2f}-{max(r['load1_after'] for r in st + tw):.2f})")
    res["by_threads"][t] = entry
json.dump(res, open(out_p, "w"), indent=2)
print("\n".join(lines))
print(f"results: {out_p}")
PY
