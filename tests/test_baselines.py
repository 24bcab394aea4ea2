"""The baseline probes against scikit-learn, their degenerate cases and the member axis."""
import jax
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.neighbors import KNeighborsClassifier

from jaxmem.probes import gram, moments, over_members, qda
from jaxmem.probes.registry import PROBES

NCM, LDA, QDA, LOGREG = (PROBES[name] for name in ("ncm", "lda", "qda", "logreg"))

TIE = 1e-6


def split_blobs(n_train, n_test, dim, centers, std, seed):
    x, y = make_blobs(n_train + n_test, dim, centers=centers, cluster_std=std, random_state=seed)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def gaussian_classes(rng, sizes, dim, shift=1.5):
    """Classes with their own well-conditioned covariance and mean: features [N, D], labels [N]."""
    features, labels = [], []
    for c, size in enumerate(sizes):
        mixing = np.eye(dim) + 0.3 * rng.normal(size=(dim, dim))
        features.append(rng.normal(size=(size, dim)) @ mixing + shift * rng.normal(size=dim))
        labels.append(np.full(size, c))
    return np.concatenate(features), np.concatenate(labels)


def assert_same_up_to_ties(ours, theirs, decision, classes):
    """Predictions equal except where the top two scikit-learn decision values tie within TIE (relative)."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    top_two = np.sort(decision, axis=1)[:, -2:]
    tied = top_two[:, 1] - top_two[:, 0] <= TIE * np.maximum(1, np.abs(top_two[:, 1]))
    mismatched = ours != theirs
    assert not np.any(mismatched & ~tied), f"{mismatched.sum()} mismatches, {np.sum(mismatched & ~tied)} untied"
    assert mismatched.sum() <= max(1, len(ours) // 100)
    assert np.isin(ours, classes).all()


# ------------------------------------------------------------------------------------------------------ NCM


def test_ncm_matches_sklearn_cosine_to_uncentred_means():
    x, y, xt, _ = split_blobs(300, 200, 8, 5, 4.0, seed=0)
    y = np.where(y == 3, 5, y)  # 6 classes, class 3 empty
    xt[:3] = 0  # all-zero queries: cosine 0 everywhere -> lowest fitted class
    present = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in present])  # uncentred class means
    decision = cosine_similarity(xt, means)
    expected = present[np.argmax(decision, axis=1)]

    probe = NCM.fit(x, y, 6)
    predictions = NCM.predict(probe, xt)
    assert_same_up_to_ties(predictions, expected, decision, present)
    np.testing.assert_allclose(np.asarray(NCM.scores(probe, xt))[:, present], decision, atol=1e-5)
    assert not np.any(np.asarray(predictions) == 3)
    assert np.all(np.asarray(predictions)[:3] == 0)
    assert np.asarray(probe.valid).tolist() == [True, True, True, False, True, True]


def test_ncm_zero_mean_class_is_never_predicted():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 4))
    features = np.concatenate([a, -a, rng.normal(size=(10, 4)) + 3])  # class 0: x and -x, mean exactly 0
    labels = np.repeat([0, 0, 1], 10)
    probe = NCM.fit(features, labels, 2)
    assert np.asarray(probe.valid).tolist() == [False, True]
    assert np.all(np.asarray(NCM.predict(probe, rng.normal(size=(50, 4)))) == 1)


# ------------------------------------------------------------------------------------------------------ kNN


@pytest.fixture(scope="module")
def knn_data():
    return split_blobs(300, 240, 6, 6, 6.0, seed=2)  # heavy overlap: many 2-2-1 vote ties among 5 neighbours


def test_knn_matches_sklearn_including_vote_ties(knn_data):
    x, y, xt, _ = knn_data
    sk = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(x, y)
    expected = sk.predict(xt)
    distances, neighbours = sk.kneighbors(xt, 6)
    votes = np.stack([np.bincount(y[row[:5]], minlength=6) for row in neighbours])
    vote_ties = np.sum(votes == votes.max(1, keepdims=True), axis=1) > 1
    assert vote_ties.sum() >= 10  # the tie rule is really exercised
    assert np.all(expected[vote_ties] == np.argmax(votes[vote_ties], axis=1))  # sklearn: smallest voted label

    ours = np.asarray(over_members.knn_predict(x, y, xt, 6))
    ambiguous = distances[:, 5] - distances[:, 4] <= TIE  # the 5th and 6th neighbours tie: the set is undefined
    mismatched = ours != expected
    assert not np.any(mismatched & ~ambiguous)
    assert mismatched.sum() <= 1


def test_knn_chunking_does_not_change_predictions(knn_data):
    x, y, xt, _ = knn_data
    one_chunk = over_members.knn_predict(x, y, xt, 6, chunk=len(xt))
    np.testing.assert_array_equal(over_members.knn_predict(x, y, xt, 6, chunk=7), one_chunk)  # 240 = 34·7 + 2


def test_knn_k1_on_training_points_returns_own_labels(knn_data):
    x, y, _, _ = knn_data
    np.testing.assert_array_equal(over_members.knn_predict(x, y, x, 6, k=1), y)  # distance 0 to itself


# ------------------------------------------------------------------------------------------------------ LDA


@pytest.mark.parametrize("centers,num_classes", [(5, 6), (2, 2)])
def test_lda_matches_sklearn(centers, num_classes):
    x, y, xt, _ = split_blobs(600, 300, 10, centers, 4.0, seed=3)
    sk = LinearDiscriminantAnalysis().fit(x, y)
    decision = sk.predict_log_proba(xt)  # [T, present classes] for binary data too; same argmax
    probe = LDA.fit(x, y, num_classes)
    ours = LDA.predict(probe, xt)
    assert_same_up_to_ties(ours, sk.predict(xt), decision, sk.classes_)
    scores = np.asarray(LDA.scores(probe, xt))
    expected = xt @ sk.coef_.T + sk.intercept_
    if centers == 2:  # sklearn stores only coef_[1] - coef_[0]
        scores = scores[:, 1:] - scores[:, :1]
    else:
        assert np.all(scores[:, centers:] == -np.inf)  # the empty class
        scores = scores[:, :centers]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert int(probe.rank) == 10


def test_lda_wider_than_samples_is_finite_and_agrees_with_sklearn():
    rng = np.random.default_rng(4)
    x, y = gaussian_classes(rng, [12, 10, 9, 9], 60)  # N = 40 < D = 60: within-class rank N - C = 36
    xt, _ = gaussian_classes(rng, [30, 30, 30, 30], 60)
    sk = LinearDiscriminantAnalysis().fit(x, y)
    probe = LDA.fit(x, y, 4)
    scores = np.asarray(LDA.scores(probe, xt))
    assert np.isfinite(scores).all()
    assert int(probe.rank) == 36
    assert_same_up_to_ties(LDA.predict(probe, xt), sk.predict(xt), sk.decision_function(xt), sk.classes_)
    expected = sk.decision_function(xt)
    np.testing.assert_allclose(scores, expected, atol=1e-3 * np.abs(expected).max())


# ------------------------------------------------------------------------------------------------------ QDA


def test_qda_matches_sklearn():
    rng = np.random.default_rng(5)
    x, y = gaussian_classes(rng, [150, 120, 200, 90], 6)
    y = np.where(y == 3, 4, y)  # 5 classes, class 3 empty
    xt, _ = gaussian_classes(np.random.default_rng(5), [60, 60, 60, 60], 6)
    sk = QuadraticDiscriminantAnalysis().fit(x, y)
    decision = sk.decision_function(xt)
    probe = QDA.fit(x, y, 5)
    assert_same_up_to_ties(QDA.predict(probe, xt), sk.predict(xt), decision, sk.classes_)
    scores = np.asarray(over_members.scores(qda.scores, probe, xt, chunk=17))
    assert np.all(scores[:, 3] == -np.inf)
    np.testing.assert_allclose(scores[:, sk.classes_], decision, rtol=1e-4, atol=1e-4 * np.abs(decision).max())
    assert not np.asarray(probe.rank_deficient).any()
    assert np.asarray(probe.rank).tolist() == [6, 6, 6, 0, 6]


def test_qda_flags_rank_deficient_classes_that_sklearn_refuses():
    rng = np.random.default_rng(6)
    x, y = gaussian_classes(rng, [100, 5, 100], 8)  # class 1: N_c = 5 < D = 8
    x[y == 2, 3] = 1.5  # class 2: one constant feature, rank 7
    present_rank = []
    for c in range(3):  # sklearn's own rule: singular values of the centred class rows, S²/N_c > tol
        rows = x[y == c] - x[y == c].mean(0)
        present_rank.append(int(np.sum(np.linalg.svd(rows, compute_uv=False) ** 2 / len(rows) > 1e-4)))
    assert present_rank == [8, 4, 7]
    with pytest.raises(np.linalg.LinAlgError):
        QuadraticDiscriminantAnalysis().fit(x, y)

    probe = QDA.fit(x, y, 3)
    assert np.asarray(probe.rank).tolist() == present_rank
    assert np.asarray(probe.rank_deficient).tolist() == [False, True, True]
    xt = rng.normal(size=(50, 8)) * 3
    assert np.isfinite(np.asarray(QDA.scores(probe, xt))[:, 0]).all()
    assert not np.isnan(np.asarray(QDA.scores(probe, xt))).any()
    assert np.isin(np.asarray(QDA.predict(probe, xt)), [0, 1, 2]).all()


def test_traced_class_chunks_equal_the_host_schedule():
    rng = np.random.default_rng(9)
    for n, num_classes, chunk_size in [(1, 1, 1), (7, 3, 2), (40, 5, 4), (33, 6, 8), (64, 2, 64)]:
        labels = rng.integers(0, num_classes, n)
        labels[labels == num_classes - 1] = 0  # an empty class
        host = gram.chunk_schedule(labels, num_classes, chunk_size)
        traced = moments.class_chunks(jax.numpy.asarray(labels), num_classes, chunk_size)
        real = (host.index >= 0).any(1)
        steps = real.sum()
        assert traced.index.shape == (-(-n // chunk_size) + num_classes, chunk_size)
        np.testing.assert_array_equal(traced.index[:steps], host.index[real])
        np.testing.assert_array_equal(traced.chunk_class[:steps], host.chunk_class[real])
        assert (np.asarray(traced.index[steps:]) == -1).all()


# ---------------------------------------------------------------------------------------------- LogReg


@pytest.fixture(scope="module")
def logreg_data():
    x, y, xt, yt = split_blobs(20000, 2000, 10, 4, 6.0, seed=7)  # ~3000 Adam steps: near convergence
    return 0.3 * x, y, 0.3 * xt, yt


def test_logreg_matches_sklearn_accuracy_and_loss_decreases(logreg_data):
    x, y, xt, yt = logreg_data
    sk = LogisticRegression(C=1e6, max_iter=5000).fit(x, y)
    sk_accuracy = np.mean(sk.predict(xt) == yt)
    probe = over_members.logreg_fit(x, y, 4, jax.random.key(0))
    accuracy = np.mean(np.asarray(LOGREG.predict(probe, xt)) == yt)
    assert 0.7 < sk_accuracy < 0.999  # separable-ish, not trivial
    assert abs(accuracy - sk_accuracy) <= 0.02
    losses = np.asarray(probe.losses)
    assert losses.shape == (20,)
    assert losses[-1] < 0.5 * losses[0]
    assert np.all(np.diff(losses) < 1e-3)


def test_logreg_members_differ_by_labels_and_single_member_equals_unbatched(logreg_data):
    x, y, xt, yt = (a[:3000] for a in logreg_data)
    key = jax.random.key(1)
    relabelled = (y + 1) % 4
    both = over_members.logreg_fit(x, np.stack([y, relabelled]), 4, key, epochs=5, learning_rate=1e-2)
    assert not np.allclose(both.kernel[0], both.kernel[1])
    predictions = np.asarray(LOGREG.predict(both, xt))
    assert np.mean(predictions[0] == yt) > 0.6  # chance is 0.25 (5 short epochs)
    assert np.mean(predictions[1] == (yt + 1) % 4) > 0.6  # member 1 learned its own, shifted labels
    assert np.mean(predictions[1] == yt) < 0.3

    single = over_members.logreg_fit(x, y, 4, key, epochs=5, learning_rate=1e-2)
    stacked = over_members.logreg_fit(x[None], y[None], 4, key, epochs=5, learning_rate=1e-2)
    for field, batched in zip(single, stacked):
        np.testing.assert_allclose(batched[0], field, rtol=1e-5, atol=1e-6)

    per_member_keys = over_members.logreg_fit(x, y, 4, jax.random.split(key, 2), epochs=5, learning_rate=1e-2)
    assert per_member_keys.kernel.shape == (2, 10, 4)
    assert not np.allclose(per_member_keys.kernel[0], per_member_keys.kernel[1])


# --------------------------------------------------------------------------------------------- member axis


@pytest.mark.parametrize("name", list(PROBES))
@pytest.mark.parametrize("shared_features", [False, True])
def test_member_axis_equals_per_member_calls(name, shared_features):
    rng = np.random.default_rng(8)
    features, labels = gaussian_classes(rng, [60, 50, 70], 5)
    other = np.stack([features, features[::-1] + rng.normal(size=features.shape) * 0.1])
    stacked_labels = np.stack([labels, rng.permutation(labels)])
    train = features if shared_features else other
    queries = [rng.normal(size=(40, 5)) * 2, rng.normal(size=(2, 30, 5)) * 2]
    key = jax.random.key(3)
    probe = PROBES[name]
    state = probe.fit(train, stacked_labels, 3, key=key)
    batched = [np.asarray(probe.predict(state, q)) for q in queries]
    assert [p.shape for p in batched] == [(2, 40), (2, 30)]
    assert probe.scores(state, queries[1]).shape == (2, 30, 3)
    for m in range(2):
        alone = probe.fit(features if shared_features else other[m], stacked_labels[m], 3, key=key)
        np.testing.assert_array_equal(batched[0][m], probe.predict(alone, queries[0]))
        np.testing.assert_array_equal(batched[1][m], probe.predict(alone, queries[1][m]))


# ---------------------------------------------------------------------------------------------- validation


def test_invalid_inputs_raise_clear_errors():
    x, y = np.zeros((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="k must be"):
        over_members.knn_predict(x, y, x, 2, k=7)
    with pytest.raises(ValueError, match="labels must lie in"):
        NCM.fit(x, y, 1)
    probe = NCM.fit(np.eye(6)[:, :3], y, 2)
    with pytest.raises(ValueError, match=r"features must be \[T, 3\]"):
        NCM.predict(probe, np.zeros((4, 5)))
    with pytest.raises(ValueError, match="key has 3 members"):
        over_members.logreg_fit(np.zeros((2, 6, 3)), y, 2, jax.random.split(jax.random.key(0), 3))
    with pytest.raises(ValueError, match="NaN"):
        LDA.fit(np.full((6, 3), np.nan), y, 2)
