"""iALS on Apache Spark: the :class:`~linrec.ials.IALS` family fitted on a Spark DataFrame.

:class:`SparkIALS` takes an :class:`~linrec.ials.IALS` estimator as its configuration and fits
the same objective (Rendle, Hu, debiased forms; Cholesky, CG or iALS++ row solver) on a
DataFrame of ``(user, item[, weight])`` rows, returning a fitted :class:`~linrec.ials.IALS`
that the rest of linrec uses as if it had been fitted on one machine.

How the work is split (one Spark job per half-step):

- The interactions are deduplicated (weights summed, as the canonical CSR matrix does), the
  ids are mapped to 0-based indices in sorted id order (the order a single-machine fit on the
  matching CSR matrix uses), and every interaction's objective weights are computed once by
  :func:`linrec.ials.objective_terms` on whole user rows. With popularity-weighted unobserved
  entries (``item_weight_exponent != 0``) the item weights g come from the items' training
  counts, which the driver collects with the item ids.
- The interactions are packed twice into ``n_blocks`` cached blocks: user block ``b`` holds
  the rows ``u = b, b + B, b + 2B, ...`` as a CSR matrix, item block ``b`` likewise for the
  items (the transposed matrix).
- A half-step broadcasts the other side's whole factor matrix, the own side's (CG and iALS++
  warm-start from it) and the d x d Gram matrix; each block solves its rows with the numba
  kernels of :mod:`linrec._kernels.als` and returns them with its share of the next Gram
  matrix. The driver sums the shares and assembles the factors.

Every row's system has the same inputs as on one machine, so the factors agree with
:class:`~linrec.ials.IALS` up to the summation order of the Gram matrix.

PySpark is imported inside the functions that need it: ``import linrec.spark`` works without
it (install the ``spark`` extra to use it).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone

from linrec._kernels.als import chunk_bounds, data_term, solve_rows, weighted_gram
from linrec._threading import numba_threads
from linrec._validation import check_random_state_seed
from linrec.ials import (
    IALS,
    first_negative_entry,
    item_weights,
    negative_weight_error,
    regularization_scale,
)

__all__ = ["SparkIALS", "fit_spark", "local_session"]

logger = logging.getLogger(__name__)

# Chunks of rows per thread inside one block's kernel call (load balance of power-law rows).
_CHUNKS_PER_THREAD = 32
# Interactions per block when n_blocks is None: a block travels as one binary value (Arrow
# and the JVM cap a value at 2 GB); 2M entries make about 40 MB per packed block.
_ENTRIES_PER_BLOCK = 2_000_000


def local_session(app_name="linrec", *, cores=2, driver_memory="2g", extra_conf=None):
    """A local-mode SparkSession that only uses the loopback interface.

    Sets ``SPARK_LOCAL_IP=127.0.0.1`` and ``PYSPARK_PYTHON`` (this interpreter) in this
    process's environment (when unset) and the
    driver host, bind address and disabled UI that local mode needs on hosts whose default
    address is not reachable (see PITFALLS in the project notes). For tests, examples and
    single-machine benchmarks; on a cluster use ``spark-submit`` and its configuration.

    Parameters
    ----------
    app_name : str, default="linrec"
    cores : int, default=2
        ``local[cores]``.
    driver_memory : str, default="2g"
    extra_conf : dict, optional
        More ``spark.*`` settings.

    Returns
    -------
    spark : pyspark.sql.SparkSession
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this interpreter (it has linrec's dependencies), not the first
    # "python3" on the PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(f"local[{int(cores)}]")
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(2 * int(cores)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


# ----------------------------------------------------------------------------- executor side
def _terms_task(pdf, ials, user_ids, item_ids, n_items, dtype):
    """Objective weights of whole user rows (one group holds every entry of its users)."""
    import pandas as pd

    users = np.searchsorted(user_ids.value, pdf["u"].to_numpy())
    items = np.searchsorted(item_ids.value, pdf["i"].to_numpy())
    # Values in the fit dtype first, as the single-machine fit's CSR matrix holds them.
    values = pdf["w"].to_numpy().astype(dtype)
    rows, local = np.unique(users, return_inverse=True)
    X = sp.csr_matrix((values, (local, items)), shape=(rows.size, n_items))
    X.sort_indices()
    row_weight, extra, rhs = ials._terms(X, None, np.float64)
    row_of_entry = np.repeat(np.arange(rows.size), np.diff(X.indptr))
    return pd.DataFrame(
        {
            "u": rows[row_of_entry].astype(np.int64),
            "i": X.indices.astype(np.int64),
            "extra": extra,
            "rhs": rhs,
            "c": row_weight[row_of_entry],
        }
    )


def _pack_block(block, key, other, n_rows, n_blocks, entries, config):
    """One block's CSR arrays: rows block, block + B, ... of ``n_rows`` (empty rows kept)."""
    rows = np.arange(block, n_rows, n_blocks, dtype=np.int64)
    keys = entries[key] if entries is not None else np.zeros(0, np.int64)
    local = (keys - block) // n_blocks
    order = np.lexsort((entries[other], local)) if entries is not None else np.zeros(0, int)
    counts = np.bincount(local, minlength=rows.size)
    indptr = np.zeros(rows.size + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    dtype = config["dtype"]
    if entries is not None:
        indices = entries[other][order].astype(np.int64)
        extra = entries["extra"][order].astype(dtype)
        rhs = entries["rhs"][order].astype(dtype)
    else:
        indices = np.zeros(0, np.int64)
        extra = rhs = np.zeros(0, dtype)
    if key == "u":
        # Every user has an interaction (the ids come from the data), so each row's C_u is
        # read at its first entry.
        row_weight = entries["c"][order][indptr[:-1]].astype(dtype)
        n_other = config["n_items"]
    else:
        # Item i's unobserved entries weigh C_u g_i: g_i is the item row's own weight (the
        # C_u are in the Gram matrix of the item half-step); 1 without item weighting.
        weights = config["item_weights"]
        if weights is None:
            row_weight = np.ones(rows.size, dtype=dtype)
        else:
            row_weight = weights.value[rows]
        n_other = config["n_users"]
    reg = (
        config["regularization"]
        * regularization_scale(counts, config["offset"], n_other, config["reg_exponent"])
    ).astype(dtype)
    return {
        "rows": rows,
        "indptr": indptr,
        "indices": indices,
        "extra": extra,
        "rhs": rhs,
        "row_weight": row_weight,
        "reg": reg,
    }


def _block_negative_entry(arrays, config):
    """(user, weight) of a user block's first observed entry with a negative weight, or None
    (:func:`linrec.ials.first_negative_entry` on the block, rows mapped to user indices)."""
    weights = config["item_weights"]
    found = first_negative_entry(
        arrays["indptr"],
        arrays["indices"],
        arrays["row_weight"],
        arrays["extra"],
        None if weights is None else weights.value,
    )
    if found is None:
        return None
    return int(arrays["rows"][found[0]]), found[1]


def _pack_task(pdf, key, other, n_rows, n_blocks, config):
    import pandas as pd

    entries = {name: pdf[name].to_numpy() for name in pdf.columns}
    block = int(entries[key][0] % n_blocks)
    arrays = _pack_block(block, key, other, n_rows, n_blocks, entries, config)
    payload = pickle.dumps(arrays, protocol=5)
    return pd.DataFrame({"block": [block], "payload": [payload]})


def _pack_function(key, other, n_rows, n_blocks, config):
    # applyInPandas takes a one-argument function: bind the side's settings here.
    def pack(pdf):
        return _pack_task(pdf, key, other, n_rows, n_blocks, config)

    return pack


def _solve_task(block_id, arrays, own, other, gram, config, solver, with_objective):
    """Solve one block's rows; returns rows, factors, Gram share, objective share, bad rows."""
    rows = arrays["rows"]
    indptr = arrays["indptr"]
    indices = arrays["indices"]
    extra = arrays["extra"]
    rhs = arrays["rhs"]
    row_weight = arrays["row_weight"]
    reg = arrays["reg"]
    own = own.value
    other = other.value
    gram = gram.value
    d = other.shape[1]
    threads = config["threads_per_task"]
    F = np.ascontiguousarray(own[rows])
    status = np.zeros(rows.size, dtype=np.int8)
    bounds = chunk_bounds(indptr, d, _CHUNKS_PER_THREAD * threads)
    max_row = int(np.max(np.diff(indptr))) if rows.size else 0
    objective = 0.0
    with numba_threads(threads):
        if with_objective:
            # The user-side part of J at the current (P, Q): the single machine's
            # _objective restricted to these rows (float64, Gram trick).
            F64 = F.astype(np.float64)
            Q64 = other.astype(np.float64)
            weights = config["item_weights"]  # the item-weighted Gram sum_i g_i q_i q_i^T
            gram64 = weighted_gram(Q64, None if weights is None else weights.value)
            all_entries = np.einsum("u,ud,ud->", row_weight.astype(np.float64), F64 @ gram64, F64)
            observed = data_term(indptr, indices, extra, rhs, F, other, bounds)
            objective = float(all_entries) + float(observed)
            objective += float(np.dot(reg.astype(np.float64), np.einsum("ud,ud->u", F64, F64)))
        if rows.size:
            solve_rows(
                solver,
                indptr,
                indices,
                extra,
                rhs,
                row_weight,
                reg,
                gram,
                other,
                F,
                bounds,
                status,
                cg_steps=config["cg_steps"],
                block_size=config["block_size"],
                block_sweeps=config["block_sweeps"],
                max_row=max_row,
                cg_precondition=config["cg_precondition"],
                cg_warm_start=config["cg_warm_start"],
                block_basis=config["block_basis"],
            )
        # This block's share of the Gram matrix the other side's next half-step needs:
        # sum_u C_u p_u p_u^T for users, sum_i g_i q_i q_i^T for items (row_weight is g_i,
        # 1 without item weighting).
        F64 = F.astype(np.float64)
        gram_share = weighted_gram(F64, row_weight)
        reg_share = float(np.dot(reg.astype(np.float64), np.einsum("ud,ud->u", F64, F64)))
    bad = rows[status != 0]
    return block_id, rows, F, gram_share, objective, reg_share, bad


# ----------------------------------------------------------------------------- driver side
def _id_kind(df, name):
    from pyspark.sql import types as T

    if name not in df.columns:
        raise ValueError(f"column {name!r} not in the DataFrame (columns: {df.columns})")
    kind = df.schema[name].dataType
    if isinstance(kind, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return "int"
    if isinstance(kind, T.StringType):
        return "str"
    raise ValueError(f"column {name!r} must hold integer or string ids, got {kind.simpleString()}")


def _as_id_array(values, kind):
    if kind == "int":
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.str_)


class SparkIALS(BaseEstimator):
    """Fit an :class:`~linrec.ials.IALS` objective on a Spark DataFrame.

    The IALS estimator given as ``ials`` is the configuration (objective, solver, factors,
    regularisation, epochs, ``random_state``, ``dtype``): every hyper-parameter and its
    validation stay in one place, and the fitted model is a clone of it, as scikit-learn
    meta-estimators do. Its ``n_jobs`` is not used: each Spark task runs its kernels with
    ``threads_per_task`` threads. ``class_prior``, ``early_stopping_rounds`` (which needs
    validation data) and ``hard_negatives`` (mined from all scores every epoch) are not
    supported: fit raises a ValueError. Every other objective,
    weighting and solver setting of :class:`~linrec.ials.IALS` is, including
    popularity-weighted unobserved entries (``item_weight_exponent``,
    ``item_weight_normalization``): the counts n_i are those of the distinct (user, item)
    pairs, the means of g run over the whole catalogue (``item_ids``, whose items without
    interactions get g = 0, as empty columns do on one machine), and ``model_.item_weights_``
    is set as :meth:`linrec.ials.IALS.fit` sets it.

    Parameters
    ----------
    ials : IALS, optional
        The unfitted configuration (None: ``IALS()``). Not modified.
    user_col, item_col : str, default="user", "item"
        Id columns (integer or string types).
    weight_col : str, optional
        Interaction strength (the matrix value; used by the ``"hu"`` objective). None: 1 per
        row. Duplicate (user, item) rows are summed, rows summing to zero dropped.
    n_blocks : int, optional
        User blocks and item blocks (Spark tasks per half-step). None: the larger of the
        Spark default parallelism and one block per 2M interactions.
    threads_per_task : int, default=1
        Numba threads of each task's kernels (match ``spark.task.cpus``).

    Attributes
    ----------
    model_ : IALS
        The fitted estimator, with ``user_ids_`` and ``item_ids_`` (row / column index ->
        original id) set; :meth:`~linrec.BaseRecommender.save` stores them.
    user_ids_, item_ids_ : ndarray
        Sorted distinct ids (int64 or str); index ``k`` of the factors is id ``ids[k]``.
    n_blocks_ : int
        Blocks used.
    n_interactions_ : int
        Distinct (user, item) pairs trained on.
    setup_time_ : float
        Seconds to validate, index, weight and pack the interactions.
    epoch_times_ : list of float
        Seconds per epoch (two half-steps, broadcasts and collects included).

    Notes
    -----
    What is shipped: the interaction blocks are cached on the executors once; each half-step
    broadcasts the two factor matrices and the d x d Gram matrix and collects the updated
    side to the driver (``(n_users + n_items) d`` values each way per epoch); with item
    weighting the n_items weights are broadcast once more per fit. Driver and
    every executor Python worker therefore hold both factor matrices: with d = 64 in float32
    that is 256 bytes per user or item, the limit of this design (about 4 GB for 16M users
    and items). Compute per half-step is that of the single-machine solver, divided over the
    tasks.

    The objective ``model_.objective_`` is computed as on one machine (float64), with the
    user-side part taken by the blocks in the next user half-step.

    Examples
    --------
    A Spark session is needed (``local_session()`` starts a local one)::

        spark = local_session()
        df = spark.createDataFrame([(0, "a"), (0, "b"), (1, "b")], ["user", "item"])
        model = SparkIALS(IALS(n_factors=8, n_epochs=5, random_state=0)).fit(df).model_
        model.recommend(...)
    """

    def __init__(
        self,
        ials=None,
        *,
        user_col="user",
        item_col="item",
        weight_col=None,
        n_blocks=None,
        threads_per_task=1,
    ):
        self.ials = ials
        self.user_col = user_col
        self.item_col = item_col
        self.weight_col = weight_col
        self.n_blocks = n_blocks
        self.threads_per_task = threads_per_task

    # ------------------------------------------------------------------ input
    def _prepare(self, df, item_ids):
        """Validate and deduplicate the rows.

        Returns (entries, user ids, item ids, training interactions per item id, nnz).
        """
        from pyspark.sql import DataFrame
        from pyspark.sql import functions as F

        if not isinstance(df, DataFrame):
            raise TypeError(f"df must be a pyspark.sql.DataFrame, got {type(df).__name__}")
        user_kind = _id_kind(df, self.user_col)
        item_kind = _id_kind(df, self.item_col)
        if self.weight_col is None:
            weight = F.lit(1.0)
        else:
            if self.weight_col not in df.columns:
                raise ValueError(
                    f"weight column {self.weight_col!r} not in the DataFrame "
                    f"(columns: {df.columns})"
                )
            if df.schema[self.weight_col].dataType.typeName() not in (
                "byte",
                "short",
                "integer",
                "long",
                "float",
                "double",
                "decimal",
            ):
                raise ValueError(
                    f"weight column {self.weight_col!r} must be numeric, got "
                    f"{df.schema[self.weight_col].dataType.simpleString()}"
                )
            weight = F.col(self.weight_col).cast("double")
        rows = df.select(
            F.col(self.user_col).alias("u"), F.col(self.item_col).alias("i"), weight.alias("w")
        )
        stats = rows.agg(
            F.count(F.lit(1)).alias("n"),
            F.sum((F.col("u").isNull() | F.col("i").isNull()).cast("long")).alias("null_ids"),
            F.sum(F.col("w").isNull().cast("long")).alias("null_w"),
            F.sum(F.isnan("w").cast("long")).alias("nan_w"),
            F.min("w").alias("min_w"),
            F.max("w").alias("max_w"),
        ).collect()[0]
        if stats["n"] == 0:
            raise ValueError("the DataFrame has no rows: nothing to fit")
        if stats["null_ids"]:
            raise ValueError(f"{stats['null_ids']} row(s) have a null user or item id")
        if stats["null_w"] or stats["nan_w"]:
            raise ValueError(
                f"weight column {self.weight_col!r} holds {stats['null_w']} null and "
                f"{stats['nan_w']} NaN value(s)"
            )
        if stats["min_w"] < 0 or not np.isfinite(stats["max_w"]):
            raise ValueError(
                f"weights must be finite and non-negative, got values in "
                f"[{stats['min_w']}, {stats['max_w']}]"
            )
        entries = rows.groupBy("u", "i").agg(F.sum("w").alias("w")).where(F.col("w") != 0).persist()
        per_user = entries.groupBy("u").count().collect()
        users = _as_id_array([r[0] for r in per_user], user_kind)
        nnz = int(sum(r[1] for r in per_user))
        # The item counts n_i (of the item weights g_i) come with the distinct item ids.
        per_item = entries.groupBy("i").count().collect()
        data_items = _as_id_array([r[0] for r in per_item], item_kind)
        data_counts = np.array([r[1] for r in per_item], dtype=np.int64)
        if users.size == 0:
            raise ValueError("every weight is zero: no interaction to fit")
        users.sort()
        order = np.argsort(data_items)
        data_items = data_items[order]
        data_counts = data_counts[order]
        if item_ids is None:
            items = data_items
        else:
            items = np.unique(_as_id_array(item_ids, item_kind))
            missing = np.setdiff1d(data_items, items)
            if missing.size:
                raise ValueError(
                    f"{missing.size} item id(s) of the data are not in item_ids "
                    f"(first: {missing[0]!r})"
                )
        item_counts = np.zeros(items.size, dtype=np.int64)
        item_counts[np.searchsorted(items, data_items)] = data_counts
        return entries, users, items, item_counts, nnz

    # ------------------------------------------------------------------ fit
    def fit(self, df, *, item_ids=None, initial_factors=None):
        """Fit the configured IALS objective on the interactions of ``df``.

        Parameters
        ----------
        df : pyspark.sql.DataFrame
            One row per interaction: ``user_col``, ``item_col`` and optionally ``weight_col``.
        item_ids : array-like, optional
            The item catalogue (a superset of the data's items), e.g. to keep items without
            training interactions as columns; they get the factors a single-machine fit
            gives an empty column. None: the items of ``df``.
        initial_factors : tuple of two arrays, optional
            ``(user_factors, item_factors)`` in sorted-id order to start from instead of the
            random initialisation (as :meth:`linrec.ials.IALS.fit`).

        Returns
        -------
        self : SparkIALS
        """
        from pyspark.sql import functions as F

        ials = IALS() if self.ials is None else self.ials
        if not isinstance(ials, IALS):
            raise TypeError(f"ials must be an IALS estimator, got {type(ials).__name__}")
        model = clone(ials)
        if model.class_prior is not None:
            raise ValueError(
                "class_prior (one value per user row) is not supported on Spark: use "
                "prior_inflation, or fit IALS on one machine"
            )
        if model.early_stopping_rounds is not None:
            raise ValueError("early_stopping_rounds needs validation data, not supported on Spark")
        if model.hard_negatives:
            raise ValueError(
                "hard_negatives (re-mined from all scores every epoch) is not supported on "
                "Spark: fit IALS on one machine"
            )
        threads = self.threads_per_task
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads_per_task must be a positive integer, got {threads!r}")
        if self.n_blocks is not None and (
            isinstance(self.n_blocks, bool)
            or not isinstance(self.n_blocks, (int, np.integer))
            or self.n_blocks < 1
        ):
            raise ValueError(f"n_blocks must be a positive integer or None, got {self.n_blocks!r}")

        t_setup = time.perf_counter()
        spark = df.sparkSession
        sc = spark.sparkContext
        entries, users, items, item_counts, nnz = self._prepare(df, item_ids)
        logger.info(
            "checked and indexed %d interactions of %d users and %d items: %.1f s",
            nnz,
            users.size,
            items.size,
            time.perf_counter() - t_setup,
        )
        n_users, n_items = users.size, items.size
        model._check_params(n_users, n_items)
        dtype = model._fit_dtype()
        d = int(model.n_factors)
        n_blocks = self.n_blocks
        if n_blocks is None:
            n_blocks = max(sc.defaultParallelism, -(-nnz // _ENTRIES_PER_BLOCK))
        n_blocks = int(n_blocks)
        # As IALS.fit: g from the training counts, in the fit dtype, set before the terms
        # (model._terms reads it; the terms tasks get the model with it).
        model.item_weights_ = item_weights(
            item_counts, model.item_weight_exponent, model.item_weight_normalization
        ).astype(dtype)
        weighted = model._item_weighting()

        bc_users = sc.broadcast(users)
        bc_items = sc.broadcast(items)
        # None keeps beta = 0 on the unweighted code path (bit-identical to no item weights).
        bc_weights = sc.broadcast(model.item_weights_) if weighted else None
        terms = entries.groupBy(F.pmod(F.hash("u"), F.lit(n_blocks))).applyInPandas(
            lambda pdf: _terms_task(pdf, model, bc_users, bc_items, n_items, dtype),
            schema="u long, i long, extra double, rhs double, c double",
        )
        terms = terms.persist()
        config = {
            "dtype": dtype,
            "n_users": n_users,
            "n_items": n_items,
            "regularization": float(model.regularization),
            "offset": model._offset(),
            "reg_exponent": float(model.reg_exponent),
            "threads_per_task": int(threads),
            "cg_steps": int(model.cg_steps),
            "cg_precondition": bool(model.cg_precondition),
            "cg_warm_start": bool(model.cg_warm_start),
            "block_size": min(int(model.block_size), d),
            "block_sweeps": int(model.block_sweeps),
            "block_basis": model.block_basis,
            "item_weights": bc_weights,
        }
        sides, cached = {}, []
        for key, other, n_rows in (("u", "i", n_users), ("i", "u", n_items)):
            packed = terms.groupBy(F.pmod(F.col(key), F.lit(n_blocks))).applyInPandas(
                _pack_function(key, other, n_rows, n_blocks, config),
                schema="block int, payload binary",
            )
            blocks = packed.rdd.map(lambda row: (row.block, pickle.loads(row.payload))).persist()
            # Collecting the block ids also fills the cache; the user blocks report their
            # first observed entry with a negative weight (checked before the item blocks).
            if key == "u":
                found = blocks.map(lambda kv: (kv[0], _block_negative_entry(kv[1], config)))
                found = found.collect()
            else:
                found = [(block, None) for block in blocks.keys().collect()]
            present = {block for block, _ in found}
            cached.append(blocks)
            negative = [entry for _, entry in found if entry is not None]
            if negative:
                for rdd in (*cached, terms, entries):
                    rdd.unpersist()
                for bc in (bc_users, bc_items, bc_weights):
                    if bc is not None:
                        bc.destroy()
                user, weight = min(negative)
                raise negative_weight_error(model.objective, user, weight)
            # Blocks without any interaction (only when there are more blocks than rows
            # with data) still own rows (empty items of the catalogue): pack them here.
            absent = [b for b in range(n_blocks) if b not in present and b < n_rows]
            if absent:
                # A union reads the cached blocks from the cache: no second copy.
                blocks = blocks.union(
                    sc.parallelize(
                        [
                            (b, _pack_block(b, key, other, n_rows, n_blocks, None, config))
                            for b in absent
                        ],
                        len(absent),
                    )
                )
            sides[key] = blocks
            logger.info("%s blocks packed: %.1f s", key, time.perf_counter() - t_setup)
        terms.unpersist()
        entries.unpersist()
        self.setup_time_ = time.perf_counter() - t_setup

        rng = np.random.default_rng(check_random_state_seed(model.random_state))
        std = 0.1 / np.sqrt(d) if model.init_std is None else float(model.init_std)
        P = (rng.standard_normal((n_users, d)) * std).astype(dtype)
        Q = (rng.standard_normal((n_items, d)) * std).astype(dtype)
        if initial_factors is not None:
            P, Q = (np.array(a, dtype=dtype, copy=True) for a in initial_factors)
            if P.shape != (n_users, d) or Q.shape != (n_items, d):
                raise ValueError(
                    f"initial_factors must have shapes ({n_users}, {d}) and ({n_items}, {d}), "
                    f"got {P.shape} and {Q.shape}"
                )
            if not (np.isfinite(P).all() and np.isfinite(Q).all()):
                raise ValueError("initial_factors contain NaN or infinity")
        with numba_threads(1):  # single-threaded BLAS, as the single-machine fit
            gram_items = weighted_gram(Q, model.item_weights_ if weighted else None)
            gram_items = np.ascontiguousarray(gram_items, dtype=dtype)

        bc_P = sc.broadcast(P)
        bc_Q = sc.broadcast(Q)
        objective, epoch_times = [], []
        item_reg_term = None
        try:
            for epoch in range(1, int(model.n_epochs) + 2):
                final = epoch == int(model.n_epochs) + 1
                t0 = time.perf_counter()
                # user half-step (the last one: IALS.fit's final user step, exact by default)
                exact = final and model.final_user_step == "exact"
                P, gram_users, user_objective, _ = self._half_step(
                    sc,
                    sides["u"],
                    bc_P,
                    bc_Q,
                    gram_items,
                    config,
                    "cholesky" if exact else model.solver,
                    with_objective=epoch > 1,
                    stage=(
                        ("final exact step" if exact else "final user step")
                        if final
                        else f"epoch {epoch}"
                    ),
                    side_name="user",
                    dtype=dtype,
                )
                if epoch > 1:
                    objective.append(user_objective + item_reg_term)
                bc_P.destroy()
                bc_P = sc.broadcast(P)
                if final:
                    break
                Q, gram_items, _, item_reg_term = self._half_step(
                    sc,
                    sides["i"],
                    bc_Q,
                    bc_P,
                    gram_users,
                    config,
                    model.solver,
                    with_objective=False,
                    stage=f"epoch {epoch}",
                    side_name="item",
                    dtype=dtype,
                )
                bc_Q.destroy()
                bc_Q = sc.broadcast(Q)
                epoch_times.append(time.perf_counter() - t0)
                logger.info("epoch %d: %.2f s", epoch, epoch_times[-1])
        finally:
            for bc in (bc_P, bc_Q, bc_users, bc_items, bc_weights):
                if bc is not None:
                    bc.destroy()
            for blocks in cached:
                blocks.unpersist()

        model.user_factors_ = P
        model.item_factors_ = Q
        model.objective_ = objective
        model.epoch_times_ = epoch_times
        model.validation_scores_ = []
        model.n_epochs_ = int(model.n_epochs)
        model.best_epoch_ = int(model.n_epochs)
        model.n_users_ = n_users
        model.n_items_ = n_items
        model.n_features_in_ = n_items
        model.user_ids_ = users
        model.item_ids_ = items
        self.model_ = model
        self.user_ids_ = users
        self.item_ids_ = items
        self.n_blocks_ = n_blocks
        self.n_interactions_ = int(nnz)
        self.epoch_times_ = epoch_times
        return self

    @staticmethod
    def _half_step(
        sc,
        blocks,
        bc_own,
        bc_other,
        gram,
        config,
        solver,
        *,
        with_objective,
        stage,
        side_name,
        dtype,
    ):
        bc_gram = sc.broadcast(np.ascontiguousarray(gram, dtype=dtype))
        try:
            results = blocks.map(
                lambda kv: _solve_task(
                    kv[0], kv[1], bc_own, bc_other, bc_gram, config, solver, with_objective
                )
            ).collect()
        finally:
            bc_gram.destroy()
        own = bc_own.value
        F = np.empty_like(own)
        next_gram = np.zeros((own.shape[1], own.shape[1]))
        objective = 0.0
        reg_term = 0.0
        bad = []
        # Sum the shares in block order: the result does not depend on task scheduling.
        for _, rows, factors, gram_share, obj_share, reg_share, bad_rows in sorted(
            results, key=lambda r: r[0]
        ):
            F[rows] = factors
            next_gram += gram_share
            objective += obj_share
            reg_term += reg_share
            bad.extend(bad_rows.tolist())
        if bad:
            raise np.linalg.LinAlgError(
                f"{stage}, {side_name} half-step: the system of {side_name} {min(bad)} "
                f"({len(bad)} row(s) in all) is not positive definite; raise regularization, "
                "lower prior_inflation, or use dtype='float64'"
            )
        if not np.isfinite(F).all():
            raise FloatingPointError(
                f"{stage}, {side_name} half-step: non-finite {side_name} factors; raise "
                "regularization or lower the weights (confidence_scale, unobserved_weight)"
            )
        return F, next_gram.astype(dtype), objective, reg_term

    # ------------------------------------------------------------------ outputs
    def user_factors_frame(self, spark=None):
        """The user factors as a DataFrame ``(user_col, features: array<float|double>)``."""
        return self._frame(self.user_ids_, self.model_.user_factors_, self.user_col, spark)

    def item_factors_frame(self, spark=None):
        """The item factors as a DataFrame ``(item_col, features: array<float|double>)``."""
        return self._frame(self.item_ids_, self.model_.item_factors_, self.item_col, spark)

    @staticmethod
    def _frame(ids, factors, name, spark):
        import pandas as pd
        from pyspark.sql import SparkSession

        spark = spark or SparkSession.getActiveSession()
        if spark is None:
            raise ValueError("no active SparkSession: pass spark=")
        pdf = pd.DataFrame({name: ids, "features": list(factors)})
        return spark.createDataFrame(pdf)


def fit_spark(ials, df, *, user_col="user", item_col="item", weight_col=None, **fit_params):
    """Fit ``ials``'s objective on a Spark DataFrame; returns the fitted IALS (a clone).

    Shorthand for ``SparkIALS(ials, user_col=..., item_col=..., weight_col=...)
    .fit(df, **fit_params).model_``; see :class:`SparkIALS`.
    """
    fitter = SparkIALS(ials, user_col=user_col, item_col=item_col, weight_col=weight_col)
    return fitter.fit(df, **fit_params).model_
