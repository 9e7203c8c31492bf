"""numba kernels. Private: estimators call them; tests compare them with numpy references."""
