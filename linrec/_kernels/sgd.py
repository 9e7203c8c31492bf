"""numba kernels of contrastive matrix factorisation: losses, analytic gradients, optimisers.

Layout. User and item vectors live in one parameter table ``W`` of shape
(n_users + n_items, d): user u is row u, item i is row ``n_users + i``. One table means one
gradient buffer, one "touched rows" list and one optimiser for both sides.

Per training pair (u, i+) the targets are ``[i+, k_1..k_M, j_1..j_N]`` (positive, extra
positives, negatives); their scores ``y`` go through :func:`loss_grad`, which returns the loss
and dL/dy, then the chain rule through the score (dot or cosine) gives the gradients of
p_u and of every q.

Parallelism and determinism. A minibatch is cut into ``n_threads`` contiguous slices; thread t
accumulates the gradients of its slice into its own dense buffer ``grad[t]`` and records the
rows it touched. The buffers are then summed in thread order (0, 1, ...) row by row, and the
optimiser updates the touched rows (each row is its own output, so the row loop is parallel).
The random numbers of a pair come from a counter-based generator keyed by
(seed, epoch, position of the pair in the epoch), so the samples do not depend on the thread
count at all and results are bit-identical for a fixed seed and thread count.

Optimisers (``optimizer`` codes 0, 1, 2): lazy Adam (only the rows touched in a batch update
their moments, with the global step count in the bias correction: the behaviour of
``torch.optim.SparseAdam`` / TensorFlow's LazyAdam), Adagrad (lazy in the same way, which for
Adagrad is exact since untouched rows have zero gradient) and plain SGD. L2 regularisation
adds ``l2 * w`` to the gradient of each row used in the batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Loss codes: the same integers as linrec.losses.LossSpec.code.
BPR, INFONCE, DEBIASED_INFONCE, MINE, MINE_PLUS, INFONCE_PLUS = 0, 1, 2, 3, 4, 5
CCL, DEBIASED_CCL, MSE, DEBIASED_MSE, DEBIASED_MSE_PU = 6, 7, 8, 9, 10

# Indices into the float64 ``params`` array.
P_TEMPERATURE, P_NEG_WEIGHT, P_MARGIN, P_BALANCE, P_EPS = 0, 1, 2, 3, 4

ADAM, ADAGRAD, SGD = 0, 1, 2
UNIFORM, POPULARITY = 0, 1

_NORM_FLOOR = 1e-12


# --------------------------------------------------------------------------- random numbers
@njit(inline="always")
def _mix(z):
    # splitmix64 finaliser: a bijection of uint64 with good avalanche.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _pair_state(seed, epoch, position):
    s = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    s = _mix(s ^ (np.uint64(epoch) * np.uint64(0xD1B54A32D192ED03)))
    return _mix(s ^ (np.uint64(position) * np.uint64(0x8CB92BA72F3D8DD7)))


@njit(inline="always")
def _next(state):
    state = state + np.uint64(0x9E3779B97F4A7C15)
    return state, _mix(state)


@njit(inline="always")
def _bounded(r, n):
    # Lemire's multiply-shift: maps the high 32 bits of r to [0, n) (n < 2**32).
    return np.int64(((r >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


# --------------------------------------------------------------------------- losses
@njit(cache=True)
def loss_grad(code, y, n_extra, n_neg, tau, params, g):
    """Loss of one pair and its gradient with respect to the scores.

    ``y`` holds ``[y+, y_k (M), y_j (N)]``; ``g`` (same length) receives dL/dy. Returns the
    loss (float64). Formulas: :mod:`linrec.losses`.
    """
    t = params[P_TEMPERATURE]
    w = params[P_NEG_WEIGHT]
    margin = params[P_MARGIN]
    lam = params[P_BALANCE]
    eps = params[P_EPS]
    e0 = 1 + n_extra  # first negative
    length = e0 + n_neg
    for a in range(length):
        g[a] = 0.0
    y0 = y[0]
    loss = 0.0
    if code == BPR:
        gpos = 0.0
        for a in range(e0, length):
            x = y[a] - y0
            ax = abs(x)
            loss += max(x, 0.0) + np.log1p(np.exp(-ax))
            ex = np.exp(-ax)
            sig = 1.0 / (1.0 + ex) if x >= 0 else ex / (1.0 + ex)
            g[a] = sig
            gpos -= sig
        g[0] = gpos
    elif code == INFONCE:
        s0 = y0 / t
        mx = s0
        for a in range(e0, length):
            mx = max(mx, y[a] / t)
        z = np.exp(s0 - mx)
        for a in range(e0, length):
            z += np.exp(y[a] / t - mx)
        loss = -s0 + mx + np.log(z)
        g[0] = (np.exp(s0 - mx) / z - 1.0) / t
        for a in range(e0, length):
            g[a] = np.exp(y[a] / t - mx) / z / t
    elif code == DEBIASED_INFONCE:
        s0 = y0 / t
        mx = max(s0, -1.0 / t)
        for a in range(1, length):
            mx = max(mx, y[a] / t)
        mean_neg = 0.0
        for a in range(e0, length):
            mean_neg += np.exp(y[a] / t - mx)
        mean_neg /= n_neg
        mean_extra = 0.0
        for a in range(1, e0):
            mean_extra += np.exp(y[a] / t - mx)
        mean_extra /= n_extra
        graw = (mean_neg - tau * mean_extra) / (1.0 - tau)
        floor = np.exp(-1.0 / t - mx)
        active = graw > floor
        gg = graw if active else floor
        e_pos = np.exp(s0 - mx)
        z = e_pos + n_neg * gg
        loss = -s0 + mx + np.log(z)
        g[0] = (e_pos / z - 1.0) / t
        if active:
            cneg = 1.0 / (z * (1.0 - tau) * t)
            for a in range(e0, length):
                g[a] = cneg * np.exp(y[a] / t - mx)
            cext = -n_neg * tau / (z * (1.0 - tau) * n_extra * t)
            for a in range(1, e0):
                g[a] = cext * np.exp(y[a] / t - mx)
    elif code == MINE or code == MINE_PLUS:
        bal = 1.0 if code == MINE else lam
        mx = y[e0] / t
        for a in range(e0, length):
            mx = max(mx, y[a] / t)
        z = 0.0
        for a in range(e0, length):
            z += np.exp(y[a] / t - mx)
        loss = -y0 / t + bal * (mx + np.log(z) - np.log(n_neg))
        g[0] = -1.0 / t
        for a in range(e0, length):
            g[a] = bal * np.exp(y[a] / t - mx) / z / t
    elif code == INFONCE_PLUS:
        s0 = y0 / t
        mx = y[e0] / t
        for a in range(e0, length):
            mx = max(mx, y[a] / t)
        if eps > 0.0:
            mx = max(mx, s0)
        e_pos = eps * np.exp(s0 - mx)
        z = e_pos
        for a in range(e0, length):
            z += np.exp(y[a] / t - mx)
        loss = -s0 + lam * (mx + np.log(z))
        g[0] = (lam * e_pos / z - 1.0) / t
        for a in range(e0, length):
            g[a] = lam * np.exp(y[a] / t - mx) / z / t
    elif code == CCL or code == DEBIASED_CCL:
        wpos = 1.0 if code == CCL else tau
        if y0 < 1.0:
            loss = wpos * (1.0 - y0)
            g[0] = -wpos
        cneg = w / n_neg
        for a in range(e0, length):
            if y[a] > margin:
                loss += cneg * (y[a] - margin)
                g[a] = cneg
        if code == DEBIASED_CCL:
            cext = w * tau / n_extra
            for a in range(1, e0):
                if y[a] > margin:
                    loss -= cext * (y[a] - margin)
                    g[a] = -cext
    else:  # MSE, DEBIASED_MSE, DEBIASED_MSE_PU
        wpos = tau if code == DEBIASED_MSE_PU else 1.0
        cneg = w / (1.0 - tau) if code == DEBIASED_MSE else w
        loss = wpos * (1.0 - y0) ** 2
        g[0] = -2.0 * wpos * (1.0 - y0)
        for a in range(e0, length):
            loss += cneg / n_neg * y[a] * y[a]
            g[a] = 2.0 * cneg / n_neg * y[a]
        if code != MSE:
            cext = cneg * tau / n_extra
            for a in range(1, e0):
                loss -= cext * y[a] * y[a]
                g[a] = -2.0 * cext * y[a]
    return loss


# --------------------------------------------------------------------------- one pair
@njit(inline="always")
def _touch(row, flags, touched, count):
    if flags[row] == 0:
        flags[row] = 1
        touched[count] = row
        count += 1
    return count


@njit(inline="always")
def _pair_forward_backward(
    W,
    u,
    targets,
    n_users,
    tau,
    code,
    params,
    cosine,
    n_extra,
    n_neg,
    scale,
    update_items,
    grad,
    flags,
    touched,
    count,
    y,
    g,
    inv_q,
    acc,
):
    """Loss of the pair (user row u, targets) and gradients (times ``scale``) into ``grad``."""
    d = W.shape[1]
    length = 1 + n_extra + n_neg
    inv_p = 1.0
    if cosine:
        pp = 0.0
        for k in range(d):
            pp += W[u, k] * W[u, k]
        inv_p = 1.0 / max(np.sqrt(pp), _NORM_FLOOR)
    for a in range(length):
        row = n_users + targets[a]
        dot = 0.0
        qq = 0.0
        for k in range(d):
            dot += W[u, k] * W[row, k]
            qq += W[row, k] * W[row, k]
        if cosine:
            inv_q[a] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR)
            y[a] = dot * inv_p * inv_q[a]
        else:
            y[a] = dot
    loss = loss_grad(code, y, n_extra, n_neg, tau, params, g)
    for k in range(d):
        acc[k] = 0.0
    sum_gy = 0.0
    for a in range(length):
        row = n_users + targets[a]
        if update_items:
            count = _touch(row, flags, touched, count)
        ga = g[a] * scale
        if ga == 0.0:
            continue
        if cosine:
            # dy/dp = (q^ - y p^)/|p|,  dy/dq = (p^ - y q^)/|q|
            cq = ga * inv_q[a]
            sum_gy += ga * y[a]
            for k in range(d):
                acc[k] += cq * W[row, k]
            if update_items:
                cp_item = cq * inv_p
                cq_item = cq * y[a] * inv_q[a]
                for k in range(d):
                    grad[row, k] += cp_item * W[u, k] - cq_item * W[row, k]
        else:
            for k in range(d):
                acc[k] += ga * W[row, k]
            if update_items:
                for k in range(d):
                    grad[row, k] += ga * W[u, k]
    count = _touch(u, flags, touched, count)
    if cosine:
        for k in range(d):
            grad[u, k] += inv_p * (acc[k] - sum_gy * W[u, k] * inv_p)
    else:
        for k in range(d):
            grad[u, k] += acc[k]
    return loss, count


@njit(cache=True)
def pairs_loss_and_grad(W, users, targets, tau, n_users, code, params, cosine, n_extra, n_neg):
    """Summed loss of explicit pairs and its exact gradient w.r.t. ``W`` (float64, serial).

    ``users`` (B,), ``targets`` (B, 1 + M + N) item ids, ``tau`` (B,). Used by the tests and
    by nothing else: the training kernel runs the same per-pair code.
    """
    n_rows, d = W.shape
    length = 1 + n_extra + n_neg
    grad = np.zeros((n_rows, d))
    flags = np.zeros(n_rows, np.uint8)
    touched = np.empty(n_rows, np.int64)
    y = np.empty(length)
    g = np.empty(length)
    inv_q = np.empty(length)
    acc = np.empty(d)
    total = 0.0
    for b in range(users.shape[0]):
        loss, _ = _pair_forward_backward(
            W,
            users[b],
            targets[b],
            n_users,
            tau[b],
            code,
            params,
            cosine,
            n_extra,
            n_neg,
            1.0,
            True,
            grad,
            flags,
            touched,
            0,
            y,
            g,
            inv_q,
            acc,
        )
        flags[:] = 0
        total += loss
    return total, grad


# --------------------------------------------------------------------------- training
@njit(inline="always")
def _sample_targets(
    state, item, u, indptr, indices, n_items, n_extra, n_neg, sampler, pop_items, targets
):
    targets[0] = item
    start = indptr[u]
    n_u = indptr[u + 1] - start
    for a in range(n_extra):
        state, r = _next(state)
        targets[1 + a] = indices[start + _bounded(r, n_u)]
    e0 = 1 + n_extra
    for a in range(n_neg):
        state, r = _next(state)
        if sampler == UNIFORM:
            targets[e0 + a] = _bounded(r, n_items)
        else:
            targets[e0 + a] = pop_items[_bounded(r, pop_items.shape[0])]
    return state


@njit(parallel=True, cache=True)
def train_epoch(
    W,
    moment1,
    moment2,
    indptr,
    indices,
    pair_users,
    order,
    tau,
    n_users,
    n_items,
    code,
    params,
    cosine,
    n_extra,
    n_neg,
    sampler,
    pop_items,
    batch_size,
    n_threads,
    seed,
    epoch,
    optimizer,
    learning_rate,
    l2,
    beta1,
    beta2,
    opt_eps,
    step,
    update_limit,
    update_items,
    grad,
    flags,
    touched,
    stamp,
):
    """One epoch of minibatch training over the pairs ``order`` (indices into ``indices``).

    ``grad`` (n_threads, n_rows, d) must be zero on entry and is zero on exit; ``flags``
    (n_threads, n_rows) likewise; ``touched`` (n_threads, n_rows) and ``stamp`` (n_rows,) are
    scratch. Only rows below ``update_limit`` are updated (fold-in freezes the items).
    Returns (sum of pair losses, optimiser step count after the epoch).
    """
    n_rows, d = W.shape
    n_pairs = order.shape[0]
    length = 1 + n_extra + n_neg
    n_batches = (n_pairs + batch_size - 1) // batch_size
    counts = np.zeros(n_threads, np.int64)
    thread_loss = np.zeros(n_threads)
    union = np.empty(n_rows, np.int64)
    total_loss = 0.0
    for batch in range(n_batches):
        lo = batch * batch_size
        hi = min(n_pairs, lo + batch_size)
        scale = 1.0 / (hi - lo)
        for t in prange(n_threads):
            t_lo = lo + ((hi - lo) * t) // n_threads
            t_hi = lo + ((hi - lo) * (t + 1)) // n_threads
            targets = np.empty(length, np.int64)
            y = np.empty(length)
            g = np.empty(length)
            inv_q = np.empty(length)
            acc = np.empty(d)
            count = 0
            loss_sum = 0.0
            for position in range(t_lo, t_hi):
                pair = order[position]
                u = pair_users[pair]
                state = _pair_state(seed, epoch, position)
                state = _sample_targets(
                    state,
                    indices[pair],
                    u,
                    indptr,
                    indices,
                    n_items,
                    n_extra,
                    n_neg,
                    sampler,
                    pop_items,
                    targets,
                )
                loss, count = _pair_forward_backward(
                    W,
                    u,
                    targets,
                    n_users,
                    tau[u],
                    code,
                    params,
                    cosine,
                    n_extra,
                    n_neg,
                    scale,
                    update_items,
                    grad[t],
                    flags[t],
                    touched[t],
                    count,
                    y,
                    g,
                    inv_q,
                    acc,
                )
                loss_sum += loss
            counts[t] = count
            thread_loss[t] = loss_sum
        # Union of touched rows, built serially; thread losses summed in thread order.
        n_union = 0
        step += 1
        for t in range(n_threads):
            total_loss += thread_loss[t]
            for c in range(counts[t]):
                row = touched[t, c]
                flags[t, row] = 0
                if stamp[row] != step:
                    stamp[row] = step
                    union[n_union] = row
                    n_union += 1
        bias1 = 1.0 - beta1**step
        bias2 = 1.0 - beta2**step
        for idx in prange(n_union):
            row = union[idx]
            update = row < update_limit
            for k in range(d):
                gk = 0.0
                for t in range(n_threads):
                    gk += grad[t, row, k]
                    grad[t, row, k] = 0.0
                if not update:
                    continue
                gk += l2 * W[row, k]
                if optimizer == ADAM:
                    m = beta1 * moment1[row, k] + (1.0 - beta1) * gk
                    v = beta2 * moment2[row, k] + (1.0 - beta2) * gk * gk
                    moment1[row, k] = m
                    moment2[row, k] = v
                    W[row, k] -= learning_rate * (m / bias1) / (np.sqrt(v / bias2) + opt_eps)
                elif optimizer == ADAGRAD:
                    v = moment2[row, k] + gk * gk
                    moment2[row, k] = v
                    W[row, k] -= learning_rate * gk / (np.sqrt(v) + opt_eps)
                else:
                    W[row, k] -= learning_rate * gk
    return total_loss, step


# --------------------------------------------------------------------------- scoring
@njit(parallel=True, cache=True)
def normalize_rows(A):
    """Rows of ``A`` divided by their Euclidean norm (zero rows stay zero)."""
    out = np.empty_like(A)
    for r in prange(A.shape[0]):
        s = 0.0
        for k in range(A.shape[1]):
            s += A[r, k] * A[r, k]
        inv = 1.0 / max(np.sqrt(s), _NORM_FLOOR)
        for k in range(A.shape[1]):
            out[r, k] = A[r, k] * inv
    return out
