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

Optimisers (``optimizer`` codes 0, 1, 2, 3): lazy Adam (only the rows touched in a batch update
their moments, with the global step count in the bias correction: the behaviour of
``torch.optim.SparseAdam`` / TensorFlow's LazyAdam), Adagrad (lazy in the same way, which for
Adagrad is exact since untouched rows have zero gradient), plain SGD, and dense Adam (every
row steps at every batch, untouched rows with a zero gradient, so their moments decay and
their momentum keeps moving them: ``torch.optim.Adam`` on an ``nn.Embedding`` table, the
optimiser of most published PyTorch baselines). L2 regularisation adds ``l2 * w`` to the
gradient of each row used in the batch.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from linrec._kernels.matmul import matmul_into, stack_array
from linrec._kernels.prefetch import prefetch_row
from linrec._kernels.topk import _select_row

# Loss codes: the same integers as linrec.losses.LossSpec.code.
BPR, INFONCE, DEBIASED_INFONCE, MINE, MINE_PLUS, INFONCE_PLUS = 0, 1, 2, 3, 4, 5
CCL, DEBIASED_CCL, MSE, DEBIASED_MSE, DEBIASED_MSE_PU = 6, 7, 8, 9, 10

# Indices into the float64 ``params`` array.
P_TEMPERATURE, P_NEG_WEIGHT, P_MARGIN, P_BALANCE, P_EPS, P_HARD = 0, 1, 2, 3, 4, 5

ADAM, ADAGRAD, SGD, DENSE_ADAM = 0, 1, 2, 3
UNIFORM, POPULARITY = 0, 1

_NORM_FLOOR = 1e-12
# Targets ahead whose item rows (forward) and gradient rows (backward) are prefetched in the
# per-positive path. Measured on Gowalla's shape (41k items, d = 64, 257 targets a pair, one
# thread; benchmarks/mf_pair_kernel.py): no prefetch 161-194 ns a target; rows 16 ahead and
# gradient rows 8 ahead 68-76 ns, the best of {8, 16, 24} x {2, 4, 6, 8, 16, 24}.
# Prefetching the gradient rows for writing, or from the forward loop, was slower.
_ROW_AHEAD = 16
_GRAD_AHEAD = 8
_UPDATE_AHEAD = 16
_INV_2_53 = 1.0 / 9007199254740992.0  # 53 random bits -> uniform in [0, 1)
# Reassociation and contraction only (no "nnan"/"ninf": the guards on norms stay intact).
_FASTMATH = {"reassoc", "contract", "nsz"}


def loss_params(
    temperature=1.0,
    negative_weight=1.0,
    margin=0.0,
    balance=1.0,
    normalizer_positive_weight=0.0,
    hard_negatives=0,
):
    """The float64 ``params`` array the loss kernels read, laid out by the ``P_*`` indices.

    The names and defaults are those of :func:`linrec.losses.loss_value`; ``hard_negatives``
    0 keeps every negative.
    """
    params = np.empty(6, dtype=np.float64)
    params[P_TEMPERATURE] = temperature
    params[P_NEG_WEIGHT] = negative_weight
    params[P_MARGIN] = margin
    params[P_BALANCE] = balance
    params[P_EPS] = normalizer_positive_weight
    params[P_HARD] = hard_negatives
    return params


# --------------------------------------------------------------------------- random numbers
@njit(nogil=True, fastmath=_FASTMATH)
def _mix(z):
    # splitmix64 finaliser: a bijection of uint64 with good avalanche.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(nogil=True, fastmath=_FASTMATH)
def _pair_state(seed, epoch, position):
    s = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    s = _mix(s ^ (np.uint64(epoch) * np.uint64(0xD1B54A32D192ED03)))
    return _mix(s ^ (np.uint64(position) * np.uint64(0x8CB92BA72F3D8DD7)))


@njit(nogil=True, fastmath=_FASTMATH)
def _next(state):
    state = state + np.uint64(0x9E3779B97F4A7C15)
    return state, _mix(state)


@njit(nogil=True, fastmath=_FASTMATH)
def _bounded(r, n):
    # Lemire's multiply-shift: maps the high 32 bits of r to [0, n) (n < 2**32).
    return np.int64(((r >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


# --------------------------------------------------------------------------- exp, sum, max
# exp without a libm call, so that loops over the N negatives vectorise (numba has no vector
# math library here): x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite split of ln2), e^r by its
# Taylor polynomial of degree 13 (truncation below 1e-17 relative), 2^n by building the
# exponent bits. Arguments are clamped to [-708, 709] (e^-708 ~ 3e-308 stands in for
# smaller values: the losses add these terms to sums of order >= 1, where they vanish).
# Accuracy as the losses use it: they are compiled with reassociation, which reaches this
# code when it is inlined into them and undoes part of the Cody-Waite split, so the relative
# error grows with |x|: measured 2.2e-16 on [-1, 1], 1.6e-15 on [-40, 5] (the softmax's
# range, s_j - max <= 0 with |s| <= 1 / t) and 2.4e-14 at the ends of the clamped range.
# exp_array is compiled the same way, so its test measures the arithmetic training uses.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(inline="always")
def _exp_reduced(x):
    x = min(max(x, -708.0), 709.0)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p, (np.int64(n) + 1023) << 52


# The single-precision exp, used when the model is float32: its scores come from float32
# vectors, whose rounding (relative 6e-8, times 1 / t in the softmax's argument) already
# exceeds float32's exp error, and it costs half the double one (measured 2.5 against
# 5.2 ns an entry on one thread; Zen 1 splits 256-bit operations, so four float32 lanes run
# as fast as eight). Degree 7 (truncation 5e-9 relative), arguments clamped to [-87, 88]
# (2^n stays a normal float32). Compiled without reassociation, so the Cody-Waite split
# holds; the error comes from rounding the argument to float32: measured 4e-6 relative at
# the ends of the clamped range, 2e-6 on [-40, 5].
_F32 = np.float32
_LOG2E_F32 = _F32(_LOG2E)
_LN2_HI_F32 = _F32(0.693359375)  # 10 bits: n * _LN2_HI_F32 is exact
_LN2_LO_F32 = _F32(-2.12194440e-4)
_EXP_LOW_F32, _EXP_HIGH_F32, _HALF_F32 = _F32(-87.0), _F32(88.0), _F32(0.5)
_TAYLOR_F32 = tuple(_F32(1.0 / f) for f in (5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0))
_T7, _T6, _T5, _T4, _T3, _T2, _T1, _T0 = _TAYLOR_F32


@njit(nogil=True, fastmath={"contract"})
def _exp_into_single(src, scale, shift, dst, scratch):
    # scratch: float32, length of src; first the exponent bits (as int32), then 2^n
    bits = scratch.view(np.int32)
    for a in range(src.shape[0]):
        x = _F32(src[a] * scale - shift)
        x = min(max(x, _EXP_LOW_F32), _EXP_HIGH_F32)
        n = np.floor(x * _LOG2E_F32 + _HALF_F32)
        r = (x - n * _LN2_HI_F32) - n * _LN2_LO_F32
        p = _T7 * r + _T6
        p = p * r + _T5
        p = p * r + _T4
        p = p * r + _T3
        p = p * r + _T2
        p = p * r + _T1
        p = p * r + _T0
        dst[a] = p
        bits[a] = (np.int32(n) + 127) << 23
    for a in range(src.shape[0]):
        dst[a] *= scratch[a]


@njit(nogil=True)
def _exp_into(src, scale, shift, dst, scratch):
    """``dst[a] = exp(src[a] * scale - shift)`` for every a, in the precision of ``scratch``
    (float32 or float64, length of ``src``; its contents are overwritten)."""
    if scratch.itemsize == 4:
        _exp_into_single(src, scale, shift, dst, scratch)
        return
    bits = scratch.view(np.int64)
    for a in range(src.shape[0]):
        dst[a], bits[a] = _exp_reduced(src[a] * scale - shift)
    for a in range(src.shape[0]):
        dst[a] *= scratch[a]


@njit(cache=True, fastmath=_FASTMATH)
def exp_array(x, scratch):
    """``np.exp(x)`` through the vectorisable kernel exp (for its test), in the precision of
    ``scratch`` (float32 or float64, length of ``x``), compiled with the reassociation the
    losses are compiled with."""
    out = np.empty(x.shape[0])
    _exp_into(x, 1.0, 0.0, out, scratch)
    return out


@njit(nogil=True, fastmath=_FASTMATH)
def _sum(v):
    # eight independent partial sums: the additions pipeline instead of waiting on each other
    # (on the stack, where LLVM keeps them in registers; a heap array was stored at every add)
    acc = stack_array(8, v)
    for c in range(8):
        acc[c] = 0.0
    n = v.shape[0]
    a = 0
    while a + 8 <= n:
        for c in range(8):
            acc[c] += v[a + c]
        a += 8
    total = 0.0
    while a < n:
        total += v[a]
        a += 1
    for c in range(8):
        total += acc[c]
    return total


@njit(nogil=True, fastmath=_FASTMATH)
def _max_scaled(v, scale, start):
    """max(start, max of v * scale), with eight independent running maxima."""
    acc = stack_array(8, v)
    for c in range(8):
        acc[c] = start
    n = v.shape[0]
    a = 0
    while a + 8 <= n:
        for c in range(8):
            acc[c] = max(acc[c], v[a + c] * scale)
        a += 8
    out = start
    while a < n:
        out = max(out, v[a] * scale)
        a += 1
    for c in range(8):
        out = max(out, acc[c])
    return out


# --------------------------------------------------------------------------- losses
@njit(cache=True)
def loss_grad(code, y, n_extra, n_neg, tau, params, g):
    """Loss of one pair and its gradient with respect to the scores.

    ``y`` holds ``[y+, y_k (M), y_j (N)]``; ``g`` (same length) receives dL/dy. Returns the
    loss (float64). Formulas: :mod:`linrec.losses`.
    """
    return _loss_grad(code, y, n_extra, n_neg, tau, params, g, np.empty(y.shape[0]))


@njit(inline="always", fastmath=_FASTMATH)
def _softplus_sigmoid(x):
    """softplus(x) = log(1 + e^x) and its derivative sigmoid(x), without overflow."""
    ex = np.exp(-abs(x))
    sig = 1.0 / (1.0 + ex) if x >= 0 else ex / (1.0 + ex)
    return max(x, 0.0) + np.log1p(ex), sig


@njit(cache=True, fastmath=_FASTMATH)
def _loss_grad(code, y, n_extra, n_neg, tau, params, g, bits):
    """:func:`loss_grad` with ``bits`` (length of ``y``) as scratch of the exp, whose dtype
    (the model's: float32 or float64) sets the exp's precision.

    Compiled with reassociation (sums over the negatives vectorise; their order of addition
    is not the written one, a relative change of order 1e-16).
    """
    t = params[P_TEMPERATURE]
    w = params[P_NEG_WEIGHT]
    margin = params[P_MARGIN]
    lam = params[P_BALANCE]
    eps = params[P_EPS]
    e0 = 1 + n_extra  # first negative
    length = e0 + n_neg
    # The negatives' scores, gradients and exp scratch as views starting at index 0: loops
    # from a run-time start (e0) did not vectorise (numba's negative-index handling cannot be
    # ruled out for them), and the exp over 4,096 negatives ran 3x slower.
    yn = y[e0:length]
    gn = g[e0:length]
    bn = bits[e0:length]
    # every branch below writes g of all N negatives; the positive and the extra positives
    # are set only where they get a gradient
    for a in range(e0):
        g[a] = 0.0
    y0 = y[0]
    loss = 0.0
    if code == BPR:
        n_hard = int(params[P_HARD])
        gpos = 0.0
        if 0 < n_hard < n_neg:
            # dynamic negative sampling: only the n_hard highest-scoring negatives count (the
            # first of equal scores first); bn marks the ones chosen
            for j in range(n_neg):
                gn[j] = 0.0
                bn[j] = 0.0
            for _ in range(n_hard):
                best = -1
                best_y = -np.inf
                for j in range(n_neg):
                    if bn[j] == 0.0 and yn[j] > best_y:
                        best, best_y = j, yn[j]
                if best < 0:
                    break
                bn[best] = 1.0
                value, sig = _softplus_sigmoid(best_y - y0)
                loss += value
                gn[best] = sig
                gpos -= sig
        else:
            for j in range(n_neg):
                value, sig = _softplus_sigmoid(yn[j] - y0)
                loss += value
                gn[j] = sig
                gpos -= sig
        g[0] = gpos
    elif code == INFONCE:
        inv_t = 1.0 / t
        s0 = y0 * inv_t
        mx = _max_scaled(yn, inv_t, s0)
        e_pos = np.exp(s0 - mx)
        _exp_into(yn, inv_t, mx, gn, bn)
        z = e_pos + _sum(gn)
        loss = -s0 + mx + np.log(z)
        c = inv_t / z
        g[0] = (e_pos / z - 1.0) * inv_t
        for j in range(n_neg):
            gn[j] *= c
    elif code == DEBIASED_INFONCE:
        s0 = y0 / t
        mx = max(s0, -1.0 / t)
        for a in range(1, e0):
            mx = max(mx, y[a] / t)
        mx = _max_scaled(yn, 1.0 / t, mx)
        # exp(y_j / t - mx) is needed twice (mean and gradient): keep it in g
        _exp_into(yn, 1.0 / t, mx, gn, bn)
        mean_neg = _sum(gn) / n_neg
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
        if not active:
            for j in range(n_neg):
                gn[j] = 0.0
        if active:
            cneg = 1.0 / (z * (1.0 - tau) * t)
            for j in range(n_neg):
                gn[j] *= cneg
            cext = -n_neg * tau / (z * (1.0 - tau) * n_extra * t)
            for a in range(1, e0):
                g[a] = cext * np.exp(y[a] / t - mx)
    elif code == MINE or code == MINE_PLUS or code == INFONCE_PLUS:
        # -s+ + bal * log(eps e^{s+} + sum_j e^{s_j}) (- bal log N for MINE/MINE+)
        inv_t = 1.0 / t
        bal = 1.0 if code == MINE else lam
        eps_pos = eps if code == INFONCE_PLUS else 0.0
        s0 = y0 * inv_t
        mx = _max_scaled(yn, inv_t, yn[0] * inv_t)
        if eps_pos > 0.0:
            mx = max(mx, s0)
        e_pos = eps_pos * np.exp(s0 - mx)
        _exp_into(yn, inv_t, mx, gn, bn)
        z = e_pos + _sum(gn)
        loss = -s0 + bal * (mx + np.log(z))
        if code != INFONCE_PLUS:
            loss -= bal * np.log(n_neg)
        g[0] = (bal * e_pos / z - 1.0) * inv_t
        c = bal * inv_t / z
        for j in range(n_neg):
            gn[j] *= c
    elif code == CCL or code == DEBIASED_CCL:
        wpos = 1.0 if code == CCL else tau
        if y0 < 1.0:
            loss = wpos * (1.0 - y0)
            g[0] = -wpos
        cneg = w / n_neg
        # branch-free, so that the loops over the N negatives vectorise; the hinge sum goes
        # through _sum, whose fixed partial sums do not depend on where y sits in memory (a
        # plain reduction here did: the loss differed in its last bit between processes)
        for j in range(n_neg):
            gn[j] = max(yn[j] - margin, 0.0)
        loss += cneg * _sum(gn)
        for j in range(n_neg):
            gn[j] = cneg if gn[j] > 0.0 else 0.0
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
        for j in range(n_neg):
            loss += cneg / n_neg * yn[j] * yn[j]
            gn[j] = 2.0 * cneg / n_neg * yn[j]
        if code != MSE:
            cext = cneg * tau / n_extra
            for a in range(1, e0):
                loss -= cext * y[a] * y[a]
                g[a] = -2.0 * cext * y[a]
    return loss


# --------------------------------------------------------------------------- one pair
@njit(nogil=True, fastmath=_FASTMATH)
def _touch(row, flags, touched, count):
    if flags[row] == 0:
        flags[row] = 1
        touched[count] = row
        count += 1
    return count


@njit(nogil=True, fastmath=_FASTMATH)
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
    bits,
    dropout,
    keep,
    p_kept,
):
    """Loss of the pair (user row u, targets) and gradients (times ``scale``) into ``grad``.

    Targets are ``[i+, k_1..k_M, j_1..j_N]``, each read from its row of ``W`` (the
    per-positive sampler and fold-in; batch-shared negatives go through
    :func:`_shared_block`). With ``dropout`` the user vector (unit-normalised first for
    cosine scores) is multiplied componentwise by ``keep`` (0 or 1 / (1 - rate)) before
    scoring; ``p_kept`` (d,) is scratch for the kept vector.

    Inlined into its callers, which are compiled with reassociation allowed so that the
    d-length loops vectorise.
    Accumulators take the dtype of ``W`` (float32 training runs in float32 SIMD lanes).
    """
    d = W.shape[1]
    length = 1 + n_extra + n_neg
    p = W[u]
    inv_p = 1.0
    if cosine:
        pp = p[0] * p[0]
        for k in range(1, d):
            pp += p[k] * p[k]
        inv_p = 1.0 / max(np.sqrt(pp), _NORM_FLOOR)
    # the vector the items see: p, or p with dropped components (the factor 1/|p| of cosine
    # scores is applied after the dot products, so it commutes with the mask)
    pv = p
    if dropout:
        for k in range(d):
            p_kept[k] = keep[k] * p[k]
        pv = p_kept
    for a in range(length):
        if a + _ROW_AHEAD < length:
            prefetch_row(W, n_users + targets[a + _ROW_AHEAD])
        q = W[n_users + targets[a]]
        dot = pv[0] * q[0]
        qq = q[0] * q[0]
        for k in range(1, d):
            dot += pv[k] * q[k]
            qq += q[k] * q[k]
        if cosine:
            inv_q[a] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR)
            y[a] = dot * inv_p * inv_q[a]
        else:
            y[a] = dot
    loss = _loss_grad(code, y, n_extra, n_neg, tau, params, g, bits)
    acc[:] = 0.0
    sum_gy = 0.0
    for a in range(length):
        row = n_users + targets[a]
        if update_items and a + _GRAD_AHEAD < length:
            prefetch_row(grad, n_users + targets[a + _GRAD_AHEAD])
        if update_items:
            count = _touch(row, flags, touched, count)
        ga = g[a] * scale
        if ga == 0.0:
            continue
        q = W[row]
        gq = grad[row]
        if cosine:
            # with v = keep * p^ (v = p^ without dropout): y = v . q^,
            # dy/dp = (keep * q^ - y p^)/|p|,  dy/dq = (v - y q^)/|q|
            cq = W.dtype.type(ga * inv_q[a])
            sum_gy += ga * y[a]
            for k in range(d):
                acc[k] += cq * q[k]
            if update_items:
                cp_item = W.dtype.type(ga * inv_q[a] * inv_p)
                cq_item = W.dtype.type(ga * y[a] * inv_q[a] * inv_q[a])
                for k in range(d):
                    gq[k] += cp_item * pv[k] - cq_item * q[k]
        else:
            ga_t = W.dtype.type(ga)
            for k in range(d):
                acc[k] += ga_t * q[k]
            if update_items:
                for k in range(d):
                    gq[k] += ga_t * pv[k]
    count = _touch(u, flags, touched, count)
    gp = grad[u]
    if dropout:
        for k in range(d):
            acc[k] *= keep[k]
    if cosine:
        c_acc = W.dtype.type(inv_p)
        c_p = W.dtype.type(sum_gy * inv_p * inv_p)
        for k in range(d):
            gp[k] += c_acc * acc[k] - c_p * p[k]
    else:
        for k in range(d):
            gp[k] += acc[k]
    return loss, count


# --------------------------------------------------------------------------- shared negatives
@njit(nogil=True, fastmath=_FASTMATH)
def _gather_shared(W, n_users, shared, cosine, shared_q, shared_qt, inv_qs):
    """Copy the shared negatives' rows into the rows of ``shared_q`` (N x d), unit-normalised
    for cosine scores, and their transpose into ``shared_qt`` (d x N)."""
    d = W.shape[1]
    n_neg = shared.shape[0]
    for j in range(n_neg):
        if j + _ROW_AHEAD < n_neg:
            prefetch_row(W, n_users + shared[j + _ROW_AHEAD])
        q = W[n_users + shared[j]]
        qq = 0.0
        for k in range(d):
            qq += q[k] * q[k]
        inv_qs[j] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR) if cosine else 1.0
        for k in range(d):
            shared_q[j, k] = q[k] * inv_qs[j]
            shared_qt[k, j] = shared_q[j, k]


@njit(cache=True, fastmath=_FASTMATH)
def _shared_block(
    W,
    n_users,
    users,
    row_targets,
    tau,
    code,
    params,
    cosine,
    n_extra,
    n_neg,
    scale,
    update_items,
    shared_q,
    shared_qt,
    grad,
    flags,
    touched,
    count,
    P,
    S,
    R,
    dP,
    inv_p,
    sum_gy,
    active,
    Qr,
    GQ,
    inv_qr,
    shared_dq,
    y,
    g,
    bits,
    dropout,
    keep,
):
    """Losses and gradients of a block of pairs that share the same N negatives.

    ``users`` (nb,) user rows, ``row_targets`` (nb, 1 + M) item ids of the positive and the
    extra positives, ``tau`` (nb,), ``shared_q`` (N, d) the negatives' vectors (unit rows for
    cosine scores) and ``shared_qt`` (d, N) their transpose. The scores of the block against
    the negatives and the two gradient products are matrix products, by the register tiles of
    :func:`~linrec._kernels.matmul.matmul_into` (not BLAS: inside numba that is SciPy's
    single-threaded OpenBLAS, slower than the tiles here at every N measured, 256 and 800; in
    512-bit registers on AVX-512 targets, which took InfoNCE's Gowalla epoch at N = 256 from
    0.99-1.06 to 0.87-0.88 s, CCL's at N = 800 level):

        S = P Q^T (nb x N),   dL/dP = G Q (nb x d),   dL/dQ = G^T P (N x d),

    where P holds the user vectors (unit rows for cosine) and G = dL/dS, computed row by row
    by :func:`loss_grad` in place of S (when fewer than 1/8 of the entries of G are nonzero,
    as with CCL's margin, the two gradient products visit only those entries instead). The
    user and positive-item gradients go into ``grad``
    (scaled by ``scale``); ``shared_dq`` (N, d) receives dL/dQ (overwritten), which
    :func:`_finish_shared` turns into row gradients.

    Scratch (at least nb rows, rows beyond nb are zeroed and contribute nothing): ``P``, ``R``,
    ``dP`` (rows, d), ``S`` (rows, N), ``inv_p``, ``sum_gy``, ``active`` (int64) (rows,),
    ``Qr``, ``GQ`` (rows, 1 + M, d) and ``inv_qr`` (rows, 1 + M) for the positives' vectors
    and gradients, and per-pair ``y``, ``g`` and ``bits`` (dtype of ``W``) (1 + M + N). With
    ``dropout`` row b of P is multiplied componentwise by ``keep[b]`` (0 or 1 / (1 - rate)).
    Returns (summed loss, updated touched count).
    """
    nb = users.shape[0]
    d = W.shape[1]
    e0 = 1 + n_extra
    # Gathers first, in loops whose iterations are independent, so that the random row
    # fetches overlap (interleaved with the per-row loss they would be waited for one by one).
    for b in range(nb):
        if b + _ROW_AHEAD < nb:
            prefetch_row(W, users[b + _ROW_AHEAD])
            for a in range(e0):
                prefetch_row(W, n_users + row_targets[b + _ROW_AHEAD, a])
        p = W[users[b]]
        inv = 1.0
        if cosine:
            pp = p[0] * p[0]
            for k in range(1, d):
                pp += p[k] * p[k]
            inv = 1.0 / max(np.sqrt(pp), _NORM_FLOOR)
        inv_p[b] = inv
        pb = P[b]
        c = W.dtype.type(inv)
        if dropout:
            kb = keep[b]
            for k in range(d):
                pb[k] = p[k] * c * kb[k]
        else:
            for k in range(d):
                pb[k] = p[k] * c
        for a in range(e0):
            q = W[n_users + row_targets[b, a]]
            qb = Qr[b, a]
            qq = q[0] * q[0]
            qb[0] = q[0]
            for k in range(1, d):
                qb[k] = q[k]
                qq += q[k] * q[k]
            inv_qr[b, a] = 1.0 / max(np.sqrt(qq), _NORM_FLOOR) if cosine else 1.0
    for b in range(nb, P.shape[0]):
        P[b, :] = 0.0
    matmul_into(P, shared_qt, S)
    total = 0.0
    n_active = 0
    # the negatives' part of y and g as views from index 0 (see _loss_grad: loops from the
    # run-time offset e0 do not vectorise)
    yn = y[e0 : e0 + n_neg]
    gn = g[e0 : e0 + n_neg]
    for b in range(nb):
        pb = P[b]
        for a in range(e0):
            qb = Qr[b, a]
            dot = pb[0] * qb[0]
            for k in range(1, d):
                dot += pb[k] * qb[k]
            y[a] = dot * inv_qr[b, a]
        sb = S[b]
        for j in range(n_neg):
            yn[j] = sb[j]
        total += _loss_grad(code, y, n_extra, n_neg, tau[b], params, g, bits)
        acc = R[b]
        acc[:] = 0.0
        sgy = 0.0
        for a in range(e0):
            ga = g[a] * scale
            q = Qr[b, a]
            gq = GQ[b, a]
            if cosine:
                # dy/dp^ = keep * q^,  dy/dq = (P_b - y q^)/|q|
                cq = W.dtype.type(ga * inv_qr[b, a])
                cq_item = W.dtype.type(ga * y[a] * inv_qr[b, a] * inv_qr[b, a])
                sgy += ga * y[a]
                for k in range(d):
                    acc[k] += cq * q[k]
                    gq[k] = cq * pb[k] - cq_item * q[k]
            else:
                ga_t = W.dtype.type(ga)
                for k in range(d):
                    acc[k] += ga_t * q[k]
                    gq[k] = ga_t * pb[k]
        # G replaces S row by row (rows beyond nb are zero: their P rows are)
        row_active = 0
        for j in range(n_neg):
            ga = gn[j] * scale
            sb[j] = ga
            sgy += ga * yn[j]
            row_active += ga != 0.0
        sum_gy[b] = sgy
        active[b] = row_active
        n_active += row_active
    if 8 * n_active < nb * n_neg:
        # margin losses (CCL) leave most negatives inactive (measured on Gowalla with m = 0.9:
        # under 1%): visiting the nonzero entries of G is far cheaper than two dense products.
        # Each row's nonzero columns are listed first by a branch-free scan, and dp and dq are
        # updated in loops of their own: with the test inside the scan and both updates in one
        # loop, a block took 9x longer (1.29 against 0.15 ms, 512 x 800, 0.6% nonzero).
        dP[:] = 0.0
        shared_dq[:] = 0.0
        nonzero = np.empty(n_neg, np.int64)
        for b in range(nb):
            if active[b] == 0:
                continue
            sb = S[b]
            n_nonzero = 0
            for j in range(n_neg):
                nonzero[n_nonzero] = j
                n_nonzero += sb[j] != 0.0
            pb = P[b]
            dp = dP[b]
            for t in range(n_nonzero):
                j = nonzero[t]
                ga = sb[j]
                q = shared_q[j]
                for k in range(d):
                    dp[k] += ga * q[k]
                dq = shared_dq[j]
                for k in range(d):
                    dq[k] += ga * pb[k]
    else:
        matmul_into(S, shared_q, dP)
        matmul_into(S.T, P, shared_dq)
    # Scatter into the row gradients (independent iterations again).
    for b in range(nb):
        if b + _GRAD_AHEAD < nb:
            prefetch_row(grad, users[b + _GRAD_AHEAD])
            if update_items:
                for a in range(e0):
                    prefetch_row(grad, n_users + row_targets[b + _GRAD_AHEAD, a])
        u = users[b]
        count = _touch(u, flags, touched, count)
        gp = grad[u]
        acc = R[b]
        dp = dP[b]
        if dropout:
            # dL/dp^ = keep * (acc + dp); dL/dp^ . p^ is still sum_a g_a y_a (the mask moves
            # onto p^ inside each y_a), so the projection below uses the unmasked p^ = p / |p|
            kb = keep[b]
            p = W[u]
            c_p = W.dtype.type(sum_gy[b] * inv_p[b] * inv_p[b] if cosine else 0.0)
            c_acc = W.dtype.type(inv_p[b])
            for k in range(d):
                gp[k] += c_acc * kb[k] * (acc[k] + dp[k]) - c_p * p[k]
        elif cosine:
            # dL/dp = (dL/dp^ - (dL/dp^ . p^) p^) / |p|, with dL/dp^ . p^ = sum_a g_a y_a
            c_acc = W.dtype.type(inv_p[b])
            c_p = W.dtype.type(sum_gy[b] * inv_p[b])
            pb = P[b]
            for k in range(d):
                gp[k] += c_acc * (acc[k] + dp[k]) - c_p * pb[k]
        else:
            for k in range(d):
                gp[k] += acc[k] + dp[k]
        if update_items:
            for a in range(e0):
                row = n_users + row_targets[b, a]
                count = _touch(row, flags, touched, count)
                gq = grad[row]
                src = GQ[b, a]
                for k in range(d):
                    gq[k] += src[k]
    return total, count


@njit(nogil=True, fastmath=_FASTMATH)
def _finish_shared(
    n_users, shared, cosine, shared_q, inv_qs, shared_dq, grad, flags, touched, count
):
    """Add the shared negatives' gradients ``shared_dq`` (N x d) to their rows of ``grad``.

    Cosine: dL/dq = (dL/dq^ - (dL/dq^ . q^) q^) / |q|.
    """
    d = shared_q.shape[1]
    for j in range(shared.shape[0]):
        row = n_users + shared[j]
        count = _touch(row, flags, touched, count)
        gq = grad[row]
        dq = shared_dq[j]
        if cosine:
            qj = shared_q[j]
            proj = dq[0] * qj[0]
            for k in range(1, d):
                proj += dq[k] * qj[k]
            c = inv_qs[j]
            for k in range(d):
                gq[k] += c * (dq[k] - proj * qj[k])
        else:
            for k in range(d):
                gq[k] += dq[k]
    return count


@njit(cache=True, fastmath=_FASTMATH)
def pairs_loss_and_grad(
    W, users, targets, tau, n_users, code, params, cosine, n_extra, n_neg, share, dropout, keep
):
    """Summed loss of explicit pairs and its exact gradient w.r.t. ``W`` (serial).

    ``users`` (B,), ``targets`` (B, 1 + M + N) item ids, ``tau`` (B,). With ``share`` the
    negatives of the first row are used as the shared negatives of every pair (the block
    path of the training kernel, :func:`_shared_block`). With ``dropout`` pair b's user
    vector is multiplied by the mask ``keep[b]`` ((B, d), dtype of ``W``). Used by the tests:
    the training kernel runs the same code.
    """
    n_rows, d = W.shape
    n_pairs = users.shape[0]
    length = 1 + n_extra + n_neg
    e0 = 1 + n_extra
    grad = np.zeros((n_rows, d), W.dtype)
    flags = np.zeros(n_rows, np.uint8)
    touched = np.empty(n_rows, np.int64)
    y = np.empty(length)
    g = np.empty(length)
    inv_q = np.empty(length)
    bits = np.empty(length, W.dtype)
    total = 0.0
    count = 0
    if share:
        shared = targets[0, e0:].copy()
        shared_q = np.empty((n_neg, d), W.dtype)
        shared_qt = np.empty((d, n_neg), W.dtype)
        inv_qs = np.empty(n_neg)
        _gather_shared(W, n_users, shared, cosine, shared_q, shared_qt, inv_qs)
        shared_dq = np.empty((n_neg, d), W.dtype)
        total, count = _shared_block(
            W,
            n_users,
            users,
            np.ascontiguousarray(targets[:, :e0]),
            tau,
            code,
            params,
            cosine,
            n_extra,
            n_neg,
            1.0,
            True,
            shared_q,
            shared_qt,
            grad,
            flags,
            touched,
            count,
            np.empty((n_pairs, d), W.dtype),
            np.empty((n_pairs, n_neg), W.dtype),
            np.empty((n_pairs, d), W.dtype),
            np.empty((n_pairs, d), W.dtype),
            np.empty(n_pairs),
            np.empty(n_pairs),
            np.empty(n_pairs, np.int64),
            np.empty((n_pairs, e0, d), W.dtype),
            np.empty((n_pairs, e0, d), W.dtype),
            np.empty((n_pairs, e0)),
            shared_dq,
            y,
            g,
            bits,
            dropout,
            keep,
        )
        _finish_shared(
            n_users, shared, cosine, shared_q, inv_qs, shared_dq, grad, flags, touched, count
        )
        return total, grad
    acc = np.empty(d, W.dtype)
    p_kept = np.empty(d, W.dtype)
    for b in range(n_pairs):
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
            bits,
            dropout,
            keep[b],
            p_kept,
        )
        total += loss
    return total, grad


# --------------------------------------------------------------------------- training
@njit(nogil=True, fastmath=_FASTMATH)
def _sample_negative(state, n_items, sampler, pop_items):
    state, r = _next(state)
    if sampler == UNIFORM:
        return state, _bounded(r, n_items)
    return state, pop_items[_bounded(r, pop_items.shape[0])]


@njit(nogil=True, fastmath=_FASTMATH)
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
    targets,
):
    """Fill ``targets`` with ``[item, M extra positives of u, N negatives]`` (N may be 0)."""
    targets[0] = item
    start = indptr[u]
    n_u = indptr[u + 1] - start
    for a in range(n_extra):
        state, r = _next(state)
        targets[1 + a] = indices[start + _bounded(r, n_u)]
    e0 = 1 + n_extra
    for a in range(n_neg):
        state, targets[e0 + a] = _sample_negative(state, n_items, sampler, pop_items)
    return state


@njit(nogil=True, fastmath=_FASTMATH)
def _draw_keep(state, rate, keep):
    """Dropout mask: each entry of ``keep`` is 0 with probability ``rate``, else 1/(1 - rate)."""
    kept = keep.dtype.type(1.0 / (1.0 - rate))
    for k in range(keep.shape[0]):
        state, r = _next(state)
        keep[k] = kept if np.float64(r >> np.uint64(11)) * _INV_2_53 >= rate else 0.0
    return state


@njit(nogil=True, fastmath=_FASTMATH)
def _sum_thread_buffers(grad, first, row):
    # adds the later threads' gradients of ``row`` into thread ``first``'s, zeroing them
    gsum = grad[first, row]
    for t in range(first + 1, grad.shape[0]):
        gt = grad[t, row]
        for k in range(gsum.shape[0]):
            gsum[k] += gt[k]
            gt[k] = 0.0


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
    dropout_rate,
    max_grad_norm,
):
    """One epoch of minibatch training over the pairs ``order`` (indices into ``indices``).

    ``grad`` (n_threads, n_rows, d) must be zero on entry and is zero on exit; ``flags``
    (n_threads, n_rows) likewise; ``touched`` (n_threads, n_rows) and ``stamp`` (n_rows,) are
    scratch. Only rows below ``update_limit`` are updated (fold-in freezes the items).
    With ``share_negatives`` one set of N negatives is drawn per batch (from the stream keyed
    by position ``n_pairs + batch``, which no pair uses) and used by every pair of the batch:
    each pair still sees N independent draws from the sampler, and each thread scores its
    slice of the batch against them with matrix products (:func:`_shared_block`).
    With ``dropout_rate`` > 0 each pair draws a dropout mask of the user vector from its own
    stream, after its samples.
    With ``max_grad_norm`` > 0 each batch's gradient (all updated rows together, before the
    l2 term) is scaled by ``max_grad_norm / (norm + 1e-6)`` when that is below 1, as
    ``torch.nn.utils.clip_grad_norm_`` does; the norm is summed in float64 in a fixed order.
    Returns (sum of pair losses, optimiser step count after the epoch).
    """
    n_rows, d = W.shape
    n_pairs = order.shape[0]
    length = 1 + n_extra + n_neg
    e0 = 1 + n_extra
    n_batches = (n_pairs + batch_size - 1) // batch_size
    counts = np.zeros(n_threads, np.int64)
    thread_loss = np.zeros(n_threads)
    union = np.empty(n_rows, np.int64)
    # per union entry: first thread that touched the row, and whether another one did
    union_first = np.empty(n_rows, np.int64)
    union_shared = np.empty(n_rows, np.bool_)
    union_pos = np.empty(n_rows, np.int64)
    shared = np.empty(n_neg, np.int64)
    # block buffers of the shared path, allocated once: one slice of rows per thread
    n_shared = n_neg if share_negatives else 0
    rows = (batch_size + n_threads - 1) // n_threads if share_negatives else 0
    shared_q = np.empty((n_shared, d), W.dtype)
    shared_qt = np.empty((d, n_shared), W.dtype)
    inv_qs = np.empty(n_shared)
    block_users = np.empty((n_threads, rows), np.int64)
    block_targets = np.empty((n_threads, rows, e0), np.int64)
    block_tau = np.empty((n_threads, rows))
    block_P = np.empty((n_threads, rows, d), W.dtype)
    block_S = np.empty((n_threads, rows, n_shared), W.dtype)
    block_R = np.empty((n_threads, rows, d), W.dtype)
    block_dP = np.empty((n_threads, rows, d), W.dtype)
    block_inv_p = np.empty((n_threads, rows))
    block_sum_gy = np.empty((n_threads, rows))
    block_active = np.empty((n_threads, rows), np.int64)
    block_Qr = np.empty((n_threads, rows, e0, d), W.dtype)
    block_GQ = np.empty((n_threads, rows, e0, d), W.dtype)
    block_inv_qr = np.empty((n_threads, rows, e0))
    block_dq = np.empty((n_threads, n_shared, d), W.dtype)
    dropout = dropout_rate > 0.0
    block_keep = np.empty((n_threads, rows, d if dropout else 0), W.dtype)
    clipping = max_grad_norm > 0.0
    union_square = np.empty(n_rows if clipping else 0)
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
            _gather_shared(W, n_users, shared, cosine, shared_q, shared_qt, inv_qs)
        for t in prange(n_threads):
            t_lo = lo + ((hi - lo) * t) // n_threads
            t_hi = lo + ((hi - lo) * (t + 1)) // n_threads
            y = np.empty(length)
            g = np.empty(length)
            inv_q = np.empty(length)
            bits = np.empty(length, W.dtype)
            count = 0
            loss_sum = 0.0
            if share_negatives:
                nb = t_hi - t_lo
                users_t = block_users[t]
                targets_t = block_targets[t]
                tau_t = block_tau[t]
                for c in range(nb):
                    position = t_lo + c
                    pair = order[position]
                    u = pair_users[pair]
                    users_t[c] = u
                    tau_t[c] = tau[u]
                    state = _pair_state(seed, epoch, position)
                    state = _sample_targets(
                        state,
                        indices[pair],
                        u,
                        indptr,
                        indices,
                        n_items,
                        n_extra,
                        0,
                        sampler,
                        pop_items,
                        targets_t[c],
                    )
                    if dropout:
                        _draw_keep(state, dropout_rate, block_keep[t, c])
                loss_sum, count = _shared_block(
                    W,
                    n_users,
                    users_t[:nb],
                    targets_t[:nb],
                    tau_t[:nb],
                    code,
                    params,
                    cosine,
                    n_extra,
                    n_neg,
                    scale,
                    update_items,
                    shared_q,
                    shared_qt,
                    grad[t],
                    flags[t],
                    touched[t],
                    count,
                    block_P[t],
                    block_S[t],
                    block_R[t],
                    block_dP[t],
                    block_inv_p[t],
                    block_sum_gy[t],
                    block_active[t],
                    block_Qr[t],
                    block_GQ[t],
                    block_inv_qr[t],
                    block_dq[t],
                    y,
                    g,
                    bits,
                    dropout,
                    block_keep[t],
                )
                if update_items:
                    count = _finish_shared(
                        n_users,
                        shared,
                        cosine,
                        shared_q,
                        inv_qs,
                        block_dq[t],
                        grad[t],
                        flags[t],
                        touched[t],
                        count,
                    )
            else:
                targets = np.empty(length, np.int64)
                acc = np.empty(d, W.dtype)
                keep = np.empty(d if dropout else 0, W.dtype)
                p_kept = np.empty(d if dropout else 0, W.dtype)
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
                    if dropout:
                        _draw_keep(state, dropout_rate, keep)
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
                        bits,
                        dropout,
                        keep,
                        p_kept,
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
                    union_pos[row] = n_union
                    union[n_union] = row
                    union_first[n_union] = t
                    union_shared[n_union] = False
                    n_union += 1
                else:
                    union_shared[union_pos[row]] = True
        # Optimiser constants in the dtype of W, so that the d-length loops below run in its
        # SIMD lanes (float32: the precision of the moments and of PyTorch's SparseAdam).
        # Adam: w -= (lr / bias1) m / (sqrt(v) / sqrt(bias2) + eps).
        dt = W.dtype.type
        step_size = dt(learning_rate / (1.0 - beta1**step))
        inv_sqrt_bias2 = dt(1.0 / np.sqrt(1.0 - beta2**step))
        b1, b2 = dt(beta1), dt(beta2)
        c1, c2 = dt(1.0 - beta1), dt(1.0 - beta2)
        eps_t, l2_t, lr_t = dt(opt_eps), dt(l2), dt(learning_rate)
        adam = optimizer == ADAM or optimizer == DENSE_ADAM
        clip = dt(1.0)
        if clipping:
            # the whole batch gradient is needed before any row steps: sum the thread
            # buffers first (the update loop below then finds each row summed)
            for idx in prange(n_union):
                row = union[idx]
                first = union_first[idx]
                gsum = grad[first, row]
                if union_shared[idx]:
                    _sum_thread_buffers(grad, first, row)
                square = 0.0
                if row < update_limit:
                    for k in range(d):
                        square += np.float64(gsum[k]) * np.float64(gsum[k])
                union_square[idx] = square
            square = 0.0
            for idx in range(n_union):
                square += union_square[idx]
            coef = max_grad_norm / (np.sqrt(square) + 1e-6)
            if coef < 1.0:
                clip = dt(coef)
        for idx in prange(n_union):
            # the union's rows are scattered over W, the moments and the thread buffers:
            # request the rows a few entries ahead so that their loads overlap
            if idx + _UPDATE_AHEAD < n_union:
                ahead = union[idx + _UPDATE_AHEAD]
                prefetch_row(grad[union_first[idx + _UPDATE_AHEAD]], ahead)
                prefetch_row(W, ahead)
                if adam:
                    prefetch_row(moment1, ahead)
                if optimizer != SGD:
                    prefetch_row(moment2, ahead)
            row = union[idx]
            # the sum of the thread buffers goes into the first one that touched the row; the
            # others are read (and zeroed) only if they touched it too: most rows have one
            first = union_first[idx]
            gsum = grad[first, row]
            if union_shared[idx] and not clipping:
                _sum_thread_buffers(grad, first, row)
            if row < update_limit:
                w = W[row]
                if clipping:
                    for k in range(d):
                        gsum[k] *= clip
                if adam:
                    m1 = moment1[row]
                    m2 = moment2[row]
                    for k in range(d):
                        gk = gsum[k] + l2_t * w[k]
                        m = b1 * m1[k] + c1 * gk
                        v = b2 * m2[k] + c2 * gk * gk
                        m1[k] = m
                        m2[k] = v
                        w[k] -= step_size * m / (np.sqrt(v) * inv_sqrt_bias2 + eps_t)
                elif optimizer == ADAGRAD:
                    m2 = moment2[row]
                    for k in range(d):
                        gk = gsum[k] + l2_t * w[k]
                        v = m2[k] + gk * gk
                        m2[k] = v
                        w[k] -= lr_t * gk / (np.sqrt(v) + eps_t)
                else:
                    for k in range(d):
                        w[k] -= lr_t * (gsum[k] + l2_t * w[k])
            for k in range(d):
                gsum[k] = 0.0
        if optimizer == DENSE_ADAM:
            # the rows outside the batch: a zero gradient (no l2 either: the penalty belongs
            # to the batch's loss), so the moments decay and the momentum still moves them
            for row in prange(update_limit):
                if stamp[row] != step:
                    w = W[row]
                    m1 = moment1[row]
                    m2 = moment2[row]
                    for k in range(d):
                        m = b1 * m1[k]
                        v = b2 * m2[k]
                        m1[k] = m
                        m2[k] = v
                        w[k] -= step_size * m / (np.sqrt(v) * inv_sqrt_bias2 + eps_t)
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
@njit(nogil=True, fastmath=_FASTMATH)
def _row_update(
    W, row, gvec, moment1, moment2, optimizer, learning_rate, l2, beta1, beta2, opt_eps, step
):
    bias1 = 1.0 - beta1**step
    bias2 = 1.0 - beta2**step
    for k in range(W.shape[1]):
        gk = gvec[k] + l2 * W[row, k]
        # fold-in steps its one row at every step: dense and lazy Adam coincide
        if optimizer == ADAM or optimizer == DENSE_ADAM:
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
    dropout_rate,
):
    """Fit the first ``n_new`` rows of ``W`` (new users) with the item rows frozen.

    Each user is optimised on its own: its initial vector and all its samples come from a
    generator keyed by ``seed`` and the user's item ids, and it takes one optimiser step per
    positive (batch of one pair, fresh negatives, and a fresh dropout mask of the user vector
    when ``dropout_rate`` > 0, as in training). A user's result therefore depends only on
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
            u1 = (np.float64(r1 >> np.uint64(11)) + 1.0) * _INV_2_53
            u2 = np.float64(r2 >> np.uint64(11)) * _INV_2_53
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
        bits = np.empty(length, W.dtype)
        acc = np.empty(d, W.dtype)
        dropout = dropout_rate > 0.0
        keep = np.empty(d if dropout else 0, W.dtype)
        p_kept = np.empty(d if dropout else 0, W.dtype)
        touched = np.empty(1, np.int64)
        moment1 = np.zeros(d)
        moment2 = np.zeros(d)
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
                    targets,
                )
                if dropout:
                    _draw_keep(state, dropout_rate, keep)
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
                    bits,
                    dropout,
                    keep,
                    p_kept,
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
