"""Time per epoch of linrec's MF against a PyTorch CPU implementation of the same training.

Both sides run the same model (d = 64 user and item embeddings, random normal init), the same
loss, the same negative sampler (uniform with replacement; either N negatives shared by the
batch or N fresh negatives per positive), batch size 1024, the same optimiser (lazy/sparse
Adam: ``torch.optim.SparseAdam`` over sparse embedding gradients is the algorithm
``MF(optimizer="adam")`` implements) and the same thread count. Configurations (Gowalla):

- InfoNCE, cosine scores, t = 0.1, N = 256;
- CCL, cosine scores, m = 0.9, w = 150, N = 800;
- BPR, dot scores, N = 1.

Run::

    OMP_WAIT_POLICY=passive python benchmarks/bench_mf.py --data ../shared/data/gowalla \\
        --epochs 2 --threads 2

For the per-positive sampler, PyTorch needs minutes per epoch: it is timed on
``--torch-batches`` batches (after 3 untimed warm-up batches) and extrapolated to a full
epoch (reported as such). Recall@20
(LightGCN definition, training items excluded) is measured after the same number of epochs
wherever both sides ran full epochs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from linrec._kernels.topk import topk_rows  # noqa: E402
from linrec.datasets import load_lightgcn  # noqa: E402
from linrec.mf import MF  # noqa: E402

CONFIGS = {
    "infonce": {"n_negatives": 256, "score": "cosine", "temperature": 0.1},
    "ccl": {"n_negatives": 800, "score": "cosine", "margin": 0.9, "negative_weight": 150.0},
    "bpr": {"n_negatives": 1, "score": "dot"},
}
LEARNING_RATE = 1e-2
INIT_STD = 0.1
BATCH = 1024
_WARMUP_BATCHES = 3


def recall_at_20(U, V, cosine, train, test, k=20):
    if cosine:
        U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    total = 0.0
    for start in range(0, users.size, 2048):
        batch = users[start : start + 2048]
        scores = np.ascontiguousarray(U[batch] @ V.T, dtype=np.float32)
        tr = train[batch]
        top, _ = topk_rows(scores, k, tr.indptr, tr.indices, np.ones(1, np.bool_), False)
        te = test[batch]
        for r in range(batch.size):
            held = te.indices[te.indptr[r] : te.indptr[r + 1]]
            total += np.isin(top[r], held).sum() / held.size
    return total / users.size


# ----------------------------------------------------------------------------- PyTorch
def torch_train(loss, cfg, sharing, train, epochs, threads, max_batches, seed=0):
    """Returns (seconds per epoch, extrapolated?, U, V)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    n_users, n_items = train.shape
    d = 64
    user = torch.nn.Embedding(n_users, d, sparse=True)
    item = torch.nn.Embedding(n_items, d, sparse=True)
    torch.nn.init.normal_(user.weight, std=INIT_STD)
    torch.nn.init.normal_(item.weight, std=INIT_STD)
    opt = torch.optim.SparseAdam([user.weight, item.weight], lr=LEARNING_RATE)
    users_np = np.repeat(np.arange(n_users), np.diff(train.indptr))
    pairs_u = torch.from_numpy(users_np.astype(np.int64))
    pairs_i = torch.from_numpy(train.indices.astype(np.int64))
    n_pairs = pairs_u.numel()
    N = cfg["n_negatives"]
    cosine = cfg["score"] == "cosine"
    n_batches = (n_pairs + BATCH - 1) // BATCH
    times = []
    extrapolated = False
    for _ in range(epochs):
        perm = torch.randperm(n_pairs)
        start = time.perf_counter()
        done = 0
        for b in range(n_batches):
            if max_batches is not None and b == _WARMUP_BATCHES:
                # partial epochs: the first batches (allocator warm-up) are not timed
                start = time.perf_counter()
                done = 0
            if max_batches is not None and b >= max_batches + _WARMUP_BATCHES:
                extrapolated = True
                break
            idx = perm[b * BATCH : (b + 1) * BATCH]
            u, i = pairs_u[idx], pairs_i[idx]
            p, q = user(u), item(i)
            if cosine:
                p, q = F.normalize(p, dim=-1), F.normalize(q, dim=-1)
            pos = (p * q).sum(-1)
            if sharing == "batch":
                qn = item(torch.randint(n_items, (N,)))
                if cosine:
                    qn = F.normalize(qn, dim=-1)
                neg = p @ qn.T
            else:
                qn = item(torch.randint(n_items, (u.numel(), N)))
                if cosine:
                    qn = F.normalize(qn, dim=-1)
                neg = torch.bmm(qn, p.unsqueeze(-1)).squeeze(-1)
            if loss == "infonce":
                t = cfg["temperature"]
                logits = torch.cat([pos[:, None], neg], dim=1) / t
                per_pair = torch.logsumexp(logits, dim=1) - pos / t
            elif loss == "ccl":
                per_pair = F.relu(1 - pos) + cfg["negative_weight"] * F.relu(
                    neg - cfg["margin"]
                ).mean(1)
            else:
                per_pair = F.softplus(neg - pos[:, None]).sum(1)
            opt.zero_grad()
            per_pair.mean().backward()
            opt.step()
            done += 1
        elapsed = time.perf_counter() - start
        times.append(elapsed * n_batches / done)
        if extrapolated:
            break
    return (
        float(np.median(times)),
        extrapolated,
        user.weight.detach().numpy(),
        item.weight.detach().numpy(),
    )


def linrec_train(loss, cfg, sharing, train, epochs, threads, seed=0):
    params = {k: v for k, v in cfg.items() if k != "score"}
    model = MF(
        loss,
        score_function=cfg["score"],
        negative_sharing=sharing,
        batch_size=BATCH,
        learning_rate=LEARNING_RATE,
        init_std=INIT_STD,
        n_epochs=epochs,
        n_jobs=threads,
        random_state=seed,
        **params,
    )
    model.fit(train)
    return float(np.median(model.epoch_times_)), model.user_factors_, model.item_factors_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gowalla"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--losses", nargs="*", default=list(CONFIGS))
    parser.add_argument("--sharing", nargs="*", default=["batch", "pair"])
    parser.add_argument(
        "--torch-batches",
        type=int,
        default=60,
        help="batches timed for PyTorch with per-positive negatives",
    )
    parser.add_argument(
        "--no-torch-full",
        action="store_true",
        help="time PyTorch on --torch-batches batches in every configuration",
    )
    args = parser.parse_args(argv)
    train, test = load_lightgcn(args.data)
    # load every compiled kernel from numba's cache before timing anything
    for sharing in ("batch", "pair"):
        linrec_train("infonce", CONFIGS["infonce"], sharing, train[:200], 1, args.threads)
        linrec_train("bpr", CONFIGS["bpr"], sharing, train[:200], 1, args.threads)
    print(f"data: {train.shape}, {train.nnz} train pairs; load: {os.getloadavg()}", flush=True)
    rows = []
    for sharing in args.sharing:
        for loss in args.losses:
            cfg = CONFIGS[loss]
            if sharing == "pair" and loss != "infonce":
                continue  # per-positive negatives: the ANCHORS configuration only
            full_torch = sharing == "batch" and not args.no_torch_full
            t0 = time.perf_counter()
            ours, U, V = linrec_train(loss, cfg, sharing, train, args.epochs, args.threads)
            ours_recall = recall_at_20(U, V, cfg["score"] == "cosine", train, test)
            print(
                f"linrec {loss} {sharing}: {ours:.1f} s/epoch, Recall@20 {ours_recall:.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            t0 = time.perf_counter()
            theirs, extrapolated, TU, TV = torch_train(
                loss,
                cfg,
                sharing,
                train,
                args.epochs if full_torch else 1,
                args.threads,
                None if full_torch else args.torch_batches,
            )
            torch_recall = (
                recall_at_20(TU, TV, cfg["score"] == "cosine", train, test)
                if not extrapolated
                else float("nan")
            )
            print(
                f"torch  {loss} {sharing}: {theirs:.1f} s/epoch"
                f"{' (extrapolated)' if extrapolated else ''}, Recall@20 {torch_recall:.4f} "
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            rows.append(
                (
                    loss,
                    sharing,
                    cfg["n_negatives"],
                    ours,
                    theirs,
                    extrapolated,
                    ours_recall,
                    torch_recall,
                )
            )
    print(f"\nload after: {os.getloadavg()}")
    print(
        "| loss | negatives | N | linrec s/epoch | PyTorch s/epoch | speed-up | "
        f"linrec Recall@20 | PyTorch Recall@20 (after {args.epochs} epochs) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for loss, sharing, n, ours, theirs, extra, r1, r2 in rows:
        note = " (extrapolated from the first batches)" if extra else ""
        r2s = "n/a (partial epoch)" if extra else f"{r2:.4f}"
        print(
            f"| {loss} | {'shared per batch' if sharing == 'batch' else 'per positive'} | "
            f"{n} | {ours:.1f} | {theirs:.1f}{note} | {theirs / ours:.1f}x | {r1:.4f} | {r2s} |"
        )


if __name__ == "__main__":
    main()
