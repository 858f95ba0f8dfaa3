"""Builds the txtai peer's index for compare_serve.sh: all-MiniLM-L6-v2 from a local folder,
hnswlib backend (as twindex's HNSW), content stored so answers carry the text; saved to OUT, which
the txtai API then loads (config written beside it).

    python serve_txtai_build.py MODEL_DIR corpus.txt OUT_DIR
"""
import sys
from pathlib import Path

from txtai.embeddings import Embeddings

model, corpus, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
texts = corpus.read_text(encoding="utf-8").splitlines()
emb = Embeddings(path=model, backend="hnsw", content=True)
emb.index([(i, t, None) for i, t in enumerate(texts)])
emb.save(str(out / "index"))
# `path` loads the saved index; the `embeddings` section turns on the API's search routes.
(out / "config.yml").write_text(
    f"path: {out / 'index'}\nwritable: false\nembeddings:\n  path: {model}\n  backend: hnsw\n  content: true\n",
    encoding="utf-8",
)
print(f"txtai index of {len(texts)} texts in {out}", file=sys.stderr)
