"""The FastAPI + sentence-transformers + hnswlib peer of compare_serve.sh: the server a Python
user would write. all-MiniLM-L6-v2 from a local folder, the corpus embedded at start (or loaded
from a cached .npy beside it), an hnswlib index (cosine, M=16, ef_construction=200, ef=64), and
POST /query {"text", "k"} -> {"results": [{"id", "text", "distance", "similarity"}]}.

    MODEL=DIR CORPUS=corpus.txt uvicorn serve_st_fastapi:app --host 127.0.0.1 --port 8092
"""
import os
from pathlib import Path

import hnswlib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

MODEL = os.environ["MODEL"]
CORPUS = Path(os.environ["CORPUS"])
texts = CORPUS.read_text(encoding="utf-8").splitlines()
model = SentenceTransformer(MODEL, device="cpu")
cache = CORPUS.with_suffix(".st.npy")
if cache.exists():
    emb = np.load(cache)
else:
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    np.save(cache, emb)
index = hnswlib.Index(space="cosine", dim=emb.shape[1])
index.init_index(max_elements=len(texts) + 100_000, M=16, ef_construction=200, random_seed=1)
index.add_items(emb, np.arange(len(texts)))
index.set_ef(64)
app = FastAPI()


class Q(BaseModel):
    text: str
    k: int = 10


@app.post("/query")
def query(q: Q):
    v = model.encode([q.text], normalize_embeddings=True, convert_to_numpy=True)
    ids, dist = index.knn_query(v, k=q.k)
    return {
        "results": [
            {"id": int(i), "text": texts[i], "distance": float(d), "similarity": 1.0 - float(d)}
            for i, d in zip(ids[0], dist[0])
        ]
    }
