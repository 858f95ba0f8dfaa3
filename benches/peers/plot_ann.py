#!/usr/bin/env python3
"""Recall@10 against queries per CPU-second, every engine of a compare_ann.sh run, one SVG per
data set (hand-written SVG: no plotting package needed).

    python3 benches/peers/plot_ann.py benches/peers/results/compare_ann_<stamp>.json [OUTDIR]

Writes OUTDIR/compare_ann_<stamp>_<dataset>.svg (OUTDIR defaults to the JSON's folder).
Each curve is one engine's sweep (points titled with their setting; an engine swept over a grid of
two knobs, ScaNN and FAISS IVF-PQ, is drawn as the grid's Pareto frontier); dashed lines are the
run's recall targets. Only the one-query-per-call figures are drawn.
"""
import json
import math
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#e7ba52", "#31a354", "#de9ed6",
          "#000000"]
W, H, L, T, PW, PH = 860, 480, 80, 40, 470, 380
Y_FLOOR = 0.90  # points below this recall are left out of the picture (they stay in the JSON)


PEERS = (("hnswlib", "hnswlib"), ("faiss", "FAISS HNSWFlat"), ("faiss_sq8", "FAISS HNSWSQ8"),
         ("usearch", "usearch"), ("voyager", "voyager"), ("scann", "ScaNN"), ("ngt", "NGT ONNG"),
         ("faiss_ivfpqfs", "FAISS IVFPQfs+refine"),
         # a supplementary run's wider grids, where a run adds them (compare_ann_20261207T190243Z)
         ("scann_wide", "ScaNN wider grid"), ("faiss_ivfpqfs_wide", "FAISS IVFPQfs wider grid"))


def pareto(pts):
    """The points no other point beats in both recall and speed, by recall."""
    out = []
    for p in sorted(pts, key=lambda p: (-p[1], -p[2])):
        if not out or p[2] > out[-1][2]:
            out.append(p)
    return sorted(out, key=lambda p: p[1])


def curves(ds):
    """(name, points in drawing order); a point is (label, recall, queries per CPU-second).
    A sweep over a grid of two knobs (ScaNN, IVF-PQ) is drawn as its Pareto frontier."""
    out = []
    for lib, name in PEERS:
        blk = ds["peers"].get(lib) or {}
        sweep = blk.get("sweep") or []
        if not sweep:
            continue
        pts = [(p.get("setting") or f"ef {p['ef']}", p["recall"], p["qps_per_cpu_second"])
               for p in sorted(sweep, key=lambda p: p.get("point", p.get("ef", 0)))]
        if blk.get("sweep_kind") == "grid":
            pts, name = pareto(pts), name + " (frontier)"
        out.append((name, pts))
    for q, runs in ds["twindex"].items():
        for run, b in sorted(runs.get("bench", {}).items()):
            label = f"twindex {q}" + (f" (re-rank {b.get('rerank')})" if q != "none" else "")
            out.append((label, [(f"ef {p['ef']}", p["recall"], p["qps_per_cpu_second"])
                                for p in sorted(b["sweep"], key=lambda p: p["ef"])]))
    return out


def svg(title, targets, cs):
    cs = [(n, [p for p in pts if p[1] >= Y_FLOOR]) for n, pts in cs]
    cs = [(n, pts) for n, pts in cs if pts]
    xs = [x for _, pts in cs for _, _, x in pts]
    ys = [y for _, pts in cs for _, y, _ in pts]
    x0, x1 = 0.0, max(xs) * 1.05
    y0 = math.floor(min(min(ys), min(targets)) * 50) / 50
    y1 = min(1.0, math.ceil(max(ys) * 100) / 100 + 0.005)
    sx = lambda x: L + (x - x0) / (x1 - x0) * PW
    sy = lambda y: T + PH - (y - y0) / (y1 - y0) * PH
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{L}" y="22" font-size="14">{title}</text>',
         f'<rect x="{L}" y="{T}" width="{PW}" height="{PH}" fill="none" stroke="#444"/>']
    step = 10 ** math.floor(math.log10(x1 / 4))
    for m in (1, 2, 5):
        if x1 / (step * m) <= 8:
            step *= m
            break
    v = 0.0
    while v <= x1:
        o.append(f'<line x1="{sx(v):.1f}" y1="{T + PH}" x2="{sx(v):.1f}" y2="{T + PH + 5}" stroke="#444"/>'
                 f'<text x="{sx(v):.1f}" y="{T + PH + 18}" text-anchor="middle">{v:,.0f}</text>')
        v += step
    ystep = 0.01 if y1 - y0 <= 0.1 else 0.02
    v = y0
    while v <= y1 + 1e-9:
        o.append(f'<line x1="{L - 5}" y1="{sy(v):.1f}" x2="{L}" y2="{sy(v):.1f}" stroke="#444"/>'
                 f'<text x="{L - 8}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        v += ystep
    o.append(f'<text x="{L + PW / 2}" y="{H - 20}" text-anchor="middle">queries per CPU-second (one thread)</text>')
    o.append(f'<text x="18" y="{T + PH / 2}" transform="rotate(-90 18 {T + PH / 2})" text-anchor="middle">recall@10</text>')
    for target in targets:
        o.append(f'<line x1="{L}" y1="{sy(target):.1f}" x2="{L + PW}" y2="{sy(target):.1f}" stroke="#888" stroke-dasharray="5,4"/>')
    for i, (name, pts) in enumerate(cs):
        c = COLORS[i % len(COLORS)]
        o.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                 % (c, " ".join(f"{sx(x):.1f},{sy(y):.1f}" for _, y, x in pts)))
        for lab, y, x in pts:
            o.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"><title>{name}: {lab}, recall {y:.4f}, {x:,.0f} q/CPU-s</title></circle>')
        ly = T + 14 + i * 18
        o.append(f'<line x1="{L + PW + 15}" y1="{ly - 4}" x2="{L + PW + 35}" y2="{ly - 4}" stroke="{c}" stroke-width="3"/>'
                 f'<text x="{L + PW + 40}" y="{ly}">{name}</text>')
    o.append("</svg>")
    return "\n".join(o)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    r = json.load(open(path))
    outdir = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(path) or "."
    stem = os.path.splitext(os.path.basename(path))[0]
    for name, ds in r["datasets"].items():
        p = ds["peers"]
        title = f"{p.get('benchmark', name)}: {p.get('base')} base, {p.get('queries')} queries, k {r['k']}, M {r['m']}, efC {r['ef_construction']}"
        out = os.path.join(outdir, f"{stem}_{name}.svg")
        with open(out + ".tmp", "w") as f:
            f.write(svg(title, r.get("recall_targets") or [r.get("recall_target", 0.95)], curves(ds)))
        os.replace(out + ".tmp", out)
        print("wrote", out)


if __name__ == "__main__":
    main()
