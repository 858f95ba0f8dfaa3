#!/usr/bin/env python3
"""Peer benchmark: HNSW on MNIST-784 the ann-benchmarks way, for twindex's index claims.

Base = the 60,000 MNIST train images, queries = the 10,000 test images, both raw pixels as
float32 0..255 (784-d), L2, k = 10.  Ground truth: an ivecs file (per query: int32 k, then k
int32 train ids, nearest first) -- by default ../shared/reference/mnist784_gt_k100.ivecs.

Libraries (M=16, ef_construction=200, one thread unless said otherwise):
  * hnswlib 0.8.0  Index(space='l2'); set_num_threads(1) for build and queries
                   (--build-all-threads adds a second, separately reported build using
                   every thread; queries always use the 1-thread-built index)
  * faiss          IndexHNSWFlat(784, 16), efConstruction=200, omp_set_num_threads(1)
  * faiss_sq8      IndexHNSWSQ(784, QT_8bit, 16): the same graph over per-dimension 8-bit
                   codes (trained on the base), no re-ranking
  * usearch        usearch Index (HNSW), f32, connectivity 16, expansion_add 200; threads=1
  * voyager        voyager Index (HNSW), Float32, M 16, ef_construction 200; num_threads=1
The engines that are not HNSW use their own documented build recipe and sweep their own knobs
(a grid where there are two; see each bench_* function):
  * scann          tree (num_leaves ~ sqrt(n)) + AH (2 dims a block) + exact reorder;
                   leaves_to_search x pre_reorder_num_neighbors
  * ngt            ONNG (ANNG edge 100, optimizer out 10 / in 120); search epsilon
  * faiss_ivfpqfs  "IVF{~4 sqrt n},PQ{d/2}x4fs,RFlat" (IVF-PQ fast-scan + exact refine);
                   nprobe x k_factor
OMP/BLAS threads are 1 (set before any engine loads).

Any other data set: --base/--queries .fvecs files and --metric l2|cosine (cosine: hnswlib
space 'cosine'; FAISS inner product over unit-length vectors).

--rss: each library's index is saved and loaded again in a fresh Python process that has
imported the library and numpy; rss_load_bytes = its RSS after loading minus before
(/proc/self/status VmRSS, also RssAnon/RssFile).

For each library: build wall seconds and CPU seconds (time.process_time, all threads),
index_bytes (hnswlib save_index / faiss write_index file size), then for each ef:
  recall    mean |found10 & gt10| / 10
  qps       queries / wall seconds, ONE query per call (Python call overhead included)
  qps_per_cpu_second  queries / process CPU seconds of that loop
  p50/p95/p99_us      per-call latency in microseconds
  batch_qps / batch_qps_per_cpu_second: the same queries in one batched call, 1 thread
                      (batch_cpu_per_wall checks it stayed on one core; NGT: batch_search)
Each row: "point" (its place in the sweep), "setting" (the knobs as text) and the knobs.
Before each ef's timed loop, the first --warmup queries are run untimed.

Prints one JSON object on stdout (progress on stderr); --json-out FILE writes it too.
"""
import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time

# One thread everywhere: OpenMP (FAISS, NGT's optimizer and batch search) and BLAS (FAISS and
# ScaNN training), set before any of them is loaded; each engine is also told so in its own API.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_EFS = "10,12,16,20,24,32,48,64,96,128"
ALL_LIBS = ["hnswlib", "faiss", "faiss_sq8", "usearch", "voyager", "scann", "ngt",
            "faiss_ivfpqfs"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", default=None,
                   help="folder with the gzipped IDX files (default: <repo>/corpora/mnist, "
                        "else <repo>/../shared/corpora/mnist)")
    p.add_argument("--gt", default=None,
                   help="ground-truth ivecs (default <repo>/../shared/reference/"
                        "mnist784_gt_k100.ivecs)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", default=DEFAULT_EFS, help="comma-separated ef sweep")
    p.add_argument("--libs", default=",".join(ALL_LIBS),
                   help="comma-separated, of: " + ",".join(ALL_LIBS) + " (better one a process, "
                        "as compare_ann.sh runs them: ngtpy's batch_insert fails once usearch is "
                        "loaded in the same process)")
    p.add_argument("--scann-leaves", type=int, default=0,
                   help="ScaNN num_leaves (default: round(sqrt(n)))")
    p.add_argument("--scann-leaves-search", default="2,4,6,8,12,16,24,32,48,64,96,128",
                   help="ScaNN leaves_to_search values (grid with --scann-reorder)")
    p.add_argument("--scann-reorder", default="20,40,100",
                   help="ScaNN pre_reorder_num_neighbors values")
    p.add_argument("--ngt-epsilon", default="-0.4,-0.1,0,0.02,0.04,0.06,0.08,0.1,0.15,0.2,0.3",
                   help="NGT search epsilon sweep (ann-benchmarks' values minus 1, and more)")
    p.add_argument("--ivf-nlist", type=int, default=0,
                   help="FAISS IVF-PQ fast-scan lists (default: 4 sqrt(n) to a power of 2)")
    p.add_argument("--ivf-nprobe", default="1,2,4,8,12,16,24,32,48,64,96,128,192",
                   help="FAISS IVF-PQ nprobe values (grid with --ivf-k-factor)")
    p.add_argument("--ivf-k-factor", default="1,2,4,8", help="IndexRefineFlat k_factor values")
    p.add_argument("--base", default=None, help=".fvecs base vectors instead of MNIST")
    p.add_argument("--queries", default=None, help=".fvecs queries (with --base)")
    p.add_argument("--metric", default="l2", choices=["l2", "cosine"])
    p.add_argument("--name", default="mnist-784-euclidean", help="benchmark name in the JSON")
    p.add_argument("--rss", action="store_true",
                   help="measure each index's resident memory after loading it in a fresh process")
    p.add_argument("--limit-queries", type=int, default=0, help="use only the first N queries")
    p.add_argument("--warmup", type=int, default=200, help="untimed queries before each ef")
    p.add_argument("--build-all-threads", action="store_true",
                   help="hnswlib: also time a build with all threads (reported separately)")
    p.add_argument("--no-batch", action="store_true", help="skip the batched-query figures")
    p.add_argument("--recall-target", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=100, help="hnswlib random_seed")
    p.add_argument("--json-out", default=None)
    return p.parse_args()


def find_mnist(arg):
    if arg:
        return arg
    for cand in (os.path.join(REPO, "corpora", "mnist"),
                 os.path.join(REPO, "..", "shared", "corpora", "mnist")):
        if os.path.exists(os.path.join(cand, "train-images-idx3-ubyte.gz")):
            return os.path.abspath(cand)
    sys.exit("ann_mnist784: MNIST not found; pass --mnist DIR")


def read_idx(path):
    import numpy as np
    if not os.path.exists(path) and path.endswith(".gz"):
        path = path[:-3]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_ivecs(path):
    import numpy as np
    raw = np.fromfile(path, dtype=np.int32)
    k = int(raw[0])
    rows = raw.reshape(-1, k + 1)
    if not np.all(rows[:, 0] == k):
        raise ValueError(f"{path}: rows of unequal k")
    return rows[:, 1:]


def recall_at(found, gt, k):
    import numpy as np
    hits = 0
    for f, g in zip(found, gt):
        hits += len(np.intersect1d(f[:k], g[:k], assume_unique=False))
    return hits / (k * len(gt))


def sweep(name, search_one, search_batch, set_ef, queries, gt, efs, k, warmup, do_batch,
          key="ef"):
    """search_one(q (1,d)) -> ids (k,); search_batch(Q) -> ids (n,k).

    efs: the sweep's settings in order of increasing search breadth: plain numbers (stored as
    `key`, "ef" for the HNSW engines) or dicts of parameters (each stored as its own field);
    set_ef(setting) applies one. Every row also gets "point" (its place in the sweep) and
    "setting" (the parameters as text)."""
    import numpy as np
    rows = []
    n = len(queries)
    qs = [queries[i:i + 1] for i in range(n)]
    for point, ef in enumerate(efs):
        params = ef if isinstance(ef, dict) else {key: ef}
        set_ef(ef)
        for q in qs[:warmup]:
            search_one(q)
        lat = np.empty(n, dtype=np.int64)
        found = np.full((n, k), -1, dtype=np.int64)
        pc = time.perf_counter_ns
        c0 = time.process_time()
        w0 = time.perf_counter()
        for i, q in enumerate(qs):
            t = pc()
            ids = search_one(q)
            lat[i] = pc() - t
            found[i, :len(ids)] = ids[:k]
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        rec = recall_at(found, gt, k)
        setting = " ".join(f"{a}={b}" for a, b in params.items())
        row = dict(params)
        row.update({"point": point, "setting": setting, "recall": round(rec, 5),
                    "qps": round(n / wall, 1),
                    "qps_per_cpu_second": round(n / cpu, 1) if cpu > 0 else None,
                    "p50_us": round(float(np.percentile(lat, 50)) / 1e3, 2),
                    "p95_us": round(float(np.percentile(lat, 95)) / 1e3, 2),
                    "p99_us": round(float(np.percentile(lat, 99)) / 1e3, 2),
                    "wall_seconds": round(wall, 4), "cpu_seconds": round(cpu, 4)})
        if do_batch and search_batch is not None:
            c0 = time.process_time()
            w0 = time.perf_counter()
            bfound = search_batch(queries)
            bw = time.perf_counter() - w0
            bc = time.process_time() - c0
            row["batch_qps"] = round(n / bw, 1)
            row["batch_qps_per_cpu_second"] = round(n / bc, 1) if bc > 0 else None
            row["batch_cpu_per_wall"] = round(bc / bw, 3) if bw > 0 else None
            row["batch_recall"] = round(recall_at(bfound, gt, k), 5)
        rows.append(row)
        log(f"{name:9s} {setting:28s} recall {rec:.4f}  qps {row['qps']:9.1f}  "
            f"qps/cpu-s {row['qps_per_cpu_second']:9.1f}  p50 {row['p50_us']:7.1f}us  "
            f"p99 {row['p99_us']:7.1f}us" +
            (f"  batch q/cpu-s {row['batch_qps_per_cpu_second']:9.1f} "
             f"(cpu/wall {row['batch_cpu_per_wall']})" if "batch_qps" in row else ""))
    return rows


def at_target(rows, target):
    """The smallest setting (first in sweep order) with recall >= target."""
    ok = sorted((r for r in rows if r["recall"] >= target), key=lambda r: r.get("point", r.get("ef")))
    if not ok:
        return None
    r = ok[0]
    return {"recall_target": target, "point": r.get("point"), "setting": r.get("setting"),
            "ef": r.get("ef"), "recall": r["recall"], "qps": r["qps"],
            "qps_per_cpu_second": r["qps_per_cpu_second"],
            "batch_qps_per_cpu_second": r.get("batch_qps_per_cpu_second"), "p50_us": r["p50_us"]}


def read_fvecs(path):
    import numpy as np
    raw = np.fromfile(path, dtype="<f4")
    d = int(raw[:1].view("<i4")[0])
    return np.ascontiguousarray(raw.reshape(-1, d + 1)[:, 1:])


RSS_CHILD = r"""
import json, sys
def rss():
    f = {}
    for l in open("/proc/self/status"):
        k, _, v = l.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            f[k] = int(v.split()[0]) * 1024
    return f
import numpy
lib, path, space, dim = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if lib == "hnswlib":
    import hnswlib
    before = rss()
    idx = hnswlib.Index(space=space, dim=dim)
    idx.load_index(path)
elif lib == "usearch":
    from usearch.index import Index
    before = rss()
    idx = Index.restore(path)            # read into memory (not view=True, which maps it)
elif lib == "voyager":
    import voyager
    before = rss()
    idx = voyager.Index.load(path)
elif lib == "scann":
    sys.modules["tensorflow"] = None     # scann's TF ops are not used (see ann_mnist784.py)
    from scann.scann_ops.py import scann_ops_pybind
    before = rss()
    idx = scann_ops_pybind.load_searcher(path)
elif lib == "ngt":
    import ngtpy
    before = rss()
    idx = ngtpy.Index(path, read_only=True)
else:
    import faiss
    before = rss()
    idx = faiss.read_index(path)
after = rss()
print(json.dumps({"before": before, "after": after}))
"""


def rss_after_load(lib, write, space, dim, is_dir=False):
    """RSS of a fresh process after loading the index `write` saves, minus before.
    is_dir: the index is a folder (`write` gets an empty one)."""
    import shutil
    import subprocess
    if is_dir:
        path = tempfile.mkdtemp(suffix=".idx")
    else:
        fd, path = tempfile.mkstemp(suffix=".idx")
        os.close(fd)
    try:
        write(path)
        r = json.loads(subprocess.check_output([sys.executable, "-c", RSS_CHILD, lib, path,
                                                space, str(dim)]).decode().strip().splitlines()[-1])
    finally:
        shutil.rmtree(path, ignore_errors=True) if is_dir else os.unlink(path)
    b, a = r["before"], r["after"]
    return {"rss_load_bytes": a["VmRSS"] - b["VmRSS"],
            "rss_load_anon_bytes": a.get("RssAnon", 0) - b.get("RssAnon", 0),
            "rss_load_file_bytes": a.get("RssFile", 0) - b.get("RssFile", 0)}


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def file_size(write):
    fd, path = tempfile.mkstemp(suffix=".idx")
    os.close(fd)
    try:
        write(path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def bench_hnswlib(args, base, queries, gt, efs):
    import hnswlib
    import numpy as np
    n, d = base.shape
    ids = np.arange(n)

    space = "cosine" if args.metric == "cosine" else "l2"

    def build(threads):
        idx = hnswlib.Index(space=space, dim=d)
        idx.init_index(max_elements=n, M=args.m, ef_construction=args.ef_construction,
                       random_seed=args.seed)
        idx.set_num_threads(threads)
        c0 = time.process_time(); w0 = time.perf_counter()
        idx.add_items(base, ids, num_threads=threads)
        return idx, time.perf_counter() - w0, time.process_time() - c0

    log(f"hnswlib: building (1 thread) M={args.m} efC={args.ef_construction} ...")
    idx, bw, bc = build(1)
    log(f"hnswlib: build {bw:.2f}s wall, {bc:.2f}s cpu")
    out = {"library": "hnswlib", "params": {"M": args.m, "ef_construction": args.ef_construction,
                                            "space": space, "random_seed": args.seed},
           "build_threads": 1,
           "build_seconds": round(bw, 3), "build_cpu_seconds": round(bc, 3)}
    if args.build_all_threads:
        nt = os.cpu_count() or 1
        log(f"hnswlib: building ({nt} threads) ...")
        idx2, bw2, bc2 = build(-1)
        out["build_all_threads"] = {"threads": nt, "build_seconds": round(bw2, 3),
                                    "build_cpu_seconds": round(bc2, 3)}
        log(f"hnswlib: build all threads {bw2:.2f}s wall, {bc2:.2f}s cpu")
        del idx2
    out["index_bytes"] = file_size(idx.save_index)
    if args.rss:
        out.update(rss_after_load("hnswlib", idx.save_index, space, d))
        log(f"hnswlib: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    idx.set_num_threads(1)
    k = args.k
    out["sweep"] = sweep(
        "hnswlib",
        lambda q: idx.knn_query(q, k=k, num_threads=1)[0][0],
        lambda Q: idx.knn_query(Q, k=k, num_threads=1)[0],
        idx.set_ef, queries, gt, efs, k, args.warmup, not args.no_batch)
    return out


def bench_faiss(args, base, queries, gt, efs, sq8=False):
    import faiss
    faiss.omp_set_num_threads(1)
    n, d = base.shape
    # Cosine: unit-length vectors (as given) under inner product.
    metric = faiss.METRIC_INNER_PRODUCT if args.metric == "cosine" else faiss.METRIC_L2
    name = "faiss_sq8" if sq8 else "faiss"
    if sq8:
        idx = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, args.m, metric)
    else:
        idx = faiss.IndexHNSWFlat(d, args.m, metric)
    idx.hnsw.efConstruction = args.ef_construction
    log(f"{name}: building (1 thread) M={args.m} efC={args.ef_construction} ...")
    c0 = time.process_time(); w0 = time.perf_counter()
    if sq8:
        idx.train(base)
    idx.add(base)
    bw, bc = time.perf_counter() - w0, time.process_time() - c0
    log(f"{name}: build {bw:.2f}s wall, {bc:.2f}s cpu")
    out = {"library": name, "index": "IndexHNSWSQ(QT_8bit)" if sq8 else "IndexHNSWFlat",
           "params": {"M": args.m, "efConstruction": args.ef_construction,
                      "metric": "inner_product" if args.metric == "cosine" else "L2"},
           "build_threads": 1,
           "build_seconds": round(bw, 3), "build_cpu_seconds": round(bc, 3),
           "index_bytes": file_size(lambda p: faiss.write_index(idx, p))}
    if args.rss:
        out.update(rss_after_load("faiss", lambda p: faiss.write_index(idx, p), "", d))
        log(f"{name}: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    k = args.k

    def set_ef(ef):
        idx.hnsw.efSearch = ef

    out["sweep"] = sweep(
        name,
        lambda q: idx.search(q, k)[1][0],
        lambda Q: idx.search(Q, k)[1],
        set_ef, queries, gt, efs, k, args.warmup, not args.no_batch)
    try:
        out["compile_options"] = faiss.get_compile_options()
    except Exception:
        pass
    return out


def _timed_build(name, fn):
    log(f"{name}: building (1 thread) ...")
    c0 = time.process_time(); w0 = time.perf_counter()
    r = fn()
    bw, bc = time.perf_counter() - w0, time.process_time() - c0
    log(f"{name}: build {bw:.2f}s wall, {bc:.2f}s cpu")
    return r, {"build_threads": 1, "build_seconds": round(bw, 3), "build_cpu_seconds": round(bc, 3)}


def bench_usearch(args, base, queries, gt, efs):
    """USearch HNSW, f32 storage, connectivity (M) 16, expansion_add (efConstruction) 200;
    the search knob is expansion_search (ef). threads=1 for add, single and batched search."""
    from usearch.index import Index
    import numpy as np
    n, d = base.shape
    metric = "cos" if args.metric == "cosine" else "l2sq"
    idx = Index(ndim=d, metric=metric, dtype="f32", connectivity=args.m,
                expansion_add=args.ef_construction, expansion_search=64)
    _, b = _timed_build("usearch", lambda: idx.add(np.arange(n, dtype=np.uint64), base, threads=1))
    out = {"library": "usearch", "index": "usearch.index.Index (HNSW, f32)",
           "params": {"connectivity": args.m, "expansion_add": args.ef_construction,
                      "metric": metric, "dtype": "f32"}, **b, "sweep_kind": "path",
           "index_bytes": file_size(idx.save)}
    if args.rss:
        out.update(rss_after_load("usearch", idx.save, "", d))
        log(f"usearch: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    k = args.k

    def set_ef(ef):
        idx.expansion_search = ef

    out["sweep"] = sweep("usearch",
                         lambda q: idx.search(q[0], k, threads=1).keys,
                         lambda Q: idx.search(Q, k, threads=1).keys,
                         set_ef, queries, gt, efs, k, args.warmup, not args.no_batch)
    return out


def bench_voyager(args, base, queries, gt, efs):
    """Voyager (Spotify's HNSW), Float32 storage, M 16, ef_construction 200; the knob is
    query_ef. num_threads=1 for add_items and for the batched query."""
    import voyager
    import numpy as np
    n, d = base.shape
    space = voyager.Space.Cosine if args.metric == "cosine" else voyager.Space.Euclidean
    idx = voyager.Index(space, num_dimensions=d, M=args.m, ef_construction=args.ef_construction,
                        random_seed=args.seed, max_elements=n,
                        storage_data_type=voyager.StorageDataType.Float32)
    _, b = _timed_build("voyager", lambda: idx.add_items(base, ids=list(range(n)), num_threads=1))
    out = {"library": "voyager", "index": "voyager.Index (HNSW, Float32)",
           "params": {"M": args.m, "ef_construction": args.ef_construction, "space": str(space),
                      "storage": "Float32"}, **b, "sweep_kind": "path",
           "index_bytes": file_size(idx.save)}
    if args.rss:
        out.update(rss_after_load("voyager", idx.save, "", d))
        log(f"voyager: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    k = args.k
    cur = {"ef": 10}

    def set_ef(ef):
        cur["ef"] = ef

    out["sweep"] = sweep("voyager",
                         lambda q: idx.query(q[0], k=k, num_threads=1, query_ef=cur["ef"])[0],
                         lambda Q: idx.query(Q, k=k, num_threads=1, query_ef=cur["ef"])[0],
                         set_ef, queries, gt, efs, k, args.warmup, not args.no_batch)
    return out


def import_scann_ops():
    """scann's pybind searcher. `import scann` also loads its TensorFlow ops, which scann 1.4.2
    built against another TF than the tensorflow-cpu this venv pins for the Keras benches (an
    undefined absl symbol); the pybind searcher does not use TF, so TF is hidden while importing."""
    saved = sys.modules.get("tensorflow", "absent")
    sys.modules["tensorflow"] = None
    try:
        from scann.scann_ops.py import scann_ops_pybind
    finally:
        if saved == "absent":
            sys.modules.pop("tensorflow", None)
        else:
            sys.modules["tensorflow"] = saved
    return scann_ops_pybind


def bench_scann(args, base, queries, gt, _efs):
    """ScaNN, its documented recipe: k-means tree with num_leaves ~ sqrt(n) (training sample =
    the whole base), anisotropic hashing score_ah(dims_per_block 2; threshold 0.2 for dot
    product, none for L2), exact float re-ordering. Knobs: leaves_to_search x
    pre_reorder_num_neighbors (a grid). Training on 1 thread; set_num_threads(1); batched =
    search_batched (not the _parallel variant)."""
    import math
    import numpy as np
    ops = import_scann_ops()
    n, d = base.shape
    dist = "dot_product" if args.metric == "cosine" else "squared_l2"
    leaves = args.scann_leaves or int(round(math.sqrt(n)))
    aqt = 0.2 if dist == "dot_product" else float("nan")

    def build():
        bld = (ops.builder(base, args.k, dist)
               .tree(num_leaves=leaves, num_leaves_to_search=10, training_sample_size=n,
                     spherical=(dist == "dot_product"))
               .score_ah(2, anisotropic_quantization_threshold=aqt)
               .reorder(100))
        bld.set_n_training_threads(1)
        return bld.build()

    searcher, b = _timed_build("scann", build)
    searcher.set_num_threads(1)
    out = {"library": "scann", "index": "scann tree + AH + reorder",
           "params": {"num_leaves": leaves, "training_sample_size": n, "distance": dist,
                      "spherical": dist == "dot_product", "score_ah_dims_per_block": 2,
                      "anisotropic_quantization_threshold": None if math.isnan(aqt) else aqt,
                      "reorder": "exact float32"}, **b, "sweep_kind": "grid"}
    sz = {}

    def ser(path):
        searcher.serialize(path)
        sz["b"] = dir_size(path)

    if args.rss:
        out.update(rss_after_load("scann", ser, "", d, is_dir=True))
        log(f"scann: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    else:
        tmp = tempfile.mkdtemp()
        ser(tmp)
        import shutil
        shutil.rmtree(tmp)
    out["index_bytes"] = sz.get("b")
    k = args.k
    grid = [{"leaves": l, "reorder": r} for l in parse_ints(args.scann_leaves_search)
            for r in parse_ints(args.scann_reorder)]
    cur = {}
    out["sweep"] = sweep("scann",
                         lambda q: searcher.search(q[0], k, cur["reorder"], cur["leaves"])[0],
                         lambda Q: searcher.search_batched(Q, k, cur["reorder"], cur["leaves"])[0],
                         cur.update, queries, gt, grid, k, args.warmup, not args.no_batch)
    return out


def bench_ngt(args, base, queries, gt, _efs):
    """NGT ONNG, the recipe of NGT's README and ann-benchmarks: an ANNG with
    edge_size_for_creation 100 (edge_size_for_search -2), then ngtpy.Optimizer with 10
    outgoing / 120 incoming edges (its default processing modes). Knob: search epsilon (with
    edge_size -2, as ann-benchmarks). Cosine data: L2 over the unit vectors (same order).
    batch_insert(num_threads=1); OMP_NUM_THREADS=1 for the optimizer and batch_search."""
    import shutil
    import numpy as np
    import ngtpy
    n, d = base.shape
    work = tempfile.mkdtemp(prefix="ngt_")
    anng, onng = os.path.join(work, "anng"), os.path.join(work, "onng")

    def build():
        ngtpy.create(anng, d, edge_size_for_creation=100, edge_size_for_search=-2,
                     distance_type="L2", object_type="Float")
        ix = ngtpy.Index(anng)
        ix.batch_insert(base, num_threads=1)
        ix.save()
        ix.close()
        opt = ngtpy.Optimizer(log_disabled=True)
        opt.set(num_of_outgoings=10, num_of_incomings=120)
        opt.execute(anng, onng)
        shutil.rmtree(anng)

    try:
        _, b = _timed_build("ngt", build)
        out = {"library": "ngt", "index": "NGT ONNG",
               "params": {"edge_size_for_creation": 100, "edge_size_for_search": -2,
                          "num_of_outgoings": 10, "num_of_incomings": 120,
                          "distance_type": "L2", "object_type": "Float"}, **b,
               "sweep_kind": "path", "index_bytes": dir_size(onng)}
        if args.rss:
            out.update(rss_after_load("ngt", lambda p: (os.rmdir(p), shutil.copytree(onng, p)),
                                      "", d, is_dir=True))
            log(f"ngt: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
        idx = ngtpy.Index(onng, read_only=True)
        k = args.k
        eps = [float(x) for x in args.ngt_epsilon.split(",") if x.strip()]
        batch_ok = hasattr(idx, "batch_search") and hasattr(ngtpy, "BatchResults")
        out["batch"] = "ngtpy.Index.batch_search" if batch_ok else "none"

        def set_eps(e):
            idx.set(epsilon=e, edge_size=-2)

        def batch(Q):
            res = ngtpy.BatchResults()
            idx.batch_search(Q, res, k, with_distance=False)
            ids = np.asarray(res.get_ids()).reshape(len(Q), -1)
            return ids

        out["sweep"] = sweep("ngt", lambda q: idx.search(q[0], k, with_distance=False),
                             batch if batch_ok else None, set_eps, queries, gt, eps, k,
                             args.warmup, not args.no_batch, key="epsilon")
        idx.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def bench_faiss_ivfpqfs(args, base, queries, gt, _efs):
    """FAISS IVF-PQ fast-scan with exact refinement: index_factory "IVF{nlist},PQ{d/2}x4fs,RFlat"
    (an IndexIVFPQFastScan, 4-bit codes of 2 dimensions each, inside an IndexRefineFlat that
    keeps the f32 vectors), nlist ~ 4 sqrt(n) (FAISS's guideline: 4..16 sqrt(n)), as
    ann-benchmarks' faiss-ivfpqfs. Knobs: nprobe x k_factor (a grid). omp_set_num_threads(1)."""
    import math
    import faiss
    faiss.omp_set_num_threads(1)
    n, d = base.shape
    metric = faiss.METRIC_INNER_PRODUCT if args.metric == "cosine" else faiss.METRIC_L2
    nlist = args.ivf_nlist or 1 << int(round(math.log2(4 * math.sqrt(n))))
    fac = f"IVF{nlist},PQ{d // 2}x4fs,RFlat"
    idx = faiss.index_factory(d, fac, metric)

    def build():
        idx.train(base)
        idx.add(base)

    _, b = _timed_build("faiss_ivfpqfs", build)
    ivf = faiss.extract_index_ivf(idx)
    out = {"library": "faiss_ivfpqfs", "index": f"IndexRefineFlat(IndexIVFPQFastScan) \"{fac}\"",
           "params": {"factory": fac, "nlist": nlist, "pq_m": d // 2, "pq_nbits": 4,
                      "metric": "inner_product" if args.metric == "cosine" else "L2"}, **b,
           "sweep_kind": "grid", "index_bytes": file_size(lambda p: faiss.write_index(idx, p))}
    if args.rss:
        out.update(rss_after_load("faiss", lambda p: faiss.write_index(idx, p), "", d))
        log(f"faiss_ivfpqfs: RSS after load {out['rss_load_bytes'] / 1e6:.1f} MB")
    k = args.k
    grid = [{"nprobe": p, "k_factor": f} for p in parse_ints(args.ivf_nprobe)
            for f in parse_ints(args.ivf_k_factor)]

    def setp(p):
        ivf.nprobe = p["nprobe"]
        idx.k_factor = p["k_factor"]

    out["sweep"] = sweep("faiss_ivfpqfs", lambda q: idx.search(q, k)[1][0],
                         lambda Q: idx.search(Q, k)[1], setp, queries, gt, grid, k,
                         args.warmup, not args.no_batch)
    return out


def parse_ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def main():
    args = parse_args()
    import numpy as np
    if args.base:
        if not (args.queries and args.gt):
            sys.exit("ann_mnist784: --base needs --queries and --gt")
        gt_path = args.gt
        base, queries = read_fvecs(args.base), read_fvecs(args.queries)
    else:
        mnist = find_mnist(args.mnist)
        gt_path = args.gt or os.path.join(REPO, "..", "shared", "reference",
                                          "mnist784_gt_k100.ivecs")
        base = np.ascontiguousarray(
            read_idx(os.path.join(mnist, "train-images-idx3-ubyte.gz")).reshape(-1, 784),
            dtype=np.float32)
        queries = np.ascontiguousarray(
            read_idx(os.path.join(mnist, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784),
            dtype=np.float32)
    gt = read_ivecs(gt_path)
    if gt.shape[0] != queries.shape[0]:
        sys.exit(f"ann_mnist784: gt has {gt.shape[0]} rows, queries {queries.shape[0]}")
    if gt.shape[1] < args.k:
        sys.exit(f"ann_mnist784: gt has k={gt.shape[1]} < {args.k}")
    gt = gt[:, :args.k]
    if args.limit_queries:
        queries, gt = queries[:args.limit_queries], gt[:args.limit_queries]
    efs = [int(x) for x in args.ef.split(",") if x.strip()]
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    log(f"base {base.shape}  queries {queries.shape}  gt {gt_path}  efs {efs}")

    import importlib.metadata as md

    def ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    out = {"benchmark": args.name, "script": "benches/peers/ann_mnist784.py",
           "versions": {"python": platform.python_version(), "numpy": np.__version__,
                        "hnswlib": ver("hnswlib"), "faiss-cpu": ver("faiss-cpu"),
                        "usearch": ver("usearch"), "voyager": ver("voyager"),
                        "scann": ver("scann"), "ngt": ver("ngt")},
           "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
           "base": int(base.shape[0]), "queries": int(queries.shape[0]),
           "dim": int(base.shape[1]), "metric": args.metric,
           "k": args.k, "gt": os.path.abspath(gt_path), "efs": efs,
           "warmup_queries_per_ef": args.warmup, "cpu_count": os.cpu_count(),
           "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    for lib in libs:
        fn = {"hnswlib": bench_hnswlib, "faiss": bench_faiss,
              "faiss_sq8": lambda *a: bench_faiss(*a, sq8=True), "usearch": bench_usearch,
              "voyager": bench_voyager, "scann": bench_scann, "ngt": bench_ngt,
              "faiss_ivfpqfs": bench_faiss_ivfpqfs}.get(lib)
        if fn is None:
            sys.exit(f"ann_mnist784: unknown library {lib}")
        try:
            block = fn(args, base, queries, gt, efs)
            block["at_recall_target"] = at_target(block["sweep"], args.recall_target)
        except ImportError as e:
            block = {"library": lib, "error": f"not installed: {e}"}
            log(f"{lib}: {block['error']}")
        except Exception as e:  # one engine failing must not lose the others' figures
            import traceback
            block = {"library": lib, "error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc()}
            log(f"{lib}: FAILED {block['error']}")
        out[lib] = block
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(out, indent=2)
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
