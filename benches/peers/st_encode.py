#!/usr/bin/env python3
"""Peer half of the text-encoding speed comparison: sentence-transformers on CPU.

Encodes the first N questions of a pair TSV (q1 then q2 of each row, header skipped, the same
order as twindex's `text::encode_speed` test) with all-MiniLM-L6-v2 from a local folder and
prints CPU-seconds and wall-seconds per 1,000 questions (process CPU time, all threads).

    HF_HUB_OFFLINE=1 python st_encode.py --threads 1
    HF_HUB_OFFLINE=1 python st_encode.py --threads 2 --json-out results/st_encode.json

Needs `sentence-transformers` (and torch) in the interpreter's environment.
"""
import argparse
import json
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared"))


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--tsv", default=os.path.join(SHARED, "corpora", "pairs", "qqp-10k.test.tsv"))
    ap.add_argument("--n", type=int, default=2000, help="questions to encode")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    questions = []
    with open(args.tsv, encoding="utf-8") as f:
        next(f)  # header: q1 q2 is_duplicate qid1 qid2 id
        for line in f:
            questions.extend(line.rstrip("\n").split("\t")[:2])
            if len(questions) >= args.n:
                break
    questions = questions[: args.n]
    if len(questions) < args.n:
        sys.exit(f"{args.tsv}: only {len(questions)} questions, wanted {args.n}")

    model = SentenceTransformer(args.model, device="cpu")
    model.encode(questions[:64], batch_size=args.batch)  # warm-up, as on the twindex side
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    emb = model.encode(questions, batch_size=args.batch, normalize_embeddings=True)
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    assert emb.shape == (args.n, dim_of())

    out = {
        "peer": "sentence-transformers",
        "version": __import__("sentence_transformers").__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "n": args.n,
        "cpu_s_per_1k": cpu * 1000.0 / args.n,
        "wall_s_per_1k": wall * 1000.0 / args.n,
    }
    print(
        f"sentence-transformers threads {args.threads}: {out['cpu_s_per_1k']:.2f} CPU-s / 1k "
        f"questions, {out['wall_s_per_1k']:.2f} wall-s / 1k"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
