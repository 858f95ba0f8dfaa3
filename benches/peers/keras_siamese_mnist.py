#!/usr/bin/env python3
"""Peer benchmark: the seed Siamese-MNIST protocol in Keras (tf.keras), for twindex's
training-throughput and accuracy claims.

Protocol (the Keras `mnist_siamese` example with a LeNet-style tower):
  * MNIST from gzipped IDX files, pixels / 255, shape 28x28x1.
  * Tower `lenet`: Conv2D(4, 5x5, tanh) -> AvgPool(2) -> Conv2D(16, 5x5, tanh) -> AvgPool(2)
    -> Flatten -> Dense(10, tanh); the two branches share weights.
  * d = sqrt(max(sum((a - b)^2), eps)); contrastive loss y*d^2 + (1-y)*max(0, m-d)^2 with
    y = 1 for a similar pair, m = 1.  Adam(lr 1e-3), batch 128.
  * Pairs (the seed's builder): per class d, for i in 0..n-1 (n = smallest class size - 1):
    positive (x[d][i], x[d][i+1]) label 1, then negative (x[d][i], x[dn][i]) label 0 with
    dn = (d + randrange(1, 10)) % 10.  Train pairs from the train set, test pairs from the
    test set.
  * Pair accuracy at d < 0.5; precision@1 = share of the 10k test images whose nearest train
    image (Euclidean distance between embeddings) has the same label.

Timing covers model.fit only (not pair building, not evaluation).  CPU seconds are process
CPU time (time.process_time = CLOCK_PROCESS_CPUTIME_ID, all threads) and, as a cross-check,
getrusage(RUSAGE_SELF) user+sys.  The first epoch includes tf.function tracing/compilation;
`pairs_per_second_after_warmup` uses epochs 2..E only.

Prints one JSON object on stdout (progress on stderr); --json-out FILE writes it too.
"""
import argparse
import gzip
import json
import os
import platform
import random
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=None,
                   help="folder with the gzipped IDX files (default: <repo>/corpora/mnist, "
                        "else <repo>/../shared/corpora/mnist)")
    p.add_argument("--arch", default="lenet", choices=["lenet"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra- and inter-op threads; 0 = TensorFlow's default "
                        "(what a user gets), e.g. 1 or 2 to pin")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="pair accuracy counts d < threshold as 'similar'")
    p.add_argument("--no-metric", action="store_true",
                   help="do not compute the in-graph accuracy metric during fit")
    p.add_argument("--json-out", default=None)
    return p.parse_args()


def find_mnist(arg):
    if arg:
        return arg
    for cand in (os.path.join(REPO, "corpora", "mnist"),
                 os.path.join(REPO, "..", "shared", "corpora", "mnist")):
        if os.path.exists(os.path.join(cand, "train-images-idx3-ubyte.gz")):
            return os.path.abspath(cand)
    sys.exit("keras_siamese_mnist: MNIST not found; pass --mnist DIR")


def read_idx(path):
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise ValueError(f"{path}: expected unsigned byte data, got type 0x{dtype_code:02x}")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_mnist(d):
    def f(name):
        p = os.path.join(d, name)
        return read_idx(p if os.path.exists(p) else p[:-3])
    return (f("train-images-idx3-ubyte.gz"), f("train-labels-idx1-ubyte.gz"),
            f("t10k-images-idx3-ubyte.gz"), f("t10k-labels-idx1-ubyte.gz"))


def create_pairs(n_items_by_class, rng):
    """The seed's builder, returning index pairs (a, b) and labels (1 = similar)."""
    import numpy as np
    digit_indices = n_items_by_class
    num_classes = len(digit_indices)
    n = min(len(digit_indices[d]) for d in range(num_classes)) - 1
    a, b, y = [], [], []
    for d in range(num_classes):
        for i in range(n):
            a.append(digit_indices[d][i]); b.append(digit_indices[d][i + 1]); y.append(1)
            inc = rng.randrange(1, num_classes)
            dn = (d + inc) % num_classes
            a.append(digit_indices[d][i]); b.append(digit_indices[dn][i]); y.append(0)
    return np.array(a, np.int64), np.array(b, np.int64), np.array(y, np.float32)


def cpu_now():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), ru.ru_utime + ru.ru_stime


def main():
    args = parse_args()
    # Threading must be configured before TF executes anything.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    import keras
    from keras import layers, ops

    if args.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    keras.utils.set_random_seed(args.seed)  # python random, numpy, TF
    rng = random.Random(args.seed)

    mnist_dir = find_mnist(args.mnist)
    xtr_u8, ytr, xte_u8, yte = load_mnist(mnist_dir)
    xtr = (xtr_u8.astype(np.float32) / 255.0)[..., None]
    xte = (xte_u8.astype(np.float32) / 255.0)[..., None]
    log(f"mnist: {mnist_dir}  train {xtr.shape}  test {xte.shape}")

    t0 = time.perf_counter()
    tr_a, tr_b, tr_y = create_pairs([np.where(ytr == d)[0] for d in range(10)], rng)
    te_a, te_b, te_y = create_pairs([np.where(yte == d)[0] for d in range(10)], rng)
    xa, xb = xtr[tr_a], xtr[tr_b]
    pair_build_seconds = time.perf_counter() - t0
    n_train, n_test = len(tr_y), len(te_y)
    log(f"pairs: train {n_train}  test {n_test}  ({pair_build_seconds:.2f}s)")

    # --- model ---------------------------------------------------------------------------
    def lenet():
        inp = keras.Input(shape=(28, 28, 1))
        h = layers.Conv2D(4, (5, 5), activation="tanh")(inp)
        h = layers.AveragePooling2D(2)(h)
        h = layers.Conv2D(16, (5, 5), activation="tanh")(h)
        h = layers.AveragePooling2D(2)(h)
        h = layers.Flatten()(h)
        h = layers.Dense(10, activation="tanh")(h)
        return keras.Model(inp, h, name="lenet")

    eps = keras.backend.epsilon()

    def euclidean(t):
        a, b = t
        s = ops.sum(ops.square(a - b), axis=1, keepdims=True)
        return ops.sqrt(ops.maximum(s, eps))

    margin = float(args.margin)

    def contrastive_loss(y_true, d):
        y_true = ops.cast(y_true, d.dtype)
        return ops.mean(y_true * ops.square(d)
                        + (1.0 - y_true) * ops.square(ops.maximum(margin - d, 0.0)))

    thr = float(args.threshold)

    def accuracy(y_true, d):
        y_true = ops.cast(y_true, d.dtype)
        return ops.mean(ops.cast(ops.equal(y_true, ops.cast(d < thr, d.dtype)), d.dtype))

    base = lenet()
    in_a = keras.Input(shape=(28, 28, 1))
    in_b = keras.Input(shape=(28, 28, 1))
    dist = layers.Lambda(euclidean, output_shape=(1,))([base(in_a), base(in_b)])
    model = keras.Model([in_a, in_b], dist)
    model.compile(loss=contrastive_loss,
                  optimizer=keras.optimizers.Adam(learning_rate=args.lr),
                  metrics=[] if args.no_metric else [accuracy])

    # --- training, timed per epoch -------------------------------------------------------
    per_epoch = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.w0 = time.perf_counter()
            self.c0, self.r0 = cpu_now()

        def on_epoch_end(self, epoch, logs=None):
            w = time.perf_counter() - self.w0
            c, r = cpu_now()
            c, r = c - self.c0, r - self.r0
            row = {"epoch": epoch + 1, "wall_seconds": round(w, 3), "cpu_seconds": round(c, 3),
                   "cpu_seconds_rusage": round(r, 3),
                   "pairs_per_second": round(n_train / w, 1),
                   "pairs_per_cpu_second": round(n_train / c, 1) if c > 0 else None,
                   "loss": float(logs.get("loss", float("nan")))}
            if "accuracy" in (logs or {}):
                row["running_train_accuracy"] = float(logs["accuracy"])
            per_epoch.append(row)
            log(f"epoch {row['epoch']:>3}/{args.epochs}  loss {row['loss']:.5f}  "
                f"wall {w:7.2f}s  cpu {c:7.2f}s  {row['pairs_per_second']:9.1f} pairs/s  "
                f"{row['pairs_per_cpu_second']} pairs/cpu-s")

    load_before = os.getloadavg()
    w0 = time.perf_counter()
    c0, r0 = cpu_now()
    model.fit([xa, xb], tr_y, batch_size=args.batch, epochs=args.epochs, shuffle=True,
              verbose=0, callbacks=[Timer()])
    wall = time.perf_counter() - w0
    c1, r1 = cpu_now()
    cpu, cpu_ru = c1 - c0, r1 - r0
    load_after = os.getloadavg()
    total_pairs = n_train * args.epochs

    after = per_epoch[1:]
    if after:
        aw = sum(r["wall_seconds"] for r in after)
        ac = sum(r["cpu_seconds"] for r in after)
        after_pps = n_train * len(after) / aw
        after_ppc = n_train * len(after) / ac
    else:
        after_pps = after_ppc = None

    # --- evaluation (not timed as training) ---------------------------------------------
    e0 = time.perf_counter()
    pred_bs = 4096
    d_te = model.predict([xte[te_a], xte[te_b]], batch_size=pred_bs, verbose=0).ravel()
    d_tr = model.predict([xa, xb], batch_size=pred_bs, verbose=0).ravel()
    test_acc = float(np.mean((d_te < thr) == (te_y == 1)))
    train_acc = float(np.mean((d_tr < thr) == (tr_y == 1)))

    emb_tr = base.predict(xtr, batch_size=pred_bs, verbose=0).astype(np.float32)
    emb_te = base.predict(xte, batch_size=pred_bs, verbose=0).astype(np.float32)
    n_tr2 = np.sum(emb_tr * emb_tr, axis=1)
    nn = np.empty(len(emb_te), np.int64)
    for s in range(0, len(emb_te), 1000):
        q = emb_te[s:s + 1000]
        d2 = n_tr2[None, :] - 2.0 * (q @ emb_tr.T)  # + |q|^2, constant per row
        nn[s:s + 1000] = np.argmin(d2, axis=1)
    p_at_1 = float(np.mean(ytr[nn] == yte))
    eval_seconds = time.perf_counter() - e0

    import importlib.metadata as md
    out = {
        "framework": "tf.keras",
        "script": "benches/peers/keras_siamese_mnist.py",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "tensorflow-cpu": md.version("tensorflow-cpu")
                     if _has_dist(md, "tensorflow-cpu") else None},
        "arch": args.arch, "loss": "contrastive", "margin": margin, "optimizer": "adam",
        "lr": args.lr, "seed": args.seed,
        "threads": args.threads if args.threads > 0 else "default",
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "epochs": args.epochs, "batch": args.batch,
        "train_pairs": n_train, "test_pairs": n_test, "total_train_pairs": total_pairs,
        "model_params": int(base.count_params()),
        "pair_build_seconds": round(pair_build_seconds, 3),
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_rusage": round(cpu_ru, 3),
        "pairs_per_second": round(total_pairs / wall, 1),
        "pairs_per_cpu_second": round(total_pairs / cpu, 1),
        "first_epoch_wall_seconds": per_epoch[0]["wall_seconds"] if per_epoch else None,
        "pairs_per_second_after_warmup": round(after_pps, 1) if after_pps else None,
        "pairs_per_cpu_second_after_warmup": round(after_ppc, 1) if after_ppc else None,
        "final_loss": per_epoch[-1]["loss"] if per_epoch else None,
        "threshold": thr,
        "test_pair_accuracy": round(test_acc, 5),
        "train_pair_accuracy": round(train_acc, 5),
        "precision_at_1": round(p_at_1, 5),
        "eval_seconds": round(eval_seconds, 3),
        "per_epoch": per_epoch,
    }
    text = json.dumps(out, indent=2)
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    print(text)


def _has_dist(md, name):
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
