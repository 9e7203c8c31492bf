import numpy as np
import pytest
import scipy.sparse as sp

from linrec._validation import (
    check_interactions,
    check_item_ids,
    check_positive_float,
    check_random_state_seed,
)


def test_sums_duplicates_sorts_and_drops_zeros():
    coo = sp.coo_matrix(([1.0, 2.0, 0.0, 3.0], ([0, 0, 1, 1], [2, 2, 0, 1])), shape=(2, 3))
    X = check_interactions(coo)
    assert X.format == "csr" and X.has_sorted_indices
    np.testing.assert_array_equal(X.toarray(), [[0, 0, 3], [0, 3, 0]])
    assert X.nnz == 2


def test_returns_a_copy_that_shares_no_memory():
    X = sp.random(5, 4, density=0.5, format="csr", random_state=0, dtype=np.float32)
    out = check_interactions(X)
    out.data[:] = 99
    assert not np.shares_memory(out.data, X.data)
    assert not np.any(X.data == 99)


@pytest.mark.parametrize(
    "value, message",
    [(np.nan, r"NaN at \(row 1, column 2\)"), (np.inf, "infinity"), (-2.0, "negative value")],
)
@pytest.mark.parametrize("sparse", [False, True])
def test_bad_values_are_named_with_position(value, message, sparse):
    X = np.ones((3, 4))
    X[1, 2] = value
    with pytest.raises(ValueError, match=message):
        check_interactions(sp.csr_matrix(X) if sparse else X)


def test_shape_errors():
    with pytest.raises(ValueError, match="2-D"):
        check_interactions(np.ones(3))
    with pytest.raises(ValueError, match="empty"):
        check_interactions(np.ones((0, 3)))
    with pytest.raises(ValueError, match="no interactions"):
        check_interactions(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="5 features, but IALS is expecting 4"):
        check_interactions(np.ones((2, 5)), n_items=4, estimator_name="IALS")
    with pytest.raises(ValueError, match="Complex data"):
        check_interactions(np.ones((2, 2), dtype=complex))
    with pytest.raises(ValueError, match="None"):
        check_interactions(None)


def test_empty_rows_rejected_only_when_asked():
    X = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert check_interactions(X).shape == (3, 2)
    with pytest.raises(ValueError, match=r"1 user row\(s\) without any interaction.*\[1\]"):
        check_interactions(X, allow_empty_rows=False)


def test_dtype_and_index_types():
    X = check_interactions(np.eye(3, dtype=np.int8), dtype=np.float64)
    assert X.dtype == np.float64
    assert X.indices.dtype.kind == "i"


def test_item_ids():
    np.testing.assert_array_equal(check_item_ids(2, 3), [2])
    np.testing.assert_array_equal(check_item_ids(np.array([1.0, 2.0]), 3), [1, 2])
    with pytest.raises(ValueError, match="out of range"):
        check_item_ids([-1], 3)
    with pytest.raises(ValueError, match="integer"):
        check_item_ids([0.5], 3)
    with pytest.raises(ValueError, match="1-D"):
        check_item_ids([[0]], 3)


def test_positive_float():
    assert check_positive_float(2, "lam") == 2.0
    assert check_positive_float(0, "lam", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        check_positive_float(0, "lam")
    with pytest.raises(ValueError):
        check_positive_float(float("nan"), "lam")
    with pytest.raises(TypeError):
        check_positive_float("1", "lam")


def test_seed_from_random_state_is_reproducible():
    assert check_random_state_seed(3) == check_random_state_seed(3)
    assert check_random_state_seed(3) != check_random_state_seed(4)
    rs = np.random.RandomState(0)
    assert 0 <= check_random_state_seed(rs) < 2**62
