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

from linrec._kernels.topk import _select_row

# Loss codes: the same integers as linrec.losses.LossSpec.code.
BPR, INFONCE, DEBIASED_INFONCE, MINE, MINE_PLUS, INFONCE_PLUS = 0, 1, 2, 3, 4, 5
CCL, DEBIASED_CCL, MSE, DEBIASED_MSE, DEBIASED_MSE_PU = 6, 7, 8, 9, 10

# Indices into the float64 ``params`` array.
P_TEMPERATURE, P_NEG_WEIGHT, P_MARGIN, P_BALANCE, P_EPS = 0, 1, 2, 3, 4

ADAM, ADAGRAD, SGD = 0, 1, 2
UNIFORM, POPULARITY = 0, 1

_NORM_FLOOR = 1e-12
# Reassociation and contraction only (no "nnan"/"ninf": the guards on norms stay intact).
_FASTMATH = {"reassoc", "contract", "nsz"}


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
        inv_t = 1.0 / t
        s0 = y0 * inv_t
        mx = s0
        for a in range(e0, length):
            mx = max(mx, y[a] * inv_t)
        e_pos = np.exp(s0 - mx)
        z = e_pos
        for a in range(e0, length):
            g[a] = np.exp(y[a] * inv_t - mx)
            z += g[a]
        loss = -s0 + mx + np.log(z)
        c = inv_t / z
        g[0] = (e_pos / z - 1.0) * inv_t
        for a in range(e0, length):
            g[a] *= c
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
    elif code == MINE or code == MINE_PLUS or code == INFONCE_PLUS:
        # -s+ + bal * log(eps e^{s+} + sum_j e^{s_j}) (- bal log N for MINE/MINE+)
        inv_t = 1.0 / t
        bal = 1.0 if code == MINE else lam
        eps_pos = eps if code == INFONCE_PLUS else 0.0
        s0 = y0 * inv_t
        mx = y[e0] * inv_t
        for a in range(e0, length):
            mx = max(mx, y[a] * inv_t)
        if eps_pos > 0.0:
            mx = max(mx, s0)
        e_pos = eps_pos * np.exp(s0 - mx)
        z = e_pos
        for a in range(e0, length):
            g[a] = np.exp(y[a] * inv_t - mx)
            z += g[a]
        loss = -s0 + bal * (mx + np.log(z))
        if code != INFONCE_PLUS:
            loss -= bal * np.log(n_neg)
        g[0] = (bal * e_pos / z - 1.0) * inv_t
        c = bal * inv_t / z
        for a in range(e0, length):
            g[a] *= c
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
    share,
    shared_q,
    shared_dq,
    shared_buf,
    nonzero,
):
    """Loss of the pair (user row u, targets) and gradients (times ``scale``) into ``grad``.

    Targets are ``[i+, k_1..k_M, j_1..j_N]``. Without ``share`` every target is read from its
    row of ``W``. With ``share`` the N negatives are the batch's shared ones: their vectors
    (unit-normalised for cosine scores) are the columns of ``shared_q`` (d x N), contiguous
    and in cache, and their gradients with respect to those columns accumulate in
    ``shared_dq`` (d x N; turned into row gradients once per batch by
    :func:`_finish_shared`). ``shared_buf`` is (2, N) scratch of the dtype of ``W``,
    ``nonzero`` (N,) int64 scratch.

    Inlined into its callers, which are compiled with reassociation allowed so that the
    d-length loops vectorise; the loss itself (:func:`loss_grad`) is compiled without it.
    Accumulators take the dtype of ``W`` (float32 training runs in float32 SIMD lanes).
    """
    d = W.shape[1]
    length = 1 + n_extra + n_neg
    n_row_targets = 1 + n_extra if share else length
    p = W[u]
    inv_p = 1.0
    if cosine:
        pp = p[0] * p[0]
        for k in range(1, d):
            pp += p[k] * p[k]
        inv_p = 1.0 / max(np.sqrt(pp), _NORM_FLOOR)
    for a in range(n_row_targets):
        q = W[n_users + targets[a]]
        dot = p[0] * q[0]
        qq = q[0] * q[0]
        for k in range(1, d):
            dot += p[k] * q[k]
            qq += q[k] * q[k]
        if cosine:
            inv_q[a] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR)
            y[a] = dot * inv_p * inv_q[a]
        else:
            y[a] = dot
    e0 = 1 + n_extra
    if share:
        # matrix-vector product with the transposed block: the inner loop runs over the N
        # negatives, contiguous, without horizontal reductions
        sy = shared_buf[0]
        sy[:] = 0.0
        for k in range(d):
            pk = p[k]
            qk = shared_q[k]
            for j in range(n_neg):
                sy[j] += pk * qk[j]
        for j in range(n_neg):
            y[e0 + j] = sy[j] * inv_p
    loss = loss_grad(code, y, n_extra, n_neg, tau, params, g)
    acc[:] = 0.0
    sum_gy = 0.0
    for a in range(n_row_targets):
        row = n_users + targets[a]
        if update_items:
            count = _touch(row, flags, touched, count)
        ga = g[a] * scale
        if ga == 0.0:
            continue
        q = W[row]
        gq = grad[row]
        if cosine:
            # dy/dp = (q^ - y p^)/|p|,  dy/dq = (p^ - y q^)/|q|
            cq = W.dtype.type(ga * inv_q[a])
            sum_gy += ga * y[a]
            for k in range(d):
                acc[k] += cq * q[k]
            if update_items:
                cp_item = W.dtype.type(ga * inv_q[a] * inv_p)
                cq_item = W.dtype.type(ga * y[a] * inv_q[a] * inv_q[a])
                for k in range(d):
                    gq[k] += cp_item * p[k] - cq_item * q[k]
        else:
            ga_t = W.dtype.type(ga)
            for k in range(d):
                acc[k] += ga_t * q[k]
            if update_items:
                for k in range(d):
                    gq[k] += ga_t * p[k]
    if share:
        # shared_q holds q (dot) or q^ (cosine), transposed: dL/dq^_j = g_j p^
        gs = shared_buf[1]
        n_nonzero = 0
        for j in range(n_neg):
            ga = g[e0 + j] * scale
            gs[j] = ga
            sum_gy += ga * y[e0 + j]
            if ga != 0.0:
                nonzero[n_nonzero] = j
                n_nonzero += 1
        if 4 * n_nonzero < n_neg:
            # margin losses (CCL) leave most negatives inactive: visit only the active ones
            for k in range(d):
                qk = shared_q[k]
                dqk = shared_dq[k]
                pk = W.dtype.type(p[k] * inv_p)
                a_k = 0.0
                for c in range(n_nonzero):
                    j = nonzero[c]
                    a_k += qk[j] * gs[j]
                    dqk[j] += pk * gs[j]
                acc[k] += a_k
        else:
            for k in range(d):
                qk = shared_q[k]
                dqk = shared_dq[k]
                a_k = qk[0] * gs[0]
                for j in range(1, n_neg):
                    a_k += qk[j] * gs[j]
                acc[k] += a_k
                pk = W.dtype.type(p[k] * inv_p)
                for j in range(n_neg):
                    dqk[j] += pk * gs[j]
    count = _touch(u, flags, touched, count)
    gp = grad[u]
    if cosine:
        c_acc = W.dtype.type(inv_p)
        c_p = W.dtype.type(sum_gy * inv_p * inv_p)
        for k in range(d):
            gp[k] += c_acc * acc[k] - c_p * p[k]
    else:
        for k in range(d):
            gp[k] += acc[k]
    return loss, count


@njit(inline="always")
def _gather_shared(W, n_users, shared, cosine, shared_q, inv_qs):
    """Copy the shared negatives' rows into the columns of ``shared_q`` (d x N), unit-normalised
    for cosine scores."""
    d = W.shape[1]
    for j in range(shared.shape[0]):
        q = W[n_users + shared[j]]
        qq = 0.0
        for k in range(d):
            qq += q[k] * q[k]
        inv_qs[j] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR) if cosine else 1.0
        for k in range(d):
            shared_q[k, j] = q[k] * inv_qs[j]


@njit(inline="always")
def _finish_shared(
    n_users, shared, cosine, shared_q, inv_qs, shared_dq, grad, flags, touched, count
):
    """Add the shared negatives' gradients to their rows of ``grad`` and reset ``shared_dq``.

    Cosine: dL/dq = (dL/dq^ - (dL/dq^ . q^) q^) / |q|.
    """
    d = shared_q.shape[0]
    for j in range(shared.shape[0]):
        row = n_users + shared[j]
        count = _touch(row, flags, touched, count)
        gq = grad[row]
        if cosine:
            proj = 0.0
            for k in range(d):
                proj += shared_dq[k, j] * shared_q[k, j]
            c = inv_qs[j]
            for k in range(d):
                gq[k] += c * (shared_dq[k, j] - proj * shared_q[k, j])
        else:
            for k in range(d):
                gq[k] += shared_dq[k, j]
        for k in range(d):
            shared_dq[k, j] = 0.0
    return count


@njit(cache=True, fastmath=_FASTMATH)
def pairs_loss_and_grad(
    W, users, targets, tau, n_users, code, params, cosine, n_extra, n_neg, share
):
    """Summed loss of explicit pairs and its exact gradient w.r.t. ``W`` (serial).

    ``users`` (B,), ``targets`` (B, 1 + M + N) item ids, ``tau`` (B,). With ``share`` the
    negatives of the first row are used as the shared negatives of every pair. Used by the
    tests: the training kernel runs the same per-pair code.
    """
    n_rows, d = W.shape
    length = 1 + n_extra + n_neg
    grad = np.zeros((n_rows, d), W.dtype)
    flags = np.zeros(n_rows, np.uint8)
    touched = np.empty(n_rows, np.int64)
    y = np.empty(length)
    g = np.empty(length)
    inv_q = np.empty(length)
    acc = np.empty(d, W.dtype)
    shared = targets[0, 1 + n_extra :].copy()
    shared_q = np.empty((d, n_neg), W.dtype)
    shared_dq = np.zeros((d, n_neg), W.dtype)
    shared_buf = np.empty((2, n_neg), W.dtype)
    nonzero = np.empty(n_neg, np.int64)
    inv_qs = np.empty(n_neg)
    if share:
        _gather_shared(W, n_users, shared, cosine, shared_q, inv_qs)
    total = 0.0
    count = 0
    for b in range(users.shape[0]):
        loss, count = _pair_forward_backward(
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
            count,
            y,
            g,
            inv_q,
            acc,
            share,
            shared_q,
            shared_dq,
            shared_buf,
            nonzero,
        )
        total += loss
    if share:
        _finish_shared(
            n_users, shared, cosine, shared_q, inv_qs, shared_dq, grad, flags, touched, count
        )
    return total, grad


# --------------------------------------------------------------------------- training
@njit(inline="always")
def _sample_negative(state, n_items, sampler, pop_items):
    state, r = _next(state)
    if sampler == UNIFORM:
        return state, _bounded(r, n_items)
    return state, pop_items[_bounded(r, pop_items.shape[0])]


@njit(inline="always")
def _sample_targets(
    state,
    item,
    u,
    indptr,
    indices,
    n_items,
    n_extra,
    n_neg,
    sampler,
    pop_items,
    shared_negatives,
    share,
    targets,
):
    targets[0] = item
    start = indptr[u]
    n_u = indptr[u + 1] - start
    for a in range(n_extra):
        state, r = _next(state)
        targets[1 + a] = indices[start + _bounded(r, n_u)]
    e0 = 1 + n_extra
    for a in range(n_neg):
        if share:
            targets[e0 + a] = shared_negatives[a]
        else:
            state, targets[e0 + a] = _sample_negative(state, n_items, sampler, pop_items)
    return state


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
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
    share_negatives,
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
    With ``share_negatives`` one set of N negatives is drawn per batch (from the stream keyed
    by position ``n_pairs + batch``, which no pair uses) and used by every pair of the batch:
    each pair still sees N independent draws from the sampler, and the N rows stay in cache
    for the whole batch.
    Returns (sum of pair losses, optimiser step count after the epoch).
    """
    n_rows, d = W.shape
    n_pairs = order.shape[0]
    length = 1 + n_extra + n_neg
    n_batches = (n_pairs + batch_size - 1) // batch_size
    counts = np.zeros(n_threads, np.int64)
    thread_loss = np.zeros(n_threads)
    union = np.empty(n_rows, np.int64)
    shared = np.empty(n_neg, np.int64)
    shared_q = np.empty((d, n_neg if share_negatives else 0), W.dtype)
    inv_qs = np.empty(n_neg)
    total_loss = 0.0
    for batch in range(n_batches):
        lo = batch * batch_size
        hi = min(n_pairs, lo + batch_size)
        scale = 1.0 / (hi - lo)
        if share_negatives:
            # a stream no pair uses: pair positions are >= 0, this key is n_pairs + batch
            state = _pair_state(seed, epoch, n_pairs + batch)
            for a in range(n_neg):
                state, shared[a] = _sample_negative(state, n_items, sampler, pop_items)
            _gather_shared(W, n_users, shared, cosine, shared_q, inv_qs)
        for t in prange(n_threads):
            t_lo = lo + ((hi - lo) * t) // n_threads
            t_hi = lo + ((hi - lo) * (t + 1)) // n_threads
            targets = np.empty(length, np.int64)
            y = np.empty(length)
            g = np.empty(length)
            inv_q = np.empty(length)
            acc = np.empty(d, W.dtype)
            shared_dq = np.zeros(shared_q.shape, W.dtype)
            shared_buf = np.empty((2, shared_q.shape[1]), W.dtype)
            nonzero = np.empty(shared_q.shape[1], np.int64)
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
                    shared,
                    share_negatives,
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
                    share_negatives,
                    shared_q,
                    shared_dq,
                    shared_buf,
                    nonzero,
                )
                loss_sum += loss
            if share_negatives and update_items:
                count = _finish_shared(
                    n_users,
                    shared,
                    cosine,
                    shared_q,
                    inv_qs,
                    shared_dq,
                    grad[t],
                    flags[t],
                    touched[t],
                    count,
                )
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


# --------------------------------------------------------------------------- fold-in
@njit(inline="always")
def _row_update(
    W, row, gvec, moment1, moment2, optimizer, learning_rate, l2, beta1, beta2, opt_eps, step
):
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    for k in range(W.shape[1]):
        gk = gvec[k] + l2 * W[row, k]
        if optimizer == ADAM:
            m = beta1 * moment1[k] + (1.0 - beta1) * gk
            v = beta2 * moment2[k] + (1.0 - beta2) * gk * gk
            moment1[k] = m
            moment2[k] = v
            W[row, k] -= learning_rate * (m / bias1) / (np.sqrt(v / bias2) + opt_eps)
        elif optimizer == ADAGRAD:
            v = moment2[k] + gk * gk
            moment2[k] = v
            W[row, k] -= learning_rate * gk / (np.sqrt(v) + opt_eps)
        else:
            W[row, k] -= learning_rate * gk


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def fold_in(
    W,
    n_new,
    indptr,
    indices,
    tau,
    code,
    params,
    cosine,
    n_extra,
    n_neg,
    sampler,
    pop_items,
    seed,
    n_epochs,
    init_std,
    optimizer,
    learning_rate,
    l2,
    beta1,
    beta2,
    opt_eps,
):
    """Fit the first ``n_new`` rows of ``W`` (new users) with the item rows frozen.

    Each user is optimised on its own: its initial vector and all its samples come from a
    generator keyed by ``seed`` and the user's item ids, and it takes one optimiser step per
    positive (batch of one pair, fresh negatives). A user's result therefore depends only on
    its own history, not on which other users are folded in with it or on the thread count.
    """
    d = W.shape[1]
    length = 1 + n_extra + n_neg
    grad = np.zeros((n_new, d), W.dtype)
    # each user writes only its own entries of these shared arrays
    flags = np.zeros(n_new, np.uint8)
    for u in prange(n_new):
        start = indptr[u]
        n_u = indptr[u + 1] - start
        key = _mix(np.uint64(seed) ^ np.uint64(0x632BE59BD9B4E019))
        for a in range(n_u):
            key = _mix(key ^ (np.uint64(indices[start + a]) + np.uint64(0x9E3779B97F4A7C15)))
        state = key
        for k in range(0, d, 2):
            # Box-Muller: two normals from two uniforms in (0, 1]
            state, r1 = _next(state)
            state, r2 = _next(state)
            u1 = (np.float64(r1 >> np.uint64(11)) + 1.0) / 9007199254740992.0
            u2 = np.float64(r2 >> np.uint64(11)) / 9007199254740992.0
            radius = np.sqrt(-2.0 * np.log(u1)) * init_std
            W[u, k] = radius * np.cos(2.0 * np.pi * u2)
            if k + 1 < d:
                W[u, k + 1] = radius * np.sin(2.0 * np.pi * u2)
        if n_u == 0:
            continue
        targets = np.empty(length, np.int64)
        y = np.empty(length)
        g = np.empty(length)
        inv_q = np.empty(length)
        acc = np.empty(d, W.dtype)
        touched = np.empty(1, np.int64)
        moment1 = np.zeros(d)
        moment2 = np.zeros(d)
        dummy = np.empty(0, np.int64)
        empty_q = np.empty((d, 0), W.dtype)
        step = 0
        for epoch in range(n_epochs):
            state, r = _next(key ^ np.uint64(epoch + 1))
            offset = _bounded(r, n_u)
            for a in range(n_u):
                pair = start + (offset + a) % n_u
                state = _pair_state(key, epoch, a)
                state = _sample_targets(
                    state,
                    indices[pair],
                    u,
                    indptr,
                    indices,
                    W.shape[0] - n_new,
                    n_extra,
                    n_neg,
                    sampler,
                    pop_items,
                    dummy,
                    False,
                    targets,
                )
                grad[u, :] = 0.0
                _pair_forward_backward(
                    W,
                    u,
                    targets,
                    n_new,
                    tau[u],
                    code,
                    params,
                    cosine,
                    n_extra,
                    n_neg,
                    1.0,
                    False,
                    grad,
                    flags,
                    touched,
                    0,
                    y,
                    g,
                    inv_q,
                    acc,
                    False,
                    empty_q,
                    empty_q,
                    empty_q,
                    dummy,
                )
                step += 1
                _row_update(
                    W,
                    u,
                    grad[u],
                    moment1,
                    moment2,
                    optimizer,
                    learning_rate,
                    l2,
                    beta1,
                    beta2,
                    opt_eps,
                    step,
                )
    return W


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def factor_topk(U, V, k, excl_indptr, excl_indices):
    """Top-``k`` items by ``U[r] . V[i]`` for every row r, excluding each row's CSR items.

    Scores one row at a time into a private buffer and selects immediately (same tie rule as
    :func:`linrec._kernels.topk.topk_rows`), so no (rows x n_items) matrix is materialised:
    validation during training stays cheap in memory and runs in numba's thread pool.
    """
    n_rows, d = U.shape
    n_items = V.shape[0]
    out_idx = np.empty((n_rows, k), np.int64)
    out_val = np.empty((n_rows, k), U.dtype)
    no_candidates = np.ones(1, np.bool_)
    for r in prange(n_rows):
        scores = np.empty(n_items, U.dtype)
        u = U[r]
        for i in range(n_items):
            v = V[i]
            s = u[0] * v[0]
            for c in range(1, d):
                s += u[c] * v[c]
            scores[i] = s
        start = excl_indptr[r]
        stop = excl_indptr[r + 1]
        _select_row(
            scores,
            k,
            excl_indices[start:stop],
            no_candidates,
            False,
            out_idx[r],
            out_val[r],
        )
    return out_idx, out_val
