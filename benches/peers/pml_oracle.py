#!/usr/bin/env python3
"""pytorch-metric-learning (PML) as the oracle of twindex's pair losses, miner, cross-batch
memory, proxy-anchor loss and retrieval / clustering metrics.

Runs PML (torch on the CPU, float64) on fixed, seeded embeddings and labels, and writes the
inputs, the losses, their gradients with respect to the embeddings (and the proxies), the
mined pairs and AccuracyCalculator's metrics to tests/data/pml_oracle.json, which
tests/it/pml_oracle.rs reads.

    python benches/peers/pml_oracle.py            # writes tests/data/pml_oracle.json

Set-up (a venv outside the repository; every package from PyPI):
    python3.10 -m venv /work/venv-pml
    /work/venv-pml/bin/pip install "torch==1.12.1" "numpy<2" "scipy<1.14" "scikit-learn<1.6" tqdm
    /work/venv-pml/bin/pip install --no-deps pytorch-metric-learning==2.9.0
torch 1.12.1's PyPI wheel carries its own CUDA 10.2 libraries and runs on a CPU-only machine
with no further packages; newer PyPI wheels pull in gigabytes of separate CUDA packages and
do not import without them.

k-means for NMI / AMI: PML's default is faiss's k-means (random init). Here, as in twindex,
it is made deterministic: the first centre is item 0, each next one the item farthest from
its nearest centre chosen so far (farthest-point init), then Lloyd's iterations to a fixed
point (scikit-learn's KMeans with that init, n_init=1, tol=0); NMI and AMI are then
scikit-learn's, as PML computes them.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import pytorch_metric_learning
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.cluster import KMeans

SEED = 24
N, D = 12, 5
LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4]  # class 4: a row without positives
XBM_SIZE = 20  # three batches of 12 wrap the ring
CLASSES = 5
# Metrics: 4 classes of queries and references around well-separated centres.
Q_PER_CLASS, R_PER_CLASS, MD = 6, 8, 4

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "pml_oracle.json")


def loss_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return float(loss.item()), x.grad.numpy().tolist()


def farthest_point_init(x, k):
    centres = [0]
    d = np.sum((x - x[0]) ** 2, axis=1)
    while len(centres) < k:
        nxt = int(np.argmax(d))  # first index among ties
        centres.append(nxt)
        d = np.minimum(d, np.sum((x - x[nxt]) ** 2, axis=1))
    return x[centres].copy()


def deterministic_kmeans(x, k):
    xn = x.cpu().numpy().astype(np.float64)
    km = KMeans(n_clusters=k, init=farthest_point_init(xn, k), n_init=1, tol=0.0, max_iter=1000, algorithm="lloyd")
    return km.fit_predict(xn)


def main():
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    print(f"seed {SEED}, PML {pytorch_metric_learning.__version__}, torch {torch.__version__}", file=sys.stderr)
    batches = [rng.normal(size=(N, D)) for _ in range(3)]
    labels = torch.tensor(LABELS)
    e = torch.tensor(batches[0], dtype=torch.float64)
    proxies = torch.tensor(rng.normal(size=(CLASSES, D)), dtype=torch.float64)

    pair_losses = {
        "multi_similarity": losses.MultiSimilarityLoss(),
        "supcon": losses.SupConLoss(),
        "ntxent": losses.NTXentLoss(),
        "circle": losses.CircleLoss(),
        "lifted": losses.GeneralizedLiftedStructureLoss(),
    }
    out = {
        "seed": SEED,
        "pml_version": pytorch_metric_learning.__version__,
        "torch_version": torch.__version__,
        "labels": LABELS,
        "batches": [b.tolist() for b in batches],
        "proxies": proxies.numpy().tolist(),
        "xbm_size": XBM_SIZE,
        "losses": {},
    }
    for name, fn in pair_losses.items():
        out["losses"][name] = dict(zip(("loss", "grad"), loss_and_grad(lambda x: fn(x, labels), e)))
    # The angular loss on normalised input (PML leaves its negatives as given; the paper and
    # twindex normalise them): the gradient flows through the normalisation.
    ang = losses.AngularLoss()
    out["losses"]["angular"] = dict(zip(("loss", "grad"), loss_and_grad(lambda x: ang(F.normalize(x), labels), e)))

    # The multi-similarity miner and the multi-similarity loss on its pairs.
    miner = miners.MultiSimilarityMiner()
    a1, p, a2, n = miner(e, labels)
    out["ms_miner_pairs"] = {"a1": a1.tolist(), "p": p.tolist(), "a2": a2.tolist(), "n": n.tolist()}
    ms = losses.MultiSimilarityLoss()
    out["losses"]["multi_similarity_mined"] = dict(
        zip(("loss", "grad"), loss_and_grad(lambda x: ms(x, labels, miner(x, labels)), e))
    )

    # Proxy anchor: the proxies set to the recorded ones; gradients for both.
    pa = losses.ProxyAnchorLoss(num_classes=CLASSES, embedding_size=D).double()
    with torch.no_grad():
        pa.proxies.copy_(proxies)
    x = e.clone().requires_grad_(True)
    loss = pa(x, labels)
    loss.backward()
    out["losses"]["proxy_anchor"] = {
        "loss": float(loss.item()),
        "grad": x.grad.numpy().tolist(),
        "proxy_grad": pa.proxies.grad.numpy().tolist(),
    }

    # Cross-batch memory around the multi-similarity loss (and around it with the miner):
    # three batches in turn, the loss and gradient of each.
    for key, mnr in (("xbm_multi_similarity", None), ("xbm_multi_similarity_mined", miners.MultiSimilarityMiner())):
        xbm = losses.CrossBatchMemory(losses.MultiSimilarityLoss(), D, memory_size=XBM_SIZE, miner=mnr)
        steps = []
        for b in batches:
            bt = torch.tensor(b, dtype=torch.float64)
            l, g = loss_and_grad(lambda x: xbm(x, labels), bt)
            steps.append({"loss": l, "grad": g})
        out[key] = steps

    # Metrics (AccuracyCalculator): queries against references, exact Euclidean kNN.
    centres = rng.normal(size=(4, MD)) * 1.2
    q = np.concatenate([centres[c] + rng.normal(size=(Q_PER_CLASS, MD)) for c in range(4)])
    r = np.concatenate([centres[c] + rng.normal(size=(R_PER_CLASS, MD)) for c in range(4)])
    ql = np.repeat(np.arange(4), Q_PER_CLASS)
    rl = np.repeat(np.arange(4), R_PER_CLASS)
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r", "mean_reciprocal_rank", "NMI", "AMI"),
        device=torch.device("cpu"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        kmeans_func=deterministic_kmeans,
    )
    acc = calc.get_accuracy(torch.tensor(q), torch.tensor(ql), torch.tensor(r), torch.tensor(rl), False)
    out["metrics"] = {
        "query": q.tolist(),
        "query_labels": ql.tolist(),
        "reference": r.tolist(),
        "reference_labels": rl.tolist(),
        "cluster_labels": deterministic_kmeans(torch.tensor(q, dtype=torch.float32), 4).tolist(),
        "precision_at_1": acc["precision_at_1"],
        "r_precision": acc["r_precision"],
        "map_at_r": acc["mean_average_precision_at_r"],
        "mrr": acc["mean_reciprocal_rank"],
        "nmi": acc["NMI"],
        "ami": acc["AMI"],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {os.path.normpath(OUT)}", file=sys.stderr)
    for k, v in out["losses"].items():
        print(f"{k:24s} {v['loss']:.10f}", file=sys.stderr)
    print({k: out["metrics"][k] for k in ("precision_at_1", "r_precision", "map_at_r", "mrr", "nmi", "ami")}, file=sys.stderr)


if __name__ == "__main__":
    main()
