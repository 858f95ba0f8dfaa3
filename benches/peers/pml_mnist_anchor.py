#!/usr/bin/env python3
"""The anchor row of the MNIST loss table (issue 24, benches/mnist_losses.sh): pytorch-metric-
learning's TripletMarginLoss + MultiSimilarityMiner in torch, on the same networks and the same
short budget as twindex's rows, evaluated with PML's AccuracyCalculator the way `twindex eval`
reports precision@1, R-precision and MAP@R (the 10,000 test digits as queries against the
60,000 training digits; definitions equal to twindex's to 1e-5, tests/it/pml_oracle.rs).

Budget and network, as `twindex train image --arch ARCH --epochs 1 --max-train 20000`:
  lenet  Conv(4,5x5,tanh) AvgPool2 Conv(16,5x5,tanh) AvgPool2 Dense(10,tanh)
  cnn    Conv(32,5x5,relu) MaxPool2 Conv(64,5x5,relu) MaxPool2 Dense(256,relu) Dense(64), L2-norm
  the first 20,000 training digits, pixels / 255, one epoch of P x K batches (10 classes x 12,
  MPerClassSampler, 20,000 samples), Adam lr 1e-3, torch's default initialisation (twindex uses
  Glorot / He uniform), TripletMarginLoss(margin) with PML's default distance (L2 of normalised
  embeddings) and MultiSimilarityMiner(epsilon=0.1). Pair accuracy is not computed here (its
  seed pairs and calibration are twindex's own); training CPU-s is process_time of the loop.

    benches/peers/.venv-st/bin/python benches/peers/pml_mnist_anchor.py --arch cnn --seeds 1 2 3 \
        --json-out benches/peers/results/pml_mnist_anchor_cnn.json

Needs torch, pytorch-metric-learning 2.9.0, faiss-cpu (st_setup.sh's venv plus
`pip install --no-deps pytorch-metric-learning==2.9.0 faiss-cpu`).
"""
import argparse, gzip, json, os, time

import numpy as np


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", default="../shared/corpora/mnist")
    ap.add_argument("--arch", choices=["lenet", "cnn"], default="cnn")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--max-train", type=int, default=20000)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lp-distance", action="store_true",
                    help="loss and miner on Euclidean distances of the embeddings as they are "
                         "(LpDistance, not normalised), as twindex's triplet loss and miner; "
                         "default: PML's defaults (the miner on cosine similarity)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.json_out and os.path.exists(args.json_out):
        ap.error(f"--json-out {args.json_out}: already exists (a new file only)")

    import torch
    import torch.nn as nn
    import pytorch_metric_learning as pml
    from pytorch_metric_learning import losses, miners, samplers
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    torch.set_num_threads(args.threads)
    m = args.mnist
    xtr = torch.tensor(idx(f"{m}/train-images-idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
    ytr = torch.tensor(idx(f"{m}/train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.tensor(idx(f"{m}/t10k-images-idx3-ubyte.gz"), dtype=torch.float32)[:, None] / 255
    yte = torch.tensor(idx(f"{m}/t10k-labels-idx1-ubyte.gz").astype(np.int64))

    class Norm(nn.Module):
        def forward(self, x):
            return nn.functional.normalize(x, dim=1)

    def net():
        if args.arch == "lenet":
            return nn.Sequential(nn.Conv2d(1, 4, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(4, 16, 5),
                                 nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(256, 10), nn.Tanh())
        return nn.Sequential(nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 256), nn.ReLU(),
                             nn.Linear(256, 64), Norm())

    def embed(model, x):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])

    rows = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = net()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if args.lp_distance:
            from pytorch_metric_learning.distances import LpDistance
            dist = LpDistance(normalize_embeddings=False)
            loss_fn = losses.TripletMarginLoss(margin=args.margin, distance=dist)
            miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=dist)
        else:
            loss_fn = losses.TripletMarginLoss(margin=args.margin)
            miner = miners.MultiSimilarityMiner(epsilon=0.1)
        x, y = xtr[:args.max_train], ytr[:args.max_train]
        sampler = samplers.MPerClassSampler(y, m=12, batch_size=120, length_before_new_iter=len(y))
        order = list(iter(sampler))
        c0, t0 = time.process_time(), time.perf_counter()
        model.train()
        steps = 0
        for b in range(0, len(order) - 119, 120):
            i = torch.tensor(order[b:b + 120])
            e = model(x[i])
            loss = loss_fn(e, y[i], miner(e, y[i]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                  k="max_bin_count")
        acc = calc.get_accuracy(embed(model, xte), yte, embed(model, xtr), ytr, ref_includes_query=False)
        row = {"arch": args.arch, "loss": "pml TripletMarginLoss", "miner": "pml MultiSimilarityMiner",
               "distance": "LpDistance(normalize_embeddings=False)" if args.lp_distance else "PML defaults",
               "seed": seed, "margin": args.margin, "steps": steps, "train_cpu_seconds": cpu,
               "train_wall_seconds": wall, "precision_at_1": acc["precision_at_1"],
               "r_precision": acc["r_precision"], "map_at_r": acc["mean_average_precision_at_r"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    res = {"framework": "pytorch-metric-learning", "versions": {"pml": pml.__version__, "torch": torch.__version__},
           "threads": args.threads, "rows": rows}
    if args.json_out:
        with open(args.json_out, "x") as f:  # a new file only: never over an earlier result
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
