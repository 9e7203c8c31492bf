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

Each side runs in its own process (``--worker``), which reports wall and CPU seconds per
epoch (median over the epochs; CPU time is the fairer figure on a loaded machine), Recall@20
and its peak resident memory (``ru_maxrss``; the figure after loading the data is printed
too, so the training's own footprint is the difference).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
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
    """Returns (seconds per epoch, CPU seconds per epoch, extrapolated?, U, V)."""
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
    cpu_times = []
    extrapolated = False
    for _ in range(epochs):
        perm = torch.randperm(n_pairs)
        start = time.perf_counter()
        cpu_start = _cpu_seconds()
        done = 0
        for b in range(n_batches):
            if max_batches is not None and b == _WARMUP_BATCHES:
                # partial epochs: the first batches (allocator warm-up) are not timed
                start = time.perf_counter()
                cpu_start = _cpu_seconds()
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
        cpu_times.append((_cpu_seconds() - cpu_start) * n_batches / done)
        if extrapolated:
            break
    return (
        float(np.median(times)),
        float(np.median(cpu_times)),
        extrapolated,
        user.weight.detach().numpy(),
        item.weight.detach().numpy(),
    )


def linrec_train(loss, cfg, sharing, train, epochs, threads, seed=0):
    """Returns (seconds per epoch, CPU seconds per epoch, U, V)."""
    params = {k: v for k, v in cfg.items() if k != "score"}
    cpu = []
    last = [0.0]

    def record_cpu(model, epoch):
        # CPU seconds since the previous epoch (the callback runs right after each epoch)
        now = _cpu_seconds()
        cpu.append(now - last[0])
        last[0] = now

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
    last[0] = _cpu_seconds()
    model.fit(train, callback=record_cpu)
    # the first epoch's CPU time also holds fit's set-up (validation, pair arrays)
    return (
        float(np.median(model.epoch_times_)),
        float(np.median(cpu[1:] if len(cpu) > 1 else cpu)),
        model.user_factors_,
        model.item_factors_,
    )


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args) -> dict:
    """One (side, loss, sharing) run in this process: times, Recall@20 and peak memory."""
    train, test = load_lightgcn(args.data)
    cfg = CONFIGS[args.loss]
    if args.side == "linrec":
        # load the compiled kernels from numba's cache before timing anything
        linrec_train(args.loss, cfg, args.sharing, train[:200], 1, args.threads)
    rss_before = _peak_rss_mib()
    if args.side == "linrec":
        wall, cpu, U, V = linrec_train(
            args.loss, cfg, args.sharing, train, args.epochs, args.threads
        )
        extrapolated = False
    else:
        full = args.sharing == "batch" and not args.no_torch_full
        wall, cpu, extrapolated, U, V = torch_train(
            args.loss,
            cfg,
            args.sharing,
            train,
            args.epochs if full else 1,
            args.threads,
            None if full else args.torch_batches,
        )
    rss_peak = _peak_rss_mib()
    recall = (
        float("nan") if extrapolated else recall_at_20(U, V, cfg["score"] == "cosine", train, test)
    )
    return {
        "wall": wall,
        "cpu": cpu,
        "extrapolated": extrapolated,
        "recall": recall,
        "rss_data_mib": rss_before,
        "rss_peak_mib": rss_peak,
        "load": os.getloadavg()[0],
    }


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
    parser.add_argument(
        "--torch-wait-policy",
        choices=["passive", "default"],
        default="passive",
        help="OMP_WAIT_POLICY of the PyTorch process ('default': unset, libgomp spins a while "
        "between parallel regions; faster on an idle machine, slower on a loaded one)",
    )
    parser.add_argument(
        "--worker", nargs=3, metavar=("SIDE", "LOSS", "SHARING"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        args.side, args.loss, args.sharing = args.worker
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    print(f"load before: {os.getloadavg()}", flush=True)
    rows = []
    for sharing in args.sharing:
        for loss in args.losses:
            if sharing == "pair" and loss != "infonce":
                continue  # per-positive negatives: the ANCHORS configuration only
            result = {}
            for side in ("linrec", "torch"):
                # each side in a fresh process: its own peak memory, no shared thread pools
                command = [sys.executable, __file__, "--worker", side, loss, sharing]
                command += ["--data", args.data, "--epochs", str(args.epochs)]
                command += [
                    "--threads",
                    str(args.threads),
                    "--torch-batches",
                    str(args.torch_batches),
                ]
                if args.no_torch_full:
                    command.append("--no-torch-full")
                env = dict(os.environ)
                if side == "torch" and args.torch_wait_policy == "default":
                    env.pop("OMP_WAIT_POLICY", None)
                t0 = time.perf_counter()
                out = subprocess.run(
                    command, capture_output=True, text=True, check=True, env=env
                ).stdout
                line = next(x for x in out.splitlines() if x.startswith("RESULT "))
                result[side] = r = json.loads(line[len("RESULT ") :])
                print(
                    f"{side:6s} {loss} {sharing}: {r['wall']:.2f} s/epoch (CPU {r['cpu']:.2f} s)"
                    f"{' (extrapolated)' if r['extrapolated'] else ''}, Recall@20 "
                    f"{r['recall']:.4f}, peak RSS {r['rss_peak_mib']:.0f} MiB (after loading "
                    f"{r['rss_data_mib']:.0f}), load {r['load']:.1f} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
            rows.append((loss, sharing, CONFIGS[loss]["n_negatives"], result))
    print(f"\nload after: {os.getloadavg()}")
    print(
        "| loss | negatives | N | linrec s/epoch (CPU s) | PyTorch s/epoch (CPU s) | speed-up "
        f"(wall / CPU) | linrec Recall@20 | PyTorch Recall@20 (after {args.epochs} epochs) | "
        "peak RSS linrec / PyTorch (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for loss, sharing, n, result in rows:
        ours, theirs = result["linrec"], result["torch"]
        extra = theirs["extrapolated"]
        note = " (extrapolated from the first batches)" if extra else ""
        r2s = "n/a (partial epoch)" if extra else f"{theirs['recall']:.4f}"
        print(
            f"| {loss} | {'shared per batch' if sharing == 'batch' else 'per positive'} | {n} | "
            f"{ours['wall']:.2f} ({ours['cpu']:.2f}) | {theirs['wall']:.2f} "
            f"({theirs['cpu']:.2f}){note} | {theirs['wall'] / ours['wall']:.1f}x / "
            f"{theirs['cpu'] / ours['cpu']:.1f}x | {ours['recall']:.4f} | {r2s} | "
            f"{ours['rss_peak_mib']:.0f} / {theirs['rss_peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
