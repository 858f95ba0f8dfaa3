#!/usr/bin/env python3
"""The gloss-embedding data set of compare_ann.sh: MiniLM-L6 vectors (384-d, unit length,
cosine) of WordNet glosses, split into base and held-out queries.

The vectors are read, not recomputed, from an index built by `twindex index build --text`
over ../shared/corpora/text/wordnet-glosses.tsv.gz (default /work/main/index/glosses-100k:
its first 100,000 slots are the first 100,000 glosses of the TSV, in file order; the index is
only read). A seeded permutation holds out --queries rows as queries; the rest are the base,
in their original order. Writes base.fvecs, queries.fvecs and split.json (the row numbers) to
--out. Ground truth is not written here: `twindex bench --write-gt` computes it exactly.
"""
import argparse
import json
import os
import sys

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", default="/work/main/index/glosses-100k")
    p.add_argument("--rows", type=int, default=100_000, help="use the first ROWS slots")
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    m = json.load(open(os.path.join(a.index, "manifest.json")))
    dim, slots = m["dim"], m["slot_count"]
    if m["metric"] != "cosine" or not m["normalize"]:
        sys.exit(f"glosses_vectors: {a.index} is not a normalised cosine index")
    if a.rows > slots or a.queries >= a.rows:
        sys.exit(f"glosses_vectors: --rows {a.rows} / --queries {a.queries} do not fit {slots} slots")
    v = np.fromfile(os.path.join(a.index, m["files"]["vectors"]["name"]), dtype="<f4")
    v = v.reshape(slots, dim)[: a.rows]
    perm = np.random.default_rng(a.seed).permutation(a.rows)
    q_rows = np.sort(perm[: a.queries])
    mask = np.ones(a.rows, bool)
    mask[q_rows] = False
    os.makedirs(a.out, exist_ok=True)

    def fvecs(path, x):
        x = np.ascontiguousarray(x, dtype="<f4")
        rec = np.empty((x.shape[0], dim + 1), dtype="<f4")
        rec[:, 0] = np.array([dim], dtype="<i4").view("<f4")[0]
        rec[:, 1:] = x
        rec.tofile(path)

    fvecs(os.path.join(a.out, "base.fvecs"), v[mask])
    fvecs(os.path.join(a.out, "queries.fvecs"), v[q_rows])
    json.dump({"index": os.path.abspath(a.index), "vectors_sha256": m["files"]["vectors"]["sha256"],
               "rows": a.rows, "dim": dim, "seed": a.seed, "query_rows": q_rows.tolist()},
              open(os.path.join(a.out, "split.json"), "w"))
    print(f"glosses_vectors: {int(mask.sum())} base + {a.queries} queries of dim {dim} -> {a.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
