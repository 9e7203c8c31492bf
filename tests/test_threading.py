import numba
import pytest
from threadpoolctl import threadpool_info

from linrec._threading import blas_threads, numba_threads, resolve_n_jobs, thread_controller


def test_resolve_n_jobs():
    available = numba.config.NUMBA_NUM_THREADS
    assert resolve_n_jobs(None) == available
    assert resolve_n_jobs(-1) == available
    assert resolve_n_jobs(1) == 1
    assert resolve_n_jobs(10_000) == available
    assert resolve_n_jobs(-10_000) == 1
    with pytest.raises(ValueError):
        resolve_n_jobs(0)
    with pytest.raises(TypeError):
        resolve_n_jobs(1.5)


def _blas_threads():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_numba_threads_sets_and_restores_even_on_error():
    before = numba.get_num_threads()
    with pytest.raises(RuntimeError):
        with numba_threads(1) as n:
            assert n == 1
            assert numba.get_num_threads() == 1
            assert all(t == 1 for t in _blas_threads())
            raise RuntimeError("boom")
    assert numba.get_num_threads() == before


def test_blas_threads_limit():
    with blas_threads(1):
        assert all(t == 1 for t in _blas_threads())


def test_thread_controller_is_reused_until_a_module_is_imported(monkeypatch):
    import sys
    import types

    first = thread_controller()
    assert thread_controller() is first
    # a new extension module may bring its own BLAS: the controller is rebuilt
    monkeypatch.setitem(sys.modules, "linrec_test_fake_module", types.ModuleType("fake"))
    rebuilt = thread_controller()
    assert rebuilt is not first
    assert thread_controller() is rebuilt
    # every BLAS found by a fresh scan is limited inside numba_threads and restored after
    before = _blas_threads()
    with numba_threads(1):
        assert _blas_threads() and all(t == 1 for t in _blas_threads())
    assert _blas_threads() == before
