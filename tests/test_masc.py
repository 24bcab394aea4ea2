"""MASC against the plain numpy reference, its properties, the streaming path and the degenerate cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import masc
from jaxmem.probes.masc import check_variance, select_basis, spectrum
from jaxmem.reference import numpy_masc as reference


def relu_features(rng, n, d, rank=None):
    """Non-negative, correlated features like a ReLU layer's (low rank when ``rank`` < d)."""
    rank = rank or d
    return np.maximum(rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)), 0.0)


def overlapping_classes(rng, n, d, num_classes, spread=1.0):
    """Classes with shared and class-specific directions, so predictions are not trivially easy."""
    shared = rng.normal(size=(d, d)) / np.sqrt(d)
    own = rng.normal(size=(num_classes, d, d)) / np.sqrt(d) * spread
    labels = rng.integers(0, num_classes, n)
    latent = rng.normal(size=(n, d))
    features = np.einsum("nd,nde->ne", latent, shared[None] + own[labels])
    return np.maximum(features, 0), labels


SHAPES = [  # (N, D, C): primal, dual (D > N_c), mixed dual/primal
    (400, 12, 3),
    (60, 40, 4),
    (180, 48, 3),
]


@pytest.mark.parametrize("n,d,c", SHAPES)
@pytest.mark.parametrize("variance", [0.99, 0.75, 0.5, 1, 4])
def test_exact_mode_reproduces_numpy_reference(n, d, c, variance):
    rng = np.random.default_rng(n + d + c)
    features, labels = overlapping_classes(rng, n, d, c)
    if (n, d, c) == (180, 48, 3):  # make one class smaller than D (dual) and the others larger (primal)
        labels = np.where(np.arange(n) < 30, 0, 1 + np.arange(n) % 2)
    test = relu_features(rng, 80, d)
    oracle = reference.fit(features, labels, c, variance)
    probe = masc.fit(features, labels, c, variance, precision="exact")
    np.testing.assert_array_equal(np.asarray(probe.num_components), reference.num_components(oracle))
    np.testing.assert_array_equal(np.asarray(masc.predict(probe, test)), reference.predict(oracle, test))
    np.testing.assert_array_equal(np.asarray(masc.predict(probe, features)), reference.predict(oracle, features))
    np.testing.assert_allclose(np.asarray(masc.angles(probe, test)), reference.angles(oracle, test), atol=1e-6)


def test_fast_mode_agrees_with_reference_and_uses_complement():
    rng = np.random.default_rng(7)
    features, labels = overlapping_classes(rng, 3000, 64, 5, spread=0.6)
    test, _ = overlapping_classes(rng, 2000, 64, 5, spread=0.6)
    oracle = reference.fit(features, labels, 5, 0.99)
    probe = masc.fit(features, labels, 5, 0.99)
    assert probe.basis.dtype == jnp.float32
    assert bool(np.asarray(probe.complement).all()), "k > D/2 should be scored through the complement"
    assert probe.basis.shape[-1] < 64 // 2
    agreement = np.mean(np.asarray(masc.predict(probe, test)) == reference.predict(oracle, test))
    assert agreement >= 0.999
    assert np.abs(np.asarray(probe.num_components) - reference.num_components(oracle)).max() <= 1


def test_member_axis_equals_separate_fits():
    rng = np.random.default_rng(1)
    features, labels = overlapping_classes(rng, 300, 16, 3)
    other = rng.integers(0, 3, 300)
    stacked_labels = np.stack([labels, other])
    test = relu_features(rng, 40, 16)
    shared = masc.fit(features, stacked_labels, 3, precision="exact")
    per_member = masc.fit(np.stack([features, features * 2.0]), stacked_labels, 3, precision="exact")
    for m, y in enumerate([labels, other]):
        single = masc.fit(features, y, 3, precision="exact")
        np.testing.assert_array_equal(shared.num_components[m], single.num_components)
        expected = np.asarray(masc.predict(single, test))
        np.testing.assert_array_equal(np.asarray(masc.predict(shared, test))[m], expected)
        np.testing.assert_array_equal(np.asarray(masc.predict(per_member, test))[m], expected)
    assert masc.predict(shared, np.stack([test, test])).shape == (2, 40)


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_streaming_gram_matches_in_memory_fit(precision):
    rng = np.random.default_rng(2)
    features, labels = overlapping_classes(rng, 500, 20, 4)
    test = relu_features(rng, 100, 20)
    with jax.enable_x64(precision == "exact"):
        state = masc.gram_init(4, 20, jnp.float64 if precision == "exact" else jnp.float32)
        for start in range(0, 500, 64):  # arbitrary batches: one class-pure chunk per (batch, class)
            x, y = features[start : start + 64], labels[start : start + 64]
            for c in range(4):
                rows = jnp.asarray(np.where((y == c)[:, None], x, 0.0), state.gram.dtype)
                state = masc.gram_update(state, rows, jnp.int32(c), jnp.asarray(y == c))
    streamed = masc.fit_from_gram(state, 0.99, precision)
    direct = masc.fit(features, labels, 4, 0.99, precision, dual=False)
    np.testing.assert_array_equal(np.asarray(state.count), np.bincount(labels, minlength=4))
    np.testing.assert_array_equal(np.asarray(streamed.num_components), np.asarray(direct.num_components))
    np.testing.assert_array_equal(np.asarray(masc.predict(streamed, test)), np.asarray(masc.predict(direct, test)))


def test_dual_and_primal_give_the_same_probe():
    rng = np.random.default_rng(3)
    features = relu_features(rng, 90, 50)
    labels = rng.integers(0, 3, 90)
    test = relu_features(rng, 60, 50)
    dual = masc.fit(features, labels, 3, 0.9, "exact", dual=True)
    primal = masc.fit(features, labels, 3, 0.9, "exact", dual=False)
    np.testing.assert_array_equal(np.asarray(dual.num_components), np.asarray(primal.num_components))
    np.testing.assert_allclose(np.asarray(masc.scores(dual, test)), np.asarray(masc.scores(primal, test)), atol=1e-9)


def test_complement_and_direct_bases_score_identically():
    rng = np.random.default_rng(4)
    gram = np.cov(relu_features(rng, 200, 10), rowvar=False)
    _, vectors = spectrum(jnp.asarray(gram[None]))
    k = jnp.array([7])
    complement_basis, is_complement = select_basis(vectors, k, 3)
    assert bool(is_complement[0])
    h = rng.normal(size=(5, 10))
    inside = np.sum((h @ np.asarray(vectors[0, :, :7])) ** 2, 1)  # the top 7 eigenvectors
    via_complement = np.sum(h * h, 1) - np.sum((h @ np.asarray(complement_basis[0])) ** 2, 1)
    np.testing.assert_allclose(via_complement, inside, rtol=1e-4)


def test_quadratic_form_equals_angle_rule():
    rng = np.random.default_rng(5)
    features, labels = overlapping_classes(rng, 400, 24, 4)
    test = relu_features(rng, 200, 24)
    for variance in (0.99, 0.6):
        probe = masc.fit(features, labels, 4, variance, precision="exact")
        quadratic = np.asarray(masc.quadratic_scores(probe, test))
        cos2 = np.asarray(masc.scores(probe, test))
        np.testing.assert_allclose(quadratic, cos2 * np.sum(test**2, 1, keepdims=True), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(quadratic.argmax(1), np.asarray(masc.predict(probe, test)))
        np.testing.assert_array_equal(
            np.asarray(masc.angles(probe, test)).argmin(1), np.asarray(masc.predict(probe, test))
        )


def test_invariant_to_scale_and_sample_order():
    rng = np.random.default_rng(6)
    features, labels = overlapping_classes(rng, 300, 16, 3)
    test = relu_features(rng, 100, 16)
    probe = masc.fit(features, labels, 3, precision="exact")
    expected = np.asarray(masc.predict(probe, test))
    order = rng.permutation(300)
    permuted = masc.fit(features[order] * 3.0, labels[order], 3, precision="exact")
    np.testing.assert_array_equal(np.asarray(masc.predict(permuted, test * 0.01)), expected)
    np.testing.assert_array_equal(np.asarray(permuted.num_components), np.asarray(probe.num_components))


def test_empty_class_is_never_predicted():
    rng = np.random.default_rng(8)
    features = relu_features(rng, 100, 6)
    labels = rng.choice([0, 2], 100)  # class 1 has no samples
    probe = masc.fit(features, labels, 3, precision="exact")
    assert int(probe.num_components[1]) == 0
    assert not np.any(np.asarray(masc.predict(probe, relu_features(rng, 50, 6))) == 1)
    assert np.isnan(np.asarray(masc.angles(probe, features[:3]))[:, 1]).all()


def test_all_zero_sample_goes_to_lowest_nonempty_class_with_nan_angles():
    rng = np.random.default_rng(9)
    features = relu_features(rng, 100, 6)
    labels = rng.choice([1, 2], 100)
    probe = masc.fit(features, labels, 3, precision="fast")
    zero = np.zeros((2, 6))
    np.testing.assert_array_equal(np.asarray(masc.predict(probe, zero)), [1, 1])
    assert np.isnan(np.asarray(masc.angles(probe, zero))).all()


def test_class_with_all_zero_activations_has_no_subspace():
    rng = np.random.default_rng(10)
    features = relu_features(rng, 60, 5)
    labels = np.repeat([0, 1], 30)
    features[labels == 1] = 0.0
    probe = masc.fit(features, labels, 2, precision="exact")
    np.testing.assert_array_equal(np.asarray(probe.num_components), [reference.num_components(
        reference.fit(features[:30], labels[:30], 1))[0], 0])
    assert (np.asarray(masc.predict(probe, relu_features(rng, 20, 5))) == 0).all()


def test_one_dimensional_features_tie_to_lowest_class():
    rng = np.random.default_rng(11)
    features = np.abs(rng.normal(size=(50, 1))) + 0.1
    labels = rng.integers(0, 3, 50)
    probe = masc.fit(features, labels, 3)
    np.testing.assert_array_equal(np.asarray(probe.num_components), [1, 1, 1])
    np.testing.assert_array_equal(np.asarray(masc.predict(probe, features)), np.zeros(50))


def test_components_are_clipped_at_dimension():
    rng = np.random.default_rng(12)
    features = relu_features(rng, 200, 5)
    labels = rng.integers(0, 2, 200)
    probe = masc.fit(features, labels, 2, variance=9)
    np.testing.assert_array_equal(np.asarray(probe.num_components), [5, 5])
    np.testing.assert_allclose(np.asarray(masc.scores(probe, features[:4])), 1.0, rtol=1e-5)


def test_bad_input_is_reported_clearly():
    features = np.ones((10, 3))
    labels = np.zeros(10, int)
    with pytest.raises(ValueError, match="variance"):
        masc.fit(features, labels, 2, variance=1.5)
    with pytest.raises(ValueError, match="variance"):
        masc.fit(features, labels, 2, variance=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        masc.fit(features, np.full(10, 2), 2)
    with pytest.raises(ValueError, match="samples"):
        masc.fit(features, labels[:5], 2)
    with pytest.raises(ValueError, match="precision"):
        masc.fit(features, labels, 2, precision="double")
    with pytest.raises(ValueError, match="NaN"):
        masc.fit(np.full((10, 3), np.nan), labels, 2)
    probe = masc.fit(features, labels, 2)
    with pytest.raises(ValueError, match=r"\[T, 3\]"):
        masc.predict(probe, np.ones((4, 5)))
    assert check_variance(1.0) == 1 and isinstance(check_variance(1.0), int)


@pytest.mark.slow
def test_mnist_input_layer_figures(mnist_dir):
    """(check) SPEC §4: input-layer MASC on MNIST, n = 0.99, reference corruption."""
    from jaxmem.data import corrupt_labels, load_dataset, normalize

    data = load_dataset("mnist", mnist_dir)
    x_train = normalize("mnist", data.x_train).reshape(len(data.x_train), -1)
    x_test = normalize("mnist", data.x_test).reshape(len(data.x_test), -1)
    for degree, accuracy, components in [(0.0, 0.8234, 136.5), (0.2, 0.8321, None)]:
        labels = corrupt_labels(data.y_train, degree, 10)
        probe = masc.fit(x_train, labels, 10, 0.99, precision="exact")
        test_accuracy = np.mean(np.asarray(masc.predict(probe, x_test)) == data.y_test)
        assert round(float(test_accuracy), 4) == accuracy
        if components is not None:
            assert float(masc.mean_components(probe)) == components
