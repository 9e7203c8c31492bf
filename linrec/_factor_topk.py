"""Exact top-k of factor products ``U V^T``, with one tie rule: a higher score first, then the
lower item index.

:func:`top_factor_chunk` (:func:`linrec.metrics.evaluate`, small k) never holds a score row: a
chunk of users is multiplied by a tile of items into a buffer that stays in a core's L2 cache
and is fed straight to running top-k heaps (:func:`linrec._kernels.topk.topk_tile_serial`).
:func:`top_scored_items` (the iALS hard negatives, k in the hundreds) holds whole rows for a
few users at a time and selects above a threshold read off a sample of each row
(:func:`linrec._kernels.topk.topk_rows_sampled_serial`), where the heaps' insertions cost more.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from linrec._kernels.topk import finish_heaps_serial, topk_rows_sampled_serial, topk_tile_serial
from linrec._threading import blas_threads, resolve_n_jobs

__all__ = ["map_chunks", "top_factor_chunk", "top_scored_items"]

# Users per task and items per score tile; a 256 x 1024 float32 tile (1 MiB) stays in a core's
# L2 cache between the matrix product and the top-k scan.
FACTOR_USERS = 256
FACTOR_ITEMS = 1024
# top_scored_items holds whole score rows, at most this many bytes of them per task
SCORE_ROWS_BYTES = 16 << 20


def map_chunks(task, starts, n_threads):
    """Yield ``(start, task(start))`` for every start, in order, computed on ``n_threads``
    Python threads with BLAS single-threaded: each task multiplies and ranks its own chunk
    (the kernels release the GIL)."""
    with blas_threads(1):
        if n_threads == 1:
            for start in starts:
                yield start, task(start)
            return
        with ThreadPoolExecutor(n_threads) as pool:
            futures = [(start, pool.submit(task, start)) for start in starts]
            for start, fut in futures:
                yield start, fut.result()


def top_factor_chunk(U_chunk, V, k, exclude_indptr, exclude_indices):
    """Top-``k`` items of ``U_chunk V^T`` per row, items of each row's exclusion list skipped.

    One chunk of users on one thread (BLAS should be single-threaded): item tiles in increasing
    order into running heaps. Returns ``(item_ids, scores)`` of shape ``(rows, k)``, best
    first, padded with -1 / -inf where a row has fewer than ``k`` eligible items.
    ``exclude_indices`` must be sorted within each row.
    """
    n_rows = U_chunk.shape[0]
    n_items = V.shape[0]
    heap_idx = np.empty((n_rows, k), dtype=np.int64)
    heap_val = np.empty((n_rows, k), dtype=U_chunk.dtype)
    sizes = np.zeros(n_rows, dtype=np.int64)
    excl_pos = exclude_indptr[:-1].copy()
    buffers = {}
    for offset in range(0, n_items, FACTOR_ITEMS):
        width = min(FACTOR_ITEMS, n_items - offset)
        if width not in buffers:
            buffers[width] = np.empty((n_rows, width), dtype=U_chunk.dtype)
        tile = np.matmul(U_chunk, V[offset : offset + width].T, out=buffers[width])
        topk_tile_serial(
            tile, offset, k, exclude_indptr, exclude_indices, excl_pos, sizes, heap_idx, heap_val
        )
    finish_heaps_serial(sizes, heap_idx, heap_val)
    return heap_idx, heap_val


def top_scored_items(user_factors, item_factors, k, exclude, n_jobs=None):
    """Each user's ``k`` best-scored items by ``user_factors @ item_factors.T``, excluding
    the items of the user's row of ``exclude`` (a canonical CSR matrix: sorted indices).

    Parameters
    ----------
    user_factors : ndarray of shape (n_users, d)
    item_factors : ndarray of shape (n_items, d), same dtype
    k : int
    exclude : csr_matrix of shape (n_users, n_items)
    n_jobs : int, optional
        Threads (chunks of at most :data:`FACTOR_USERS` users and :data:`SCORE_ROWS_BYTES`
        of scores each, BLAS single-threaded).

    Returns
    -------
    item_ids : ndarray of shape (n_users, k), int64
        Best first, ties to the lower item index; -1 where fewer than ``k`` items are eligible.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> U = np.array([[1.0, 0.0]]); V = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    >>> top_scored_items(U, V, 2, sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 3)))
    array([[1, 2]])
    """
    n_users, n_items = user_factors.shape[0], item_factors.shape[0]
    indptr = exclude.indptr.astype(np.int64)
    indices = exclude.indices.astype(np.int64)
    out = np.empty((n_users, k), dtype=np.int64)
    # Whole score rows (at most SCORE_ROWS_BYTES a task) for the threshold selection, which
    # needs no heap: measured on Gowalla (factors of a d = 64 fit, 2 threads), 2.18 against
    # 2.33 s for every user's K = 400 and 2.61 against 3.84 s for K = 800 by the tiled heaps.
    rows = max(1, min(FACTOR_USERS, SCORE_ROWS_BYTES // max(1, n_items * item_factors.itemsize)))

    def chunk(start):
        stop = min(start + rows, n_users)
        ptr = indptr[start : stop + 1]
        scores = user_factors[start:stop] @ item_factors.T
        ids = np.empty((stop - start, k), dtype=np.int64)
        topk_rows_sampled_serial(scores, k, ptr - ptr[0], indices[ptr[0] : ptr[-1]], ids)
        return ids

    starts = range(0, n_users, rows)
    for start, ids in map_chunks(chunk, starts, resolve_n_jobs(n_jobs)):
        out[start : start + ids.shape[0]] = ids
    return out
