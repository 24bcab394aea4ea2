"""Every registered probe through the one protocol (fit, scores, from_gram) against its numpy or scikit-learn oracle,
and the streamed fit of every streaming probe against its in-memory fit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from jaxmem.probes import gram
from jaxmem.probes.registry import PROBES, check_probe_names, masc_probe, registry_order, select_probes
from jaxmem.reference import numpy_masc

M, C, D, N, T = 2, 3, 6, 6000, 400
STREAMING = ("masc", "linear", "ncm", "lda", "qda")


@pytest.fixture(scope="module")
def data():
    """Two members on the same [N, D] rows with different labels: Gaussian classes with their own mean and
    covariance, shifted away from the origin (so uncentred and centred moments differ)."""
    rng = np.random.default_rng(0)
    means = 2 * rng.normal(size=(C, D)) + 1
    mixing = np.eye(D) + 0.3 * rng.normal(size=(C, D, D))
    labels = rng.integers(0, C, N + T)
    x = np.einsum("nd,nde->ne", rng.normal(size=(N + T, D)), mixing[labels]) + means[labels]
    member_labels = np.stack([labels[:N], np.where(rng.random(N) < 0.3, rng.integers(0, C, N), labels[:N])])
    features = np.stack([x[:N], x[:N] * 1.5 + 0.5])  # [M, N, D]
    tests = np.stack([x[N:], x[N:] * 1.5 + 0.5])  # [M, T, D]
    return features.astype(np.float32), member_labels, tests.astype(np.float32), labels[N:]


def _oracle(name, x, y, xt):
    """The oracle's predictions for one member: scikit-learn where it has the probe, numpy otherwise."""
    if name == "masc":
        return numpy_masc.predict(numpy_masc.fit(x, y, C, 2), xt)
    if name == "linear":  # leading eigenvector of the uncentred Gram, sign so that its mean projection is >= 0
        vectors = []
        for c in range(C):
            _, eigenvectors = np.linalg.eigh(x[y == c].T @ x[y == c])
            v = eigenvectors[:, -1]
            vectors.append(-v if v @ x.mean(0) < 0 else v)
        return np.argmax(xt @ np.stack(vectors).T, 1)
    if name == "ncm":
        means = np.stack([x[y == c].mean(0) for c in range(C)])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        return np.argmax(xt @ means.T, 1)
    estimator = {
        "knn": lambda: KNeighborsClassifier(5, metric="cosine", algorithm="brute"),
        "lda": LinearDiscriminantAnalysis,
        "qda": QuadraticDiscriminantAnalysis,
        "logreg": lambda: LogisticRegression(C=1e6, max_iter=5000),
    }[name]()
    return estimator.fit(x, y).predict(xt)


@pytest.mark.parametrize("name", list(PROBES))
def test_every_probe_through_the_protocol_matches_its_oracle(name, data):
    features, labels, tests, test_labels = data
    probe = masc_probe(2, precision="exact") if name == "masc" else PROBES[name]  # 2 of 6 directions
    state = probe.fit(features, labels, C, key=jax.random.key(0))
    scores = probe.scores(state, tests)
    assert scores.shape == (M, T, C)
    predicted = np.asarray(probe.predict(state, tests))
    np.testing.assert_array_equal(predicted, np.argmax(np.asarray(scores), -1))
    for m in range(M):
        expected = _oracle(name, features[m].astype(np.float64), labels[m], tests[m].astype(np.float64))
        if name == "logreg":  # Adam for 20 epochs vs scikit-learn's optimum: the same accuracy, not the same model
            accuracy, oracle_accuracy = (np.mean(p == test_labels) for p in (predicted[m], expected))
            assert abs(accuracy - oracle_accuracy) <= 0.05 and oracle_accuracy > 0.6, (accuracy, oracle_accuracy)
        else:
            np.testing.assert_array_equal(predicted[m], expected)


@pytest.mark.parametrize("name", STREAMING)
@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_streamed_fit_equals_in_memory_fit(name, precision, data):
    features, labels, tests, _ = data
    probe = select_probes([name], precision=precision)[name]
    with jax.enable_x64(precision == "exact"):
        schedule = gram.chunk_schedule(labels, C, 32)  # class-pure chunks, as the engine streams them
        dtype = jnp.float64 if precision == "exact" else jnp.float32
        state = gram.accumulate_members(jnp.asarray(features, dtype), schedule, C, D, False)
    streamed = probe.from_gram(state)
    direct = probe.fit(features, labels, C, key=jax.random.key(0))
    np.testing.assert_array_equal(probe.predict(streamed, tests), probe.predict(direct, tests))
    np.testing.assert_allclose(probe.scores(streamed, tests), probe.scores(direct, tests), rtol=2e-3, atol=2e-3)


def test_only_knn_and_logistic_regression_need_the_activations():
    assert [name for name, probe in PROBES.items() if not probe.streams] == ["knn", "logreg"]


def test_names_variants_and_order():
    probes = select_probes(["ncm", "masc"], variance=0.5, sensitivity=[0.5, 1, 0.25])
    assert list(probes) == ["ncm", "masc", "masc(n=1)", "masc(n=0.25)"]  # n = 0.5 is "masc" itself
    assert select_probes(["masc(n=3)"])["masc(n=3)"].name == "masc(n=3)"
    assert sorted(["logreg", "masc(n=1)", "linear", "masc"], key=registry_order) == [
        "masc", "masc(n=1)", "linear", "logreg"]
    with pytest.raises(ValueError, match="unknown probes"):
        check_probe_names(["svm", "masc(n=2.5)"])
