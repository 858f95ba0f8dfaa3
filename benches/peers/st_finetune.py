#!/usr/bin/env python3
"""Fine-tune a sentence-transformers model on labelled pairs with the SAME loss, data and
hyper-parameters as `twindex train text`, on the CPU, then score the test pairs the way
`twindex eval --pairs` and st_pairs_eval.py do (cosine similarity; AP and ROC-AUC from
scikit-learn). Writes one JSON object.

Recipe (both sides): AdamW, lr 2e-5, linear warm-up over 10% of the steps then linear decay,
weight decay 0.01 (not on biases / LayerNorm), gradient norm clipped at 1, dropout as in
config.json; dev AP after each epoch and the best epoch kept.

    losses: contrastive         ContrastiveLoss(margin=0.5), every pair, random batches
            online-contrastive  OnlineContrastiveLoss(margin=0.5), every pair, random batches
            mnrl                MultipleNegativesRankingLoss(scale=20), duplicate pairs only,
                                NO_DUPLICATES batches
            batch-hard          BatchHardTripletLoss(margin=5), distinct questions labelled by
                                connected component of the duplicate pairs, GROUP_BY_LABEL batches

    HF_HUB_OFFLINE=1 /work/scratch/stvenv/bin/python benches/peers/st_finetune.py --loss mnrl \
        --train ../shared/corpora/pairs/qqp-10k.train.tsv --dev ../shared/corpora/pairs/qqp-10k.dev.tsv \
        --test ../shared/corpora/pairs/qqp-10k.test.tsv --json-out benches/peers/results/st_ft.json

Needs sentence-transformers (6.x), torch, datasets, accelerate, scikit-learn.
"""
import argparse, csv, json, os, resource, sys, tempfile, time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def read_pairs(path, limit=None):
    rows = list(csv.DictReader(open(path, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if limit:
        rows = rows[:limit]
    a = [r.get("q1") or r.get("question1") for r in rows]
    b = [r.get("q2") or r.get("question2") for r in rows]
    y = [int(r.get("is_duplicate", r.get("label"))) for r in rows]
    return a, b, y


def groups(a, b, y):
    """Distinct texts (first-seen order) and connected-component labels over duplicate pairs."""
    idx, texts = {}, []
    for t in [t for p in zip(a, b) for t in p]:
        if t not in idx:
            idx[t] = len(texts)
            texts.append(t)
    parent = list(range(len(texts)))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s, t, d in zip(a, b, y):
        if d:
            ra, rb = root(idx[s]), root(idx[t])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    lab, labels = {}, []
    for i in range(len(texts)):
        labels.append(lab.setdefault(root(i), len(lab)))
    return texts, labels


def score(model, a, b, y, batch=32):
    texts = list(dict.fromkeys(a + b))
    emb = model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    pos = {t: i for i, t in enumerate(texts)}
    s = (emb[[pos[t] for t in a]] * emb[[pos[t] for t in b]]).sum(axis=1)
    y = np.array(y)
    return float(average_precision_score(y, s)), float(roc_auc_score(y, s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="../shared/models/all-MiniLM-L6-v2")
    ap.add_argument("--train", default="../shared/corpora/pairs/qqp-10k.train.tsv")
    ap.add_argument("--dev", default="../shared/corpora/pairs/qqp-10k.dev.tsv")
    ap.add_argument("--test", default="../shared/corpora/pairs/qqp-10k.test.tsv")
    ap.add_argument("--loss", default="mnrl",
                    choices=["contrastive", "online-contrastive", "mnrl", "batch-hard"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--mine-corpus", default=None,
                    help="mnrl: mine hard negatives first (util.mine_hard_negatives) from these texts, one a line")
    ap.add_argument("--mine-ranks", default="1..30", help="A..B: range_min = A-1, range_max = B")
    ap.add_argument("--mine-negatives", type=int, default=1)
    ap.add_argument("--mine-relative-margin", type=float, default=None)
    ap.add_argument("--mine-absolute-margin", type=float, default=None)
    ap.add_argument("--out", default=None, help="save the fine-tuned model here")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    import torch
    import sentence_transformers as st
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers
    from sentence_transformers.evaluation import BinaryClassificationEvaluator

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    a, b, y = read_pairs(args.train, args.max_train)
    model = SentenceTransformer(args.base, device="cpu")
    margin = args.margin
    mined = {}
    if args.loss in ("contrastive", "online-contrastive"):
        margin = 0.5 if margin is None else margin
        ds = Dataset.from_dict({"sentence1": a, "sentence2": b, "label": y})
        cls = losses.ContrastiveLoss if args.loss == "contrastive" else losses.OnlineContrastiveLoss
        loss = cls(model, margin=margin)
        sampler = BatchSamplers.BATCH_SAMPLER
        n_examples = len(a)
    elif args.loss == "mnrl":
        pa = [s for s, d in zip(a, y) if d]
        pb = [t for t, d in zip(b, y) if d]
        ds = Dataset.from_dict({"anchor": pa, "positive": pb})
        if args.mine_corpus:
            from sentence_transformers.util import mine_hard_negatives
            corpus = [l.rstrip("\n") for l in open(args.mine_corpus, encoding="utf-8") if l.strip()]
            first, last = (int(x) for x in args.mine_ranks.split(".."))
            c0, t0 = time.process_time(), time.perf_counter()
            ds = mine_hard_negatives(
                ds, model, corpus=corpus, range_min=first - 1, range_max=last,
                relative_margin=args.mine_relative_margin, absolute_margin=args.mine_absolute_margin,
                num_negatives=args.mine_negatives, sampling_strategy="top", output_format="n-tuple",
                batch_size=32, use_faiss=False, verbose=False)
            mined.update(cpu_seconds=time.process_time() - c0, wall_seconds=time.perf_counter() - t0,
                         rows=len(ds), corpus=len(corpus), ranks=args.mine_ranks,
                         negatives=args.mine_negatives, relative_margin=args.mine_relative_margin,
                         absolute_margin=args.mine_absolute_margin)
        loss = losses.MultipleNegativesRankingLoss(model, scale=args.scale)
        sampler = BatchSamplers.NO_DUPLICATES
        n_examples = len(ds)
    else:
        margin = 5.0 if margin is None else margin
        texts, labels = groups(a, b, y)
        ds = Dataset.from_dict({"sentence": texts, "label": labels})
        loss = losses.BatchHardTripletLoss(model, margin=margin)
        sampler = BatchSamplers.GROUP_BY_LABEL
        n_examples = None  # counted from the sampler below

    da, db, dy = read_pairs(args.dev)
    evaluator = BinaryClassificationEvaluator(da, db, dy, name="dev", batch_size=32,
                                              similarity_fn_names=["cosine"])
    work = tempfile.mkdtemp(prefix="st_ft_")
    targs = SentenceTransformerTrainingArguments(
        output_dir=work,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch,
        learning_rate=args.lr,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        batch_sampler=sampler,
        seed=args.seed,
        use_cpu=True,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_dev_cosine_ap",
        greater_is_better=True,
        logging_steps=20,
        report_to="none",
        disable_tqdm=False,
        dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss,
                                         evaluator=evaluator)
    dev_history = []

    c0, t0 = time.process_time(), time.perf_counter()
    out = trainer.train()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    for rec in trainer.state.log_history:
        if "eval_dev_cosine_ap" in rec:
            dev_history.append({"epoch": rec.get("epoch"), "dev_ap": rec["eval_dev_cosine_ap"],
                                "eval_runtime": rec.get("eval_runtime")})
    eval_seconds = sum(r["eval_runtime"] or 0 for r in dev_history)
    steps = trainer.state.global_step
    if n_examples is None:
        n_examples = steps * args.batch  # upper bound (a last short batch counts full)
    n_examples_total = n_examples * args.epochs
    test_ap, test_auc = score(model, *read_pairs(args.test))
    if args.out:
        model.save(args.out)
    res = {
        "framework": "sentence-transformers",
        "versions": {"sentence_transformers": st.__version__, "torch": torch.__version__},
        "base": args.base,
        "loss": args.loss,
        "margin": margin,
        "scale": args.scale if args.loss == "mnrl" else None,
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "warmup_ratio": args.warmup_ratio,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "threads": torch.get_num_threads(),
        "train_pairs": len(a),
        "train_examples": n_examples_total,
        "steps": steps,
        # Trainer.train() includes the per-epoch dev evaluation; subtract it for training time.
        "wall_seconds": wall - eval_seconds,
        "cpu_seconds_including_dev_eval": cpu,
        "wall_seconds_including_dev_eval": wall,
        "pairs_per_second": n_examples_total / max(wall - eval_seconds, 1e-9),
        "dev_history": dev_history,
        "mined_negatives": mined or None,
        "test_average_precision": test_ap,
        "test_roc_auc": test_auc,
        "test": args.test,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    js = json.dumps(res, indent=2)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(js + "\n")
    print(js)


if __name__ == "__main__":
    main()
