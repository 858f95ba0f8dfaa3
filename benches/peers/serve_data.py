"""Data for compare_serve.sh: the distinct questions of qqp-10k.tsv (the corpus, one a line) and
2,000 altered questions to query with (a word dropped, two words swapped, case and punctuation
changed: near-duplicates of indexed questions, never verbatim copies), seed 7. Stdlib only.

    python3 serve_data.py QQP_TSV OUT_DIR
writes OUT_DIR/corpus.txt and OUT_DIR/queries.txt.
"""
import random
import sys
from pathlib import Path

N_QUERIES = 2000
SEED = 7


def alter(q, rng):
    words = q.split()
    kind = rng.randrange(4)
    if kind == 0 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif kind == 1 and len(words) > 2:
        j = rng.randrange(len(words) - 1)
        words[j], words[j + 1] = words[j + 1], words[j]
    elif kind == 2:
        words = [w.lower() for w in words]
    else:
        words = words + ["please"] if rng.random() < 0.5 else ["So,"] + words
    out = " ".join(words).rstrip("?") + ("" if rng.random() < 0.5 else "?")
    return out if out != q else out + " ?"


def main():
    tsv, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    seen, corpus = set(), []
    with tsv.open(encoding="utf-8") as f:
        next(f)
        for line in f:
            cols = line.rstrip("\n").split("\t")
            for q in cols[:2]:
                q = q.strip()
                if q and q not in seen:
                    seen.add(q)
                    corpus.append(q)
    rng = random.Random(SEED)
    queries = [alter(q, rng) for q in rng.sample(corpus, N_QUERIES)]
    (out / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    (out / "queries.txt").write_text("\n".join(queries) + "\n", encoding="utf-8")
    print(f"serve_data: {len(corpus)} distinct questions, {len(queries)} altered queries", file=sys.stderr)


if __name__ == "__main__":
    main()
