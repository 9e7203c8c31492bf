"""Implicit alternating least squares (iALS) over one weighted family of objectives.

One estimator, :class:`IALS`, covers Rendle et al.'s iALS, Hu et al.'s confidence-weighted
iALS and the debiased-MSE objective (Chuang and positive-unlabelled forms). Every member is
reduced, per half-step, to the per-entry form solved by :mod:`linrec._kernels.als`; the
reduction is :func:`objective_terms` and is derived in its comments.
"""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np
import scipy.sparse as sp
from sklearn.base import TransformerMixin
from tqdm.auto import tqdm

from linrec._base import BaseRecommender
from linrec._factor_topk import top_scored_items
from linrec._kernels.als import (
    append_row_entries,
    chunk_bounds,
    data_term,
    gram_eigenbasis,
    rotate_rows,
    solve_rows,
    solve_rows_diagonal,
    square_sums,
    transpose_order,
    weighted_gram,
)
from linrec._threading import blas_threads, numba_threads, resolve_n_jobs
from linrec._validation import check_interactions, check_random_state_seed

__all__ = [
    "IALS",
    "ITEM_WEIGHT_NORMALIZATIONS",
    "OBJECTIVES",
    "SOLVERS",
    "item_weights",
    "objective_terms",
    "regularization_scale",
    "with_hard_negatives",
]

logger = logging.getLogger(__name__)

OBJECTIVES = ("rendle", "hu", "debiased_chuang", "debiased_pu")
SOLVERS = ("cholesky", "cg", "ialspp")
BLOCK_BASES = ("eigen", "coordinate")
FINAL_USER_STEPS = ("exact", "solver")
ITEM_WEIGHT_NORMALIZATIONS = ("mean_count", "unit_mean")

# Chunks of rows per thread in the parallel kernels: many small chunks balance power-law rows.
_CHUNKS_PER_THREAD = 32


def _check_real(value, name, *, low=None, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low if low_inclusive else value <= low):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    return value


def _check_int(value, name, *, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def objective_terms(
    X: sp.csr_matrix,
    objective: str,
    *,
    unobserved_weight: float,
    confidence_scale: float = 0.0,
    prior_inflation: float = 1.0,
    class_prior: np.ndarray | None = None,
    item_weight: np.ndarray | None = None,
    dtype=np.float64,
):
    """Per-row unobserved weights and per-entry weights of one objective, in kernel form.

    The family (THEORY.md), for user u with positives I_u+ and n items:

        J_u = s_u [ sum_{i in I_u+} ((1 - y_ui)^2 - c_u (K_u - 1) y_ui^2)
                    + c_u sum_{j not in I_u+} y_uj^2 ]

    The kernels take J_u as ``C_u sum_{all i} y^2 + sum_{I_u+} (E_ui y^2 - 2 B_ui y + B_ui)``
    (see :mod:`linrec._kernels.als`). Matching the y^2, y and constant coefficients gives, for
    the family, ``C_u = s_u c_u`` (the sum over unobserved entries is the sum over all entries
    minus the observed ones), ``E_ui = s_u (1 - c_u (K_u - 1)) - s_u c_u = s_u (1 - c_u K_u)``
    and ``B_ui = s_u``. Per member:

    - ``"rendle"``: sum_{I_u+} (1 - y)^2 + w sum_{all} y^2 (w = alpha0). s=1, c=w, K=0:
      C = w, E = 1, B = 1.
    - ``"hu"``: sum_{I_u+} (1 + alpha r_ui)(1 - y)^2 + w sum_{not I_u+} y^2 with r_ui the
      matrix value (Hu et al. use w = 1). Entry weight v = 1 + alpha r_ui replaces s_u on the
      positives: C = w, E = v - w, B = v. With alpha = 0 it is the K = 1, c = w member.
    - ``"debiased_chuang"``: the per-pair loss (1 - y_ui)^2 + w/(1 - tau_u) [mean_j y_uj^2 -
      tau_u mean_k y_uk^2] summed over u's positives, mean_j exact over all n items and mean_k
      over I_u+. Expanding: sum_{I_u+} (1-y)^2 + w n_u / (n (1 - tau_u)) sum_all y^2 -
      w tau_u / (1 - tau_u) sum_{I_u+} y^2. So s=1, c_u = w n_u / (n (1 - tau_u)) and
      K_u = tau_u n / n_u (with tau_u = K n_u / n: c_u = w n_u / (n - K n_u), K_u = K):
      C = c_u, E = 1 - c_u K_u, B = 1.
    - ``"debiased_pu"``: per pair tau_u (1 - y_ui)^2 + w [mean_j y_uj^2 - tau_u mean_k y_uk^2],
      summed likewise: tau_u sum_{I_u+}(1-y)^2 + w n_u/n sum_all y^2 - w tau_u sum_{I_u+} y^2.
      So C = w n_u / n, E = tau_u (1 - w), B = tau_u (with tau_u = K n_u / n this is s_u =
      K n_u / n, c_u = w / K, K_u = K of the table).

    With item weights g_i (``item_weight``, popularity-aware unobserved weighting, see
    :func:`item_weights`) every squared-score term that carries c_u is multiplied by g_i:

        J_u = s_u [ sum_{i in I_u+} ((1 - y_ui)^2 - c_u (K_u - 1) g_i y_ui^2)
                    + c_u sum_{j not in I_u+} g_j y_uj^2 ]

    so the unobserved entry (u, j) weighs s_u c_u g_j and the observed entries keep their
    weights on (1 - y)^2. The Gram sum becomes ``C_u sum_{all i} g_i y^2`` (a g-weighted Gram
    matrix) and only the c_u part of E moves: ``E_ui = s_u (1 - c_u K_u g_i)``, i.e. Rendle
    E = 1 (unchanged: its weighted sum runs over all entries), Hu E = v - w g_i, Chuang
    E = 1 - w tau_u / (1 - tau_u) g_i, PU E = tau_u (1 - w g_i). For the debiased forms this
    takes both averages of the negative-risk estimate (over all items and over the positives)
    under the same g-weighted measure. ``item_weight=None`` is g = 1.

    Parameters
    ----------
    X : csr_matrix of shape (n_users, n_items)
        Canonical interactions (values are used by ``"hu"`` only).
    objective : {"rendle", "hu", "debiased_chuang", "debiased_pu"}
    unobserved_weight : float
        w above.
    confidence_scale : float, default=0.0
        alpha of the ``"hu"`` form.
    prior_inflation : float, default=1.0
        K in tau_u = K n_u / n (debiased forms).
    class_prior : ndarray of shape (n_users,), optional
        User-given tau_u (debiased forms); replaces K n_u / n.
    item_weight : ndarray of shape (n_items,), optional
        g_i, the item factor of the unobserved weights (None: 1 for every item).
    dtype : numpy dtype, default=np.float64

    Returns
    -------
    row_weight : ndarray of shape (n_users,)
        C_u, weight of the row's unobserved entries.
    extra : ndarray of shape (nnz,)
        E_ui, the observed entry's squared-score weight minus C_u.
    rhs : ndarray of shape (nnz,)
        B_ui, weight times target of the observed entry.
    """
    n_users, n_items = X.shape
    counts = np.diff(X.indptr).astype(np.float64)
    row_of_entry = np.repeat(np.arange(n_users), np.diff(X.indptr))
    w = float(unobserved_weight)
    # g of every observed entry; the scalar 1.0 leaves every product below bit-identical to
    # the unweighted formula (x * 1.0 == x exactly)
    g = 1.0 if item_weight is None else np.asarray(item_weight, dtype=np.float64)[X.indices]
    if objective == "rendle":
        row_weight = np.full(n_users, w)
        extra = np.ones(X.nnz)
        rhs = np.ones(X.nnz)
    elif objective == "hu":
        confidence = 1.0 + float(confidence_scale) * X.data.astype(np.float64)
        row_weight = np.full(n_users, w)
        extra = confidence - w * g
        rhs = confidence
    elif objective in ("debiased_chuang", "debiased_pu"):
        if class_prior is None:
            tau = float(prior_inflation) * counts / n_items
        else:
            tau = np.asarray(class_prior, dtype=np.float64)
        if objective == "debiased_chuang":
            bad = np.flatnonzero(tau >= 1.0)
            if bad.size:
                raise ValueError(
                    f"debiased_chuang needs a class prior tau_u < 1, but {bad.size} user(s) "
                    f"have tau_u >= 1 (first: user {int(bad[0])}, tau = {tau[bad[0]]:.4g}, "
                    f"n_u = {int(counts[bad[0]])} of {n_items} items); lower prior_inflation"
                )
            row_weight = w * counts / (n_items * (1.0 - tau))
            extra = 1.0 - w * (tau / (1.0 - tau))[row_of_entry] * g
            rhs = np.ones(X.nnz)
        else:
            row_weight = w * counts / n_items
            extra = tau[row_of_entry] * (1.0 - w * g)
            rhs = tau[row_of_entry].copy()
    else:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return (
        row_weight.astype(dtype),
        extra.astype(dtype),
        rhs.astype(dtype),
    )


def regularization_scale(counts: np.ndarray, offset: float, n_other: int, exponent: float):
    """Rendle et al.'s frequency scaling r = (n_u + offset * n_other)^exponent per row.

    ``exponent = 0`` gives plain L2 (r = 1); ``offset = 0, exponent = 1`` gives Spark MLlib's
    scaling by the number of interactions.
    """
    base = np.asarray(counts, dtype=np.float64) + float(offset) * n_other
    if exponent == 0:
        return np.ones_like(base)
    with np.errstate(divide="ignore"):
        return np.power(base, float(exponent))


def _from_basis(F, basis, n_jobs, *, in_place=False):
    """The rows of ``F`` (kept as ``F W`` in the common basis ``W``) in the original basis.

    ``basis`` None means ``F`` is already in the original basis: a copy is returned, or
    ``F`` itself with ``in_place``.
    """
    if basis is None:
        return F if in_place else F.copy()
    back = np.ascontiguousarray(basis.T, dtype=F.dtype)
    with numba_threads(n_jobs):
        return rotate_rows(F, back, out=F if in_place else None)


def first_negative_entry(indptr, indices, row_weight, extra, item_weight=None):
    """``(row, weight)`` of the first observed entry whose squared-score weight
    ``C_u g_i + E_ui`` is negative (in CSR order), or None when there is none.

    ``item_weight`` None is g = 1. Such an entry leaves the objective without a minimum.
    """
    row_of_entry = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    observed = row_weight[row_of_entry]
    if item_weight is not None:
        observed = observed * item_weight[indices]
    observed = observed + extra
    negative = np.flatnonzero(observed < 0)
    if negative.size == 0:
        return None
    first = int(negative[0])
    return int(row_of_entry[first]), float(observed[first])


def negative_weight_error(objective: str, user: int, weight: float) -> ValueError:
    """The error for an observed entry whose squared-score weight is negative (no minimum)."""
    return ValueError(
        f"objective {objective!r} with these settings gives observed entries a negative "
        f"weight ({weight:.4g} at user {user}): the objective is unbounded below; lower "
        "prior_inflation, unobserved_weight or item_weight_exponent"
    )


def item_weights(counts: np.ndarray, exponent: float, normalization: str = "mean_count"):
    """Popularity weights g_i of the unobserved entries (He et al.'s eALS weighting).

    ``"mean_count"``: g_i = (n_i / mean_j n_j)^beta, popularity relative to the mean count.
    ``"unit_mean"``: g_i = n_i^beta / mean_j n_j^beta, so that mean_j g_j = 1 and the total
    unobserved weight of a row, c_u sum_j g_j = c_u n_items, does not depend on beta (He et
    al.'s c_i = c_0 f_i^beta / sum_j f_j^beta with c_0 = c_u n_items). ``exponent = 0`` gives
    g = 1 under both. For beta != 0, items without training interactions get g = 0 (the
    limit for beta > 0; for beta < 0 it keeps g finite): an item without interactions has
    factor zero after the first item half-step whatever its weight, so its weight only
    enters the first user half-step (through its random initial factor) and never the
    fitted objective. The means run over all items.

    Parameters
    ----------
    counts : ndarray of shape (n_items,)
        Training interactions per item, n_i.
    exponent : float
        beta; > 0 weights unobserved entries of popular items more (popular items are pushed
        down harder), < 0 less.
    normalization : {"mean_count", "unit_mean"}, default="mean_count"

    Returns
    -------
    ndarray of shape (n_items,), float64
    """
    counts = np.asarray(counts, dtype=np.float64)
    beta = float(exponent)
    if normalization not in ITEM_WEIGHT_NORMALIZATIONS:
        raise ValueError(
            f"item_weight_normalization must be one of {ITEM_WEIGHT_NORMALIZATIONS}, "
            f"got {normalization!r}"
        )
    if beta == 0:
        return np.ones_like(counts)
    counted = counts > 0
    if not np.any(counted):
        raise ValueError("item weights need at least one item with training interactions")
    weights = np.zeros_like(counts)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if normalization == "mean_count":
            weights[counted] = np.power(counts[counted] / counts.mean(), beta)
        else:
            weights[counted] = np.power(counts[counted], beta)
            weights /= weights.mean()
    if not np.all(np.isfinite(weights)):
        raise ValueError(
            f"item_weight_exponent={beta} makes item weights overflow: use a smaller |beta|"
        )
    return weights


def with_hard_negatives(indptr, indices, extra, rhs, hard, weight):
    """Each row's entries followed by its hard negatives, in kernel form.

    A hard negative (u, j) is an unobserved entry given the extra squared-score weight
    ``weight`` on top of its unobserved weight, with target 0: ``E_uj = weight``,
    ``B_uj = 0`` (see :func:`objective_terms` for E and B).

    Parameters
    ----------
    indptr, indices : ndarray of int64
        The rows' observed entries (CSR).
    extra, rhs : ndarray of shape (nnz,)
        Their E and B.
    hard : ndarray of shape (n_rows, k), int64
        Each row's hard negatives; -1 marks padding (a row with fewer eligible items).
    weight : float

    Returns
    -------
    indptr, indices, extra, rhs : ndarray
        The combined entries (new arrays; the inputs are not modified).

    Examples
    --------
    >>> import numpy as np
    >>> ptr, idx, e, b = with_hard_negatives(
    ...     np.array([0, 1, 2]), np.array([0, 2]), np.ones(2), np.ones(2),
    ...     np.array([[1, -1], [0, 1]]), 0.5)
    >>> ptr.tolist(), idx.tolist(), e.tolist(), b.tolist()
    ([0, 2, 5], [0, 1, 2, 0, 1], [1.0, 0.5, 1.0, 0.5, 0.5], [1.0, 0.0, 1.0, 0.0, 0.0])
    """
    return append_row_entries(indptr, indices, extra, rhs, hard, extra.dtype.type(weight))


class IALS(TransformerMixin, BaseRecommender):
    """Implicit alternating least squares over the weighted iALS family.

    Minimises, over user factors ``P`` and item factors ``Q`` (score ``y_ui = p_u . q_i``)::

        J = sum_u s_u [ sum_{i in I_u+} ((1 - y_ui)^2 - c_u (K - 1) g_i y_ui^2)
                        + c_u sum_{j not in I_u+} g_j y_uj^2 ]
            + lam ( sum_u r_u ||p_u||^2 + sum_i r_i ||q_i||^2 )

    where the member is chosen by ``objective`` (see :func:`objective_terms` for the exact
    weights), ``r = (n + offset * n_other)^nu`` is Rendle et al.'s frequency scaling
    (plain L2 when ``reg_exponent = 0``), and ``g_i`` is the popularity weight of item i's
    unobserved entries (He et al.'s eALS weighting, see :func:`item_weights`)::

        g_i = (n_i / mean_j n_j)^beta                 ("mean_count")
        g_i = n_i^beta / mean_j n_j^beta              ("unit_mean", mean_j g_j = 1)

    with n_i item i's training count and beta = ``item_weight_exponent`` (0: g = 1, the
    unweighted family). The unobserved entry (u, i) weighs s_u c_u g_i; because that weight
    factorises, the Gram trick still holds: the user half-step uses the weighted Gram matrix
    sum_i g_i q_i q_i^T and the item half-step gives item i the row weight g_i.

    Parameters
    ----------
    n_factors : int, default=64
        Dimension d of the factors.
    regularization : float, default=0.01
        lam. It multiplies the frequency scaling r when ``reg_exponent > 0``.
    unobserved_weight : float, default=0.1
        Weight of the unobserved entries: alpha0 of ``"rendle"`` (over all items), w of
        ``"hu"`` (Hu et al. use 1 with a large confidence scale), the w of the debiased forms.
    objective : {"rendle", "hu", "debiased_chuang", "debiased_pu"}, default="rendle"
        ``"rendle"``: sum over positives of (1 - y)^2 plus ``unobserved_weight`` times the sum
        over all entries of y^2. ``"hu"``: positives weighted 1 + ``confidence_scale`` * value
        (the matrix value), unobserved entries weighted ``unobserved_weight``.
        ``"debiased_chuang"`` / ``"debiased_pu"``: the debiased MSE losses of THEORY.md with
        exact averages over all items and class prior tau_u = ``prior_inflation`` * n_u / n
        (or ``class_prior``).
    confidence_scale : float, default=0.0
        Hu et al.'s alpha (``"hu"`` only; must be 0 for other objectives).
    prior_inflation : float, default=1.0
        K in tau_u = K n_u / n_items (debiased objectives only).
    class_prior : array-like of shape (n_users,), optional
        User-given class prior tau_u in (0, 1) per training user (debiased objectives only).
        New users folded in by :meth:`transform` use ``prior_inflation * n_u / n_items``.
    item_weight_exponent : float, default=0.0
        beta of the popularity weights g_i of the unobserved entries (formula above); 0
        weighs every item's unobserved entries alike (bit-identical to no item weighting).
        beta > 0 pushes popular items' scores down harder, beta < 0 less; items without
        training interactions get g = 0 (see :func:`item_weights`).
    item_weight_normalization : {"mean_count", "unit_mean"}, default="mean_count"
        How g_i is normalised (formula above): relative to the mean count, or so that the
        weights average 1 (the total unobserved weight per user then does not move with
        beta).
    reg_exponent : float, default=0.0
        nu of the frequency-scaled regulariser; 0 is plain L2.
    reg_frequency_offset : float, optional
        The offset in r_u = (n_u + offset * n_items)^nu and r_i = (n_i + offset * n_users)^nu.
        None uses ``unobserved_weight`` (Rendle et al.'s alpha0).
    hard_negatives : int, default=0
        Hard negatives per user, re-mined before every epoch: each user's
        ``hard_negatives`` best-scored unobserved items under the current factors (exact
        top-k, ties to the lower item index) get the extra weight ``hard_negative_weight``
        on their squared score (target 0) for that epoch, on top of their unobserved
        weight. They are extra entries of the rows, so an epoch costs as if the data had
        ``n_users * hard_negatives`` more interactions, plus the scoring of all users
        against all items (O(n_users n_items d)) to mine them. 0 (the default) is the
        family above, unchanged. What iALS's uniform unobserved weight lacks is
        pressure on the negatives that rank near the positives, the items the pairwise and
        softmax losses gain from. On Gowalla at d = 64, ``hard_negatives=800,
        hard_negative_weight=0.05`` raised test Recall@20 from 0.1565 to 0.1777
        (benchmarks/RESULTS.md, "iALS with hard negatives"). Not supported by
        :class:`linrec.spark.SparkIALS`.
    hard_negative_weight : float, default=0.0
        The extra weight of a hard negative's squared score (> 0 exactly when
        ``hard_negatives`` > 0). The epoch's objective (``objective_``) includes these
        terms, so it is that epoch's objective, and since the hard negatives change between
        epochs it need not decrease.
    solver : {"cholesky", "cg", "ialspp"}, default="cg"
        Row solver: exact Cholesky, conjugate gradient (``cg_steps`` steps, preconditioned
        and warm-started by default), or Rendle et al.'s iALS++ block solver
        (``block_size``).
    cg_steps : int, default=3
        Conjugate-gradient steps per row and half-step.
    cg_precondition : bool, default=True
        Precondition CG by the part of each row's system shared with every row,
        ``c_u G + reg_u I`` (diagonal in the Gram eigenbasis the solver works in, so free).
        The preconditioned system is the identity plus a rank-``n_u`` term: a row converges
        in at most ``n_u + 1`` steps, and 3 steps reach a lower objective per epoch than
        plain CG (measured in benchmarks/RESULTS.md). False gives textbook CG, as implicit.
    cg_warm_start : bool, default=True
        Start CG from the previous factors (True) or from zero. From zero skips rotating the
        solved side into the eigenbasis at every half-step (two of the four factor-matrix
        rotations of an epoch); each half-step then solves to a fixed accuracy instead of
        refining the last one, so the objective levels off slightly above the exact
        solver's (see benchmarks/RESULTS.md).
    block_size : int, default=32
        Coordinates per block of the iALS++ solver (clipped to ``n_factors``). Larger
        blocks cost more per sweep and get closer to the exact solution: on the synthetic
        benchmark matrix d / 4 reached the exact solver's Recall@20 in the least time at
        d = 256 and 512 (benchmarks/RESULTS.md).
    block_sweeps : int, default=1
        Sweeps over all blocks per half-step of the iALS++ solver.
    block_basis : {"eigen", "coordinate"}, default="eigen"
        The iALS++ solver's blocks: consecutive eigenvectors of the Gram matrix, where the
        part of each row's system shared by all rows is diagonal (blocks interact only
        through the row's own entries, and rows short enough are solved exactly by the
        Woodbury form, where that is not dearer than the sweeps); or consecutive
        coordinates, Rendle et al.'s original blocks. Both minimise each block exactly, so
        neither increases the objective.
    n_epochs : int, default=15
        Epochs; one epoch is a user half-step then an item half-step.
    init_std : float, optional
        Standard deviation of the normal initialisation; None uses 0.1 / sqrt(n_factors).
    record_objective : bool, default=True
        Compute the objective after every epoch into ``objective_``. It reuses the Gram
        matrices of the half-steps, and with CG the item half-step sums the data term from
        the products it computes anyway; the factors are the same bits either way. In
        float64 the value is J summed in float64 from the factors; in float32 it is within
        about 1e-8 of that sum (measured on Gowalla: at most 2.7e-9). False leaves
        ``objective_`` empty; a 5-epoch Gowalla fit with CG at d = 256 took 5.46 s without
        it and 5.43 s with it (benchmarks/RESULTS.md, session 28).
        :class:`linrec.spark.SparkIALS` records it always.
    final_user_step : {"exact", "solver"}, default="exact"
        The user half-step that ends the fit, against the kept item factors. ``"exact"``:
        the exact fold-in, so ``user_factors_`` equals :meth:`transform` of the training
        rows (with hard negatives: solved exactly without them, then with those mined from
        that solution); it costs one exact half-step (two with hard negatives), which on a
        matrix of long rows at large d is dearer than the epochs of a short fit (about
        three CG epochs on the synthetic benchmark matrix at d = 256,
        benchmarks/RESULTS.md). ``"solver"``: one more half-step of the fit's own solver
        from the last epoch's user factors (half an epoch; with hard negatives, those
        mined from the last epoch's factors), the same accuracy as the rows of every
        epoch; without hard negatives the same as ``"exact"`` for ``solver="cholesky"``.
    early_stopping_rounds : int, optional
        With ``validation_data`` given to :meth:`fit`: stop after this many epochs without a
        better validation Recall@``validation_k`` and keep the best epoch's item factors.
    validation_k : int, default=20
        Cut-off of the validation recall.
    dtype : {"float32", "float64"}, default="float32"
    random_state : int, RandomState instance or None, default=None
    n_jobs : int, optional
        Threads (None: all numba threads).
    verbose : bool, default=False
        Progress bar and per-epoch log lines.

    Attributes
    ----------
    user_factors_ : ndarray of shape (n_users, n_factors)
        Equal to :meth:`transform` of the training rows (fit ends with an exact user step)
        with ``final_user_step="exact"``.
    item_factors_ : ndarray of shape (n_items, n_factors)
    objective_ : list of float
        Value of J (float64 sums, Gram trick, constants included) after every epoch (empty
        with ``record_objective=False``); see ``record_objective`` for its accuracy.
    epoch_times_ : list of float
        Wall-clock seconds of every epoch: both half-steps with the Gram matrices they need,
        without the rest of the objective or validation.
    validation_scores_ : list of float
        Validation Recall@``validation_k`` per epoch (empty without validation data).
    best_epoch_ : int
        1-based epoch whose item factors were kept.
    n_epochs_ : int
        Epochs run.
    item_weights_ : ndarray of shape (n_items,)
        g_i from the training counts (all ones when ``item_weight_exponent = 0``); also
        used by :meth:`transform`.
    n_users_, n_items_, n_features_in_ : int

    Notes
    -----
    A user half-step costs O(n_items d^2) for the Gram matrix plus, per row:
    ``"cholesky"`` O(n_u^2 d + n_u^3) when n_u < d (Woodbury form in the Gram eigenbasis,
    see :mod:`linrec._kernels.als`) and O(n_u d^2 + d^3) otherwise; ``"cg"``
    O(cg_steps n_u d); both plus O((n_users + n_items) d^2) of rotations into the
    eigenbasis per half-step (only the other side's for the exact solver and for CG from
    zero). ``"ialspp"``: O(block_sweeps (n_u d b + d b^2)) with block size b in the
    eigenbasis (plus its rotations; rows solved exactly as for ``"cholesky"``), and
    O(block_sweeps (n_u d b + d b^2 + d^2)) with coordinate blocks. Memory: the factors
    and their rotated copies, two arrays of nnz weights in each orientation, and
    per-thread scratch of O(d^2 + max n_u d). The final exact user step costs one
    Cholesky half-step (``final_user_step="solver"``: one of the fit's solver). Item
    weights (beta != 0) add one n_items x d scaled copy for the weighted Gram matrix per
    user half-step and nothing to the per-row cost.

    Settings that worked on Gowalla (LightGCN split, tuned on a validation split of the
    training file, see benchmarks/RESULTS.md, "Tuning round 2"): ``objective="rendle",
    unobserved_weight=0.01`` with ``regularization=0.003, reg_exponent=1`` at d = 64 or
    ``regularization=0.1, reg_exponent=0.5`` at d = 256-512, 4-5 epochs (validation recall
    falls slowly after that, also with the exact solver); the defaults above are generic
    starting values, not tuned ones. ``item_weight_exponent`` 0.1-0.5 added about 0.002
    validation (and test) Recall@20 at d = 64 on Gowalla and Yelp2018 and nothing at
    d = 256 (RESULTS.md, "popularity-weighted unobserved entries"); the two normalisations
    measured the same. Hard negatives (``hard_negatives=400-800,
    hard_negative_weight=0.05`` at w 0.01, lam 0.05, ``reg_frequency_offset=0.001``,
    beta 0.3) took Gowalla's d = 64 test Recall@20 from 0.1565 to 0.1777-0.1785, over
    13-19 epochs: unlike the plain family, whose d = 64 validation recall peaks after three
    epochs, the curve keeps rising.

    Fit-time validation ranks all items by ``user_factors . item_factors`` with the training
    items excluded and reports mean Recall@k = ``hits / |held-out items|`` over users with
    held-out items (the LightGCN protocol).

    References
    ----------
    Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008.
    He, Zhang, Kan, Chua, "Fast Matrix Factorization for Online Recommendation with Implicit
    Feedback", SIGIR 2016 (popularity-weighted unobserved entries).
    Rendle, Krichene, Zhang, Koren, "Revisiting the Performance of iALS on Item Recommendation
    Benchmarks", RecSys 2022. Rendle, Krichene, Zhang, Koren, "iALS++: Speeding up Matrix
    Factorization with Subspace Optimization", arXiv 2110.14044, 2021.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X = sp.random(50, 30, density=0.2, random_state=0, format="csr")
    >>> X.data[:] = 1
    >>> X = X[np.diff(X.indptr) > 0]
    >>> model = IALS(n_factors=8, n_epochs=5, random_state=0, n_jobs=1).fit(X)
    >>> model.user_factors_.shape, model.item_factors_.shape
    ((50, 8), (30, 8))
    >>> bool(np.all(np.diff(model.objective_) <= 1e-6 * abs(model.objective_[0])))
    True
    """

    _has_user_state = True

    def __init__(
        self,
        n_factors=64,
        *,
        regularization=0.01,
        unobserved_weight=0.1,
        objective="rendle",
        confidence_scale=0.0,
        prior_inflation=1.0,
        class_prior=None,
        item_weight_exponent=0.0,
        item_weight_normalization="mean_count",
        reg_exponent=0.0,
        reg_frequency_offset=None,
        hard_negatives=0,
        hard_negative_weight=0.0,
        solver="cg",
        cg_steps=3,
        cg_precondition=True,
        cg_warm_start=True,
        block_size=32,
        block_sweeps=1,
        block_basis="eigen",
        n_epochs=15,
        init_std=None,
        record_objective=True,
        final_user_step="exact",
        early_stopping_rounds=None,
        validation_k=20,
        dtype="float32",
        random_state=None,
        n_jobs=None,
        verbose=False,
    ):
        self.n_factors = n_factors
        self.regularization = regularization
        self.unobserved_weight = unobserved_weight
        self.objective = objective
        self.confidence_scale = confidence_scale
        self.prior_inflation = prior_inflation
        self.class_prior = class_prior
        self.item_weight_exponent = item_weight_exponent
        self.item_weight_normalization = item_weight_normalization
        self.reg_exponent = reg_exponent
        self.reg_frequency_offset = reg_frequency_offset
        self.hard_negatives = hard_negatives
        self.hard_negative_weight = hard_negative_weight
        self.solver = solver
        self.cg_steps = cg_steps
        self.cg_precondition = cg_precondition
        self.cg_warm_start = cg_warm_start
        self.block_size = block_size
        self.block_sweeps = block_sweeps
        self.block_basis = block_basis
        self.n_epochs = n_epochs
        self.init_std = init_std
        self.record_objective = record_objective
        self.final_user_step = final_user_step
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_k = validation_k
        self.dtype = dtype
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_params(self, n_users, n_items):
        d = _check_int(self.n_factors, "n_factors")
        lam = _check_real(self.regularization, "regularization", low=0.0)
        w = _check_real(self.unobserved_weight, "unobserved_weight", low=0.0)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        alpha = _check_real(self.confidence_scale, "confidence_scale", low=0.0)
        if alpha != 0 and self.objective != "hu":
            raise ValueError(
                f"confidence_scale={alpha} applies to objective='hu' only "
                f"(objective is {self.objective!r})"
            )
        _check_real(self.prior_inflation, "prior_inflation", low=0.0, low_inclusive=False)
        debiased = self.objective.startswith("debiased")
        if self.class_prior is not None:
            if not debiased:
                raise ValueError("class_prior applies to the debiased objectives only")
            tau = np.asarray(self.class_prior, dtype=np.float64)
            if tau.shape != (n_users,):
                raise ValueError(
                    f"class_prior must have one value per user: shape ({n_users},), got {tau.shape}"
                )
            if not np.all((tau > 0) & (tau < 1)):
                raise ValueError("class_prior values must lie in the open interval (0, 1)")
        _check_real(self.item_weight_exponent, "item_weight_exponent")
        if self.item_weight_normalization not in ITEM_WEIGHT_NORMALIZATIONS:
            raise ValueError(
                f"item_weight_normalization must be one of {ITEM_WEIGHT_NORMALIZATIONS}, "
                f"got {self.item_weight_normalization!r}"
            )
        _check_real(self.reg_exponent, "reg_exponent", low=0.0)
        if self.reg_frequency_offset is not None:
            _check_real(self.reg_frequency_offset, "reg_frequency_offset", low=0.0)
        hard = _check_int(self.hard_negatives, "hard_negatives", low=0)
        hard_weight = _check_real(self.hard_negative_weight, "hard_negative_weight", low=0.0)
        if (hard > 0) != (hard_weight > 0):
            raise ValueError(
                f"hard_negatives={hard} with hard_negative_weight={hard_weight}: set both > 0 "
                "to use hard negatives, or both to 0"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        _check_int(self.cg_steps, "cg_steps")
        for name in ("cg_precondition", "cg_warm_start", "record_objective"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        _check_int(self.block_size, "block_size")
        _check_int(self.block_sweeps, "block_sweeps")
        if self.block_basis not in BLOCK_BASES:
            raise ValueError(f"block_basis must be one of {BLOCK_BASES}, got {self.block_basis!r}")
        if self.final_user_step not in FINAL_USER_STEPS:
            raise ValueError(
                f"final_user_step must be one of {FINAL_USER_STEPS}, got {self.final_user_step!r}"
            )
        _check_int(self.n_epochs, "n_epochs")
        if self.init_std is not None:
            _check_real(self.init_std, "init_std", low=0.0, low_inclusive=False)
        if self.early_stopping_rounds is not None:
            _check_int(self.early_stopping_rounds, "early_stopping_rounds")
        _check_int(self.validation_k, "validation_k")
        resolve_n_jobs(self.n_jobs)
        if lam == 0:
            if d > min(n_items, n_users):
                raise ValueError(
                    f"regularization=0 with n_factors={d} > min(n_items={n_items}, "
                    f"n_users={n_users}) makes every row system singular (the Gram matrix "
                    "has rank below n_factors): set regularization > 0 or fewer factors"
                )
            if w == 0:
                raise ValueError(
                    "regularization=0 with unobserved_weight=0 leaves rows with fewer than "
                    "n_factors interactions undetermined: set one of them > 0"
                )

    def _eigen_solver(self):
        """Whether the solver works in the Gram eigenbasis (so the fit keeps a common basis)."""
        return self.solver in ("cg", "cholesky") or (
            self.solver == "ialspp" and self.block_basis == "eigen"
        )

    def _offset(self):
        if self.reg_frequency_offset is None:
            return float(self.unobserved_weight)
        return float(self.reg_frequency_offset)

    def _item_weighting(self):
        """True when the unobserved entries carry item weights (beta != 0)."""
        return float(self.item_weight_exponent) != 0

    def _gram_item_weights(self):
        """Per-item weights of the user half-step's Gram matrix, None when unweighted.

        None (not an array of ones) keeps beta = 0 on the plain ``Q^T Q`` product, so it is
        bit-identical to the unweighted estimator.
        """
        return self.item_weights_ if self._item_weighting() else None

    def _terms(self, X, class_prior, dtype):
        row_weight, extra, rhs = objective_terms(
            X,
            self.objective,
            unobserved_weight=self.unobserved_weight,
            confidence_scale=self.confidence_scale,
            prior_inflation=self.prior_inflation,
            class_prior=class_prior,
            item_weight=self._gram_item_weights(),
            dtype=dtype,
        )
        return row_weight, extra, rhs

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, validation_data=None, callback=None, initial_factors=None):
        """Fit the factors.

        Parameters
        ----------
        X : sparse matrix of shape (n_users, n_items)
            Training interactions (every user needs at least one).
        y : sparse matrix, optional
            Held-out interactions added to ``X`` for training (see
            :meth:`linrec.BaseRecommender.fit`).
        validation_data : sparse matrix of shape (n_users, n_items), optional
            Held-out items of the same users (rows aligned with ``X``), never trained on:
            Recall@``validation_k`` is computed after every epoch and drives early stopping.
        callback : callable, optional
            Called as ``callback(model, epoch)`` after every epoch (1-based), with
            ``user_factors_``, ``item_factors_``, ``objective_`` and ``epoch_times_`` set
            to the current state. Returning True stops training.
        initial_factors : tuple of two arrays, optional
            ``(user_factors, item_factors)`` to start from instead of the random
            initialisation (copied; used to compare objectives from the same start).

        Returns
        -------
        self : IALS
        """
        X = self._validate_fit_data(X, y)
        n_users, n_items = X.shape
        self._check_params(n_users, n_items)
        val = None
        if validation_data is not None:
            val = check_interactions(
                validation_data, name="validation_data", n_items=n_items, allow_empty=True
            )
            if val.shape[0] != n_users:
                raise ValueError(
                    f"validation_data has {val.shape[0]} rows but X has {n_users}: it must "
                    "hold held-out items of the same users"
                )
        if self.early_stopping_rounds is not None and val is None:
            raise ValueError("early_stopping_rounds needs validation_data in fit")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        init = None
        if initial_factors is not None:
            P0, Q0 = (np.array(a, dtype=self._fit_dtype(), copy=True) for a in initial_factors)
            d = int(self.n_factors)
            if P0.shape != (n_users, d) or Q0.shape != (n_items, d):
                raise ValueError(
                    f"initial_factors must have shapes ({n_users}, {d}) and ({n_items}, {d}), "
                    f"got {P0.shape} and {Q0.shape}"
                )
            if not (np.isfinite(P0).all() and np.isfinite(Q0).all()):
                raise ValueError("initial_factors contain NaN or infinity")
            init = (P0, Q0)
        self._fit_loop(X, val, callback, init)
        return self

    def _fit(self, X):
        self._check_params(*X.shape)
        self._fit_loop(X, None, None, None)

    def _fit_loop(self, X, val, callback, init):
        dtype = self._fit_dtype()
        n_users, n_items = X.shape
        d = int(self.n_factors)
        lam = float(self.regularization)
        class_prior = None if self.class_prior is None else np.asarray(self.class_prior)
        item_counts = np.bincount(X.indices, minlength=n_items)
        self.item_weights_ = item_weights(
            item_counts, self.item_weight_exponent, self.item_weight_normalization
        ).astype(dtype)
        row_weight, extra, rhs = self._terms(X, class_prior, dtype)
        negative = first_negative_entry(
            X.indptr, X.indices, row_weight, extra, self._gram_item_weights()
        )
        if negative is not None:
            raise negative_weight_error(self.objective, *negative)
        u_indptr = X.indptr.astype(np.int64)
        u_indices = X.indices.astype(np.int64)
        offset = self._offset()
        # the frequency scaling counts observed entries only, never hard negatives
        user_reg = (
            lam * regularization_scale(np.diff(u_indptr), offset, n_items, self.reg_exponent)
        ).astype(dtype)
        item_reg = (
            lam * regularization_scale(item_counts, offset, n_users, self.reg_exponent)
        ).astype(dtype)
        observed_entries = (u_indptr, u_indices, extra, rhs)

        rng = np.random.default_rng(check_random_state_seed(self.random_state))
        std = 0.1 / np.sqrt(d) if self.init_std is None else float(self.init_std)
        P = (rng.standard_normal((n_users, d)) * std).astype(dtype)
        Q = (rng.standard_normal((n_items, d)) * std).astype(dtype)
        if init is not None:
            P, Q = init

        def sides(entries):
            user_side = self._side(*entries, row_weight, user_reg)
            indptr, indices, entry_extra, entry_rhs = entries
            i_indptr, i_indices, perm = transpose_order(indptr, indices, n_items)
            # an item's unobserved entries weigh C_u g_i: g_i is the item row's own weight
            # and the C_u go into the weighted Gram matrix of the item half-step
            item_side = self._side(
                i_indptr,
                i_indices,
                np.ascontiguousarray(entry_extra[perm]),
                np.ascontiguousarray(entry_rhs[perm]),
                self.item_weights_,
                item_reg,
            )
            return user_side, item_side

        hard = int(self.hard_negatives)
        # with hard negatives every epoch builds its own sides
        if not hard:
            user_side, item_side = sides(observed_entries)
        gram_items = self._gram_item_weights()
        # The eigenbasis solvers keep P and Q in one common orthonormal basis (P W, Q W):
        # every score, norm and Gram quadratic form is unchanged by it, and each half-step
        # turns both sides once into the eigenbasis of the Gram matrix it needs, instead of
        # rotating the other side in and the solved rows in and back out (4 products of a
        # factor matrix with a d x d matrix per epoch instead of 6). W is kept in float64;
        # the factors are turned back before anything outside the loop sees them.
        basis = np.eye(d) if self._eigen_solver() else None
        record = self.record_objective
        # CG's item half-step leaves each item's share of the objective's data term here
        # (not summed at all when the objective is not recorded)
        data = np.empty(n_items) if self.solver == "cg" and record else None

        # With the objective recorded, the Gram matrices the half-steps need serve it too (the
        # objective's own two float64 ones took 0.17 s an epoch on Gowalla at d = 256, where
        # the epoch took 0.82 s): the item factors' one is summed at the end of an epoch, for
        # the next user half-step, and the item half-step hands back the users' one turned
        # into the new basis. The half-steps see the same matrices either way.
        item_gram = None

        self.objective_ = []
        self.epoch_times_ = []
        self.validation_scores_ = []
        self.best_epoch_ = 0
        best = (-np.inf, None)
        stale = 0
        epochs = range(1, int(self.n_epochs) + 1)
        bar = tqdm(epochs, desc="IALS", disable=not self.verbose, leave=False)
        for epoch in bar:
            t0 = time.perf_counter()
            if hard:
                # re-mined from the factors as they are (scores are the same in the common
                # basis): the epoch's objective has this epoch's hard negatives
                user_side, item_side = sides(self._with_hard_negatives(observed_entries, X, P, Q))
            self._half_step(
                user_side, P, Q, gram_items, f"epoch {epoch}", "user", basis=basis, gram=item_gram
            )
            user_gram = self._half_step(
                item_side,
                Q,
                P,
                row_weight,
                f"epoch {epoch}",
                "item",
                basis=basis,
                data_rows=data,
                keep_gram=record,
            )
            if record:
                with numba_threads(self.n_jobs):
                    item_gram = weighted_gram(Q, gram_items)
            self.epoch_times_.append(time.perf_counter() - t0)
            message = f"epoch {epoch}"
            if record:
                observed = None if data is None else float(data.sum())
                self.objective_.append(
                    self._objective(user_side, P, Q, item_reg, user_gram, item_gram, observed)
                )
                message += f": objective {self.objective_[-1]:.6g}"
            # validation scores P Q^T are the same in the common basis
            self.user_factors_ = P
            self.item_factors_ = Q
            self.n_epochs_ = epoch
            stop = False
            if val is not None:
                recall = self._validation_recall(X, val)
                self.validation_scores_.append(recall)
                message += f", validation Recall@{self.validation_k} {recall:.5f}"
                if recall > best[0]:
                    best = (recall, _from_basis(Q, basis, self.n_jobs))
                    self.best_epoch_ = epoch
                    stale = 0
                else:
                    stale += 1
                    if (
                        self.early_stopping_rounds is not None
                        and stale >= self.early_stopping_rounds
                    ):
                        stop = True
            logger.info(message)
            if callback is not None:
                self.user_factors_ = _from_basis(P, basis, self.n_jobs)
                self.item_factors_ = _from_basis(Q, basis, self.n_jobs)
                if callback(self, epoch):
                    stop = True
            if stop:
                break
        bar.close()
        P = _from_basis(P, basis, self.n_jobs, in_place=True)
        if val is not None and best[1] is not None:
            Q = best[1]
        else:
            Q = _from_basis(Q, basis, self.n_jobs, in_place=True)
            self.best_epoch_ = self.n_epochs_
        # The final user step against the kept item factors: exact, the stored user factors
        # equal the fold-in of the training rows; "solver", one more half-step of the fit's
        # solver from the last epoch's rows (half an epoch instead of an exact solve)
        exact = self.final_user_step == "exact"
        stage = "final exact step" if exact else "final user step"
        self._user_step(observed_entries, X, row_weight, user_reg, P, Q, stage, exact=exact)
        self.user_factors_ = P
        self.item_factors_ = Q

    def _side(self, indptr, indices, extra, rhs, row_weight, reg):
        """One orientation's arrays for :meth:`_half_step`, with its chunks of rows."""
        chunks = _CHUNKS_PER_THREAD * resolve_n_jobs(self.n_jobs)
        bounds = chunk_bounds(indptr, int(self.n_factors), chunks)
        return (indptr, indices, extra, rhs, row_weight, reg, bounds)

    def _user_step(self, entries, X, row_weight, reg, P, Q, stage, *, exact):
        """User rows of ``P`` (in place) against ``Q`` for the observed ``entries`` of ``X``:
        the fit's final step and the fold-in. With hard negatives they are mined from ``P``
        as it is, which for ``exact`` is first the exact solution without them (so the fit's
        final exact step is :meth:`transform` of the training rows)."""
        gram_items = self._gram_item_weights()
        side = self._side(*entries, row_weight, reg)
        if int(self.hard_negatives):
            if exact:
                self._half_step(side, P, Q, gram_items, stage, "user", exact=True)
            side = self._side(*self._with_hard_negatives(entries, X, P, Q), row_weight, reg)
        self._half_step(side, P, Q, gram_items, stage, "user", exact=exact)

    def _with_hard_negatives(self, entries, X, P, Q):
        """``entries`` (observed, kernel form) plus each row's ``hard_negatives``
        best-scored unobserved items under ``P Q^T``, weighted ``hard_negative_weight``."""
        # more than the catalogue holds would only pad every row
        k = min(int(self.hard_negatives), Q.shape[0])
        hard = top_scored_items(P, Q, k, X, self.n_jobs)
        return with_hard_negatives(*entries, hard, float(self.hard_negative_weight))

    def _half_step(
        self,
        side,
        F,
        other,
        gram_weight,
        stage,
        side_name,
        *,
        exact=False,
        basis=None,
        data_rows=None,
        gram=None,
        keep_gram=False,
    ):
        """Update the rows of ``F`` (in place) given the other side's factors ``other``.

        ``gram_weight`` (per row of ``other``) weights the shared Gram matrix: for the user
        step the item weights g_i (G = sum_i g_i q_i q_i^T), or None without item weighting
        (plain Q^T Q); for the item step the users' unobserved weights C_u
        (G_user = sum_u C_u p_u p_u^T).

        With ``basis`` (the float64 d x d matrix W of the common basis, eigenbasis solvers
        only), ``F`` and ``other`` are both turned in place into the eigenbasis of the Gram
        matrix, the rows are solved there, and ``basis`` is updated to match. ``data_rows``
        (CG in the common basis only) receives each row's share of the objective's data term.

        ``gram``, when the caller has it, is that Gram matrix of ``other`` as it is now, in
        ``F``'s dtype; it is summed here otherwise. With ``keep_gram`` and ``basis`` it is
        returned in float64, turned into the eigenbasis ``other`` ends in (else None).
        """
        *terms, bounds = side  # indptr, indices, extra, rhs, row weights, regularisation
        indptr = terms[0]
        status = np.zeros(F.shape[0], dtype=np.int8)
        solver = "cholesky" if exact else self.solver
        max_row = int(np.max(np.diff(indptr))) if indptr.shape[0] > 1 else 0
        # The Gram matrix on numba's threads, not by a threaded BLAS call: measured here, a
        # threaded BLAS call between two parallel numba regions lets the two thread pools spin
        # against each other and cost up to 0.8 s; the kernel takes 0.056 s at d = 256 for
        # 41k rows on two threads. The d x d eigendecomposition's BLAS stays capped at one.
        with numba_threads(self.n_jobs):
            if gram is None:
                gram = weighted_gram(other, gram_weight)
            gram = np.ascontiguousarray(gram, dtype=F.dtype)
            kept = None
            if basis is not None and not exact:
                eigenvalues, U, _ = gram_eigenbasis(gram, F.dtype)
                rotate_rows(other, U, out=other)
                if keep_gram:
                    U64 = U.astype(np.float64)
                    kept = U64.T @ gram.astype(np.float64) @ U64
                # a warm-started CG reads the current rows; the exact solve and a CG from zero
                # only write them
                if (solver == "cg" and self.cg_warm_start) or solver == "ialspp":
                    rotate_rows(F, U, out=F)
                basis[...] = basis @ U.astype(np.float64)
                solve_rows_diagonal(
                    solver,
                    *terms,
                    eigenvalues,
                    other,
                    F,
                    bounds,
                    status,
                    cg_steps=self.cg_steps,
                    max_row=max_row,
                    data_rows=data_rows,
                    cg_precondition=self.cg_precondition,
                    cg_warm_start=self.cg_warm_start,
                    block_size=self.block_size,
                    block_sweeps=self.block_sweeps,
                )
            else:
                solve_rows(
                    solver,
                    *terms,
                    gram,
                    other,
                    F,
                    bounds,
                    status,
                    cg_steps=self.cg_steps,
                    block_size=self.block_size,
                    block_sweeps=self.block_sweeps,
                    max_row=max_row,
                    cg_precondition=self.cg_precondition,
                    cg_warm_start=self.cg_warm_start,
                    block_basis=self.block_basis,
                )
        if status.any():
            row = int(np.flatnonzero(status)[0])
            raise np.linalg.LinAlgError(
                f"{stage}, {side_name} half-step: the system of {side_name} {row} "
                f"({int(status.astype(bool).sum())} row(s) in all) is not positive definite; "
                "the settings make the problem ill-posed or numerically singular in "
                f"{self.dtype}: raise regularization, lower prior_inflation, or use "
                "dtype='float64'"
            )
        if not np.isfinite(F).all():
            raise FloatingPointError(
                f"{stage}, {side_name} half-step: non-finite {side_name} factors; "
                "raise regularization or lower the weights (confidence_scale, "
                "unobserved_weight)"
            )
        return kept

    def _objective(self, user_side, P, Q, item_reg, user_gram, item_gram, observed=None):
        """J in float64 sums: C_u p^T G p over all entries plus the observed corrections.

        ``user_gram``, sum_u C_u p_u p_u^T, and ``item_gram``, G = sum_i g_i q_i q_i^T, are the
        half-steps' Gram matrices of the factors as they are now (``user_gram`` None when the
        factors are not in the eigenbasis of the item half-step). ``observed``, the data term
        at (P, Q) when the solver already summed it, saves a pass over the entries.
        """
        indptr, indices, extra, rhs, row_weight, user_reg, bounds = user_side
        # Every BLAS call here runs capped at one thread (see _half_step): a threaded one,
        # even the dot products of the penalty, left OpenBLAS's workers spinning into the
        # next epoch, measured 1.6x slower (Gowalla, d = 64, CG).
        with numba_threads(self.n_jobs):
            user_norms, user_diagonal = square_sums(P, row_weight)
            item_norms, item_diagonal = square_sums(Q, self._gram_item_weights())
            # sum_u C_u p_u^T G p_u = <G, sum_u C_u p_u p_u^T>. In the eigenbasis the users'
            # Gram matrix is diagonal but for rounding-sized entries, so the sum is the two
            # diagonals, summed in float64 from the factors as they are, plus an off-diagonal
            # correction taken from the half-steps' matrices (on Gowalla the correction is
            # about 1e-9 of the term, and J comes out within 2.7e-9 of its float64 sum).
            # Elsewhere both matrices are summed again in float64.
            if user_gram is not None:
                all_entries = float(item_diagonal @ user_diagonal)
                off_diagonal = user_gram * item_gram
                np.fill_diagonal(off_diagonal, 0.0)
                all_entries += float(off_diagonal.sum())
            else:
                gram = weighted_gram(Q, self._gram_item_weights(), dtype=np.float64)
                user_gram = weighted_gram(P, row_weight, dtype=np.float64)
                all_entries = float(np.sum(gram * user_gram))
            if observed is None:
                observed = data_term(indptr, indices, extra, rhs, P, Q, bounds)
            reg = float(user_reg.astype(np.float64) @ user_norms)
            reg += float(item_reg.astype(np.float64) @ item_norms)
        return all_entries + observed + reg

    def _validation_recall(self, X, val):
        """Mean Recall@k (hits / |held-out|) of users with held-out items, train excluded.

        Scores the current (fitted-so-far) user and item factors through
        :func:`linrec.metrics.evaluate`.
        """
        from linrec.metrics import evaluate

        k = int(self.validation_k)
        result = evaluate(
            self, X, val, k=(k,), metrics=("recall",), fold_in=False, n_jobs=self.n_jobs
        )
        return float(result.mean("recall", k))

    # ------------------------------------------------------------------ inference
    def transform(self, X, *, class_prior=None):
        """Exact fold-in: the user factors that minimise J for the rows of ``X``.

        With ``hard_negatives``, each row is solved exactly without them, its hard
        negatives are mined from that solution, and it is solved exactly again with them.

        Parameters
        ----------
        X : sparse matrix of shape (n_rows, n_items)
            Histories of (new or training) users; item factors stay fixed.
        class_prior : array-like of shape (n_rows,), optional
            tau_u of these users for the debiased objectives (default prior_inflation *
            n_u / n_items).

        Returns
        -------
        user_factors : ndarray of shape (n_rows, n_factors)
        """
        X = self._validate_rows(X)
        return self._fold_in(X, class_prior)

    def _fold_in(self, X, class_prior=None):
        dtype = self.item_factors_.dtype
        if class_prior is not None:
            class_prior = np.asarray(class_prior, dtype=np.float64)
            if class_prior.shape != (X.shape[0],):
                raise ValueError(
                    f"class_prior must have shape ({X.shape[0]},), got {class_prior.shape}"
                )
        row_weight, extra, rhs = self._terms(X, class_prior, dtype)
        indptr = X.indptr.astype(np.int64)
        reg = (
            float(self.regularization)
            * regularization_scale(
                np.diff(indptr), self._offset(), self.n_items_, self.reg_exponent
            )
        ).astype(dtype)
        entries = (indptr, X.indices.astype(np.int64), extra, rhs)
        Q = self.item_factors_
        P = np.zeros((X.shape[0], Q.shape[1]), dtype=dtype)
        self._user_step(entries, X, row_weight, reg, P, Q, "fold-in", exact=True)
        return P

    def _scores(self, X):
        P = self._fold_in(X)
        # numpy multiplies a single row by BLAS gemv, whose summation order differs from the
        # gemm of a larger batch: pad one row to two so that scores do not depend on the
        # batch size (predict / recommend in batches equal the whole).
        single = P.shape[0] == 1
        if single:
            P = np.vstack([P, np.zeros_like(P)])
        with blas_threads(self.n_jobs):
            scores = P @ self.item_factors_.T
        return scores[:1] if single else scores

    def _user_scores(self, X, user_ids=None):
        if user_ids is None:
            return self._scores(X)
        with blas_threads(self.n_jobs):
            return self.user_factors_[np.asarray(user_ids)] @ self.item_factors_.T

    def _evaluation_factors(self, X_rows, user_ids=None):
        """Factors whose product is ``_user_scores`` (lets evaluate rank tile by tile)."""
        if user_ids is None:
            return self._fold_in(X_rows), self.item_factors_
        return self.user_factors_[np.asarray(user_ids)], self.item_factors_

    def _similar_item_scores(self, item_ids):
        Q = self.item_factors_.astype(np.float64)
        norms = np.linalg.norm(Q, axis=1)
        norms[norms == 0] = 1.0
        with blas_threads(self.n_jobs):
            return (Q[item_ids] / norms[item_ids, None]) @ (Q / norms[:, None]).T
