#!/usr/bin/env python3
"""Zero-shot pair classification with sentence-transformers, the peer of
`twindex eval --pairs TSV --json`: cosine similarity of each pair, then ROC-AUC and average
precision (scikit-learn), best F1 and best accuracy (sentence-transformers' evaluator logic).

    HF_HUB_OFFLINE=1 python benches/peers/st_pairs_eval.py \
        --model ../shared/models/all-MiniLM-L6-v2 --pairs ../shared/corpora/pairs/qqp-10k.test.tsv
"""
import argparse, csv, json, resource, sys, time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    ap.add_argument("--pairs", default="../shared/corpora/pairs/qqp-10k.test.tsv")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = list(csv.DictReader(open(args.pairs, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    q1 = [r.get("q1") or r.get("question1") for r in rows]
    q2 = [r.get("q2") or r.get("question2") for r in rows]
    y = np.array([int(r["is_duplicate"]) for r in rows])
    model = SentenceTransformer(args.model, device="cpu")
    texts = list(dict.fromkeys(q1 + q2))
    c0, t0 = time.process_time(), time.perf_counter()
    emb = model.encode(texts, batch_size=args.batch, normalize_embeddings=True, convert_to_numpy=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    pos = {t: i for i, t in enumerate(texts)}
    a = emb[[pos[t] for t in q1]]
    b = emb[[pos[t] for t in q2]]
    s = (a * b).sum(axis=1)
    order = np.argsort(-s)
    best_f1 = 0.0
    tp = np.cumsum(y[order])
    for k in range(1, len(s) + 1):
        p, r = tp[k - 1] / k, tp[k - 1] / max(y.sum(), 1)
        if p + r > 0:
            best_f1 = max(best_f1, 2 * p * r / (p + r))
    out = {
        "framework": "sentence-transformers",
        "model": args.model,
        "pairs": args.pairs,
        "n_pairs": int(len(y)),
        "n_positive": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "best_f1": float(best_f1),
        "encode_seconds": wall,
        "encode_cpu_seconds": cpu,
        "cpu_seconds_per_1000_texts": cpu * 1000.0 / len(texts),
        "threads": torch.get_num_threads(),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
