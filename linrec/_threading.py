"""Thread control: numba's parallel loops take ``n_jobs``; BLAS is limited around them.

numba and the BLAS library each start their own thread pool. If a numba ``prange`` loop calls
into BLAS (or a BLAS call runs while numba threads spin) on a 2-core machine, four or more
threads compete for two cores and everything slows down. Every parallel numba region in linrec
therefore runs inside :func:`numba_threads`, which sets numba's thread count and caps BLAS at
one thread, restoring both afterwards even when the region raises.
"""

from __future__ import annotations

import numbers
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba
from threadpoolctl import ThreadpoolController

__all__ = ["blas_threads", "numba_threads", "resolve_n_jobs", "thread_controller"]

# threadpoolctl finds the loaded thread pools by walking every loaded shared library, which
# took 2.3-2.9 ms a call here (numba and LLVM load many), against 0.02 ms for a limit through
# a controller built once: at d = 64 an iALS epoch on Gowalla (85 ms) paid it twice. A new
# BLAS or OpenMP library arrives with a new extension module, so the controller is rebuilt
# whenever the number of imported modules has changed since it was built.
_controller_lock = threading.Lock()
_controller: ThreadpoolController | None = None
_controller_modules = -1


def thread_controller() -> ThreadpoolController:
    """The process's threadpoolctl controller, rebuilt after new modules were imported."""
    global _controller, _controller_modules
    with _controller_lock:
        n_modules = len(sys.modules)
        if _controller is None or n_modules != _controller_modules:
            _controller = ThreadpoolController()
            _controller_modules = n_modules
        return _controller


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Turn an ``n_jobs`` parameter into a positive thread count.

    ``None`` means every thread numba may use (``NUMBA_NUM_THREADS``, by default the number of
    cores); a negative value counts back from that (``-1`` all, ``-2`` all but one), as in
    scikit-learn.

    Examples
    --------
    >>> resolve_n_jobs(1)
    1
    >>> resolve_n_jobs(None) == resolve_n_jobs(-1)
    True
    """
    available = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return available
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral):
        raise TypeError(f"n_jobs must be an integer or None, got {n_jobs!r}")
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs=0 is not a thread count; use None, a positive or a negative int")
    if n_jobs < 0:
        return max(1, available + 1 + n_jobs)
    return min(n_jobs, available)


@contextmanager
def numba_threads(n_jobs: int | None) -> Iterator[int]:
    """Run a numba-parallel region with ``n_jobs`` threads and BLAS limited to one thread.

    Yields the resolved thread count. Both settings are restored on exit.
    """
    n_threads = resolve_n_jobs(n_jobs)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        with thread_controller().limit(limits=1, user_api="blas"):
            yield n_threads
    finally:
        numba.set_num_threads(previous)


@contextmanager
def blas_threads(n_jobs: int | None) -> Iterator[int]:
    """Run a BLAS-heavy region (large matrix products) with ``n_jobs`` BLAS threads."""
    n_threads = resolve_n_jobs(n_jobs)
    with thread_controller().limit(limits=n_threads, user_api="blas"):
        yield n_threads
