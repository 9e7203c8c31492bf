import numpy as np
import scipy.sparse as sp

from linrec import ItemKNN, MostPopular

from contract import RecommenderContract


class TestMostPopularContract(RecommenderContract):
    def make_estimator(self):
        return MostPopular(n_jobs=1)


class TestItemKNNContract(RecommenderContract):
    def make_estimator(self):
        return ItemKNN(n_neighbors=10, block_size=7, n_jobs=1)


def test_most_popular_counts_users_not_strength():
    X = sp.csr_matrix(np.array([[5.0, 0, 1], [1, 0, 0], [0, 1, 0]]))
    model = MostPopular().fit(X)
    np.testing.assert_array_equal(model.item_popularity_, [2, 1, 1])


def test_itemknn_equals_dense_cosine_reference(rng):
    X = sp.random(80, 25, density=0.2, random_state=rng, format="csr")
    X.data[:] = 1
    X = X[np.diff(X.indptr) > 0]
    k = 6
    model = ItemKNN(n_neighbors=k, shrinkage=0.5, block_size=4, dtype="float64").fit(X)
    D = X.toarray()
    norms = np.linalg.norm(D, axis=0)
    sim = D.T @ D / (np.outer(norms, norms) + 0.5)
    np.fill_diagonal(sim, -np.inf)
    expected = np.zeros_like(sim)
    for i in range(sim.shape[0]):
        order = np.lexsort((np.arange(sim.shape[1]), -sim[i]))[:k]
        expected[i, order] = np.maximum(sim[i, order], 0)
    np.testing.assert_allclose(model.similarity_.toarray(), expected, atol=1e-12)
    np.testing.assert_allclose(model.predict(X), D @ expected.T, atol=1e-10)
