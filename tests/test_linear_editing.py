"""The paper-2 linear probe vs a numpy oracle, last-layer weight editing, MASC's quadratic form (SPEC §5, §6)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import editing, masc
from jaxmem.models import MODEL_NAMES, get_model, probe_layers
from jaxmem.probes import linear


def oracle_vectors(features, labels, num_classes):
    """numpy: per class the top eigenvector of X_cᵀX_c, signed so that its mean projection over ALL samples ≥ 0."""
    features = np.asarray(features, np.float64)
    mean = features.mean(0)
    vectors = np.zeros((num_classes, features.shape[1]))
    for c in range(num_classes):
        x = features[labels == c]
        if not np.any(x):
            continue
        values, eigenvectors = np.linalg.eigh(x.T @ x)
        v = eigenvectors[:, -1]
        assert values[-1] - values[-2] > 1e-6 * values[-1], "test data must have a simple top eigenvalue"
        assert abs(v @ mean) > 1e-6, "test data must fix the sign unambiguously"
        vectors[c] = v if v @ mean >= 0 else -v
    return vectors


def signed_features(rng, n, d):
    """Correlated features of both signs with a non-zero mean."""
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.3


def relu_features(rng, n, d):
    return np.maximum(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), 0.0)


CASES = [  # (N, D, C, features): primal (N_c > D), dual (D > N_c), mixed
    (300, 8, 3, signed_features),
    (40, 30, 4, signed_features),
    (40, 30, 4, relu_features),
    (120, 36, 2, signed_features),
]


@pytest.mark.parametrize("n,d,c,make_features", CASES)
def test_fit_matches_numpy_oracle(n, d, c, make_features):
    rng = np.random.default_rng(n + d + c)
    features = make_features(rng, n, d)
    labels = rng.integers(0, c, n)
    if (n, d, c) == (120, 36, 2):  # class 0 below D samples (dual), class 1 above (primal)
        labels = (np.arange(n) >= 20).astype(int)
    expected = oracle_vectors(features, labels, c)
    test = make_features(rng, 50, d)
    exact = linear.fit(features, labels, c, precision="exact")
    assert exact.vectors.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(exact.vectors), expected, atol=1e-9)
    np.testing.assert_allclose(np.asarray(linear.scores(exact, test)), test @ expected.T, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(linear.predict(exact, test)), np.argmax(test @ expected.T, 1))
    fast = linear.fit(features, labels, c)
    assert fast.vectors.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(fast.vectors), expected, atol=2e-4)
    # the sign rule, restated: every class's mean score over all training samples is >= 0
    assert (np.asarray(linear.scores(exact, features)).mean(0) >= 0).all()


def test_relu_features_give_nonnegative_vectors():
    rng = np.random.default_rng(0)
    features = relu_features(rng, 200, 12)
    probe = linear.fit(features, rng.integers(0, 3, 200), 3, precision="exact")
    assert (np.asarray(probe.vectors) >= -1e-12).all()  # Perron–Frobenius, as the module docstring says


def test_dual_and_primal_give_the_same_vectors():
    rng = np.random.default_rng(1)
    features = relu_features(rng, 60, 25)
    labels = rng.integers(0, 3, 60)
    dual = linear.fit(features, labels, 3, "exact", dual=True)
    primal = linear.fit(features, labels, 3, "exact", dual=False)
    np.testing.assert_allclose(np.asarray(dual.vectors), np.asarray(primal.vectors), atol=1e-9)


def test_member_axis_equals_per_member_fits():
    rng = np.random.default_rng(2)
    features = signed_features(rng, 150, 10)
    other_features = relu_features(rng, 150, 10)
    labels = np.stack([rng.integers(0, 3, 150), rng.integers(0, 3, 150)])
    test = signed_features(rng, 30, 10)
    shared = linear.fit(features, labels, 3, "exact")
    per_member = linear.fit(np.stack([features, other_features]), labels, 3, "exact")
    assert shared.vectors.shape == per_member.vectors.shape == (2, 3, 10)
    for m, member_features in enumerate([features, other_features]):
        single_shared = linear.fit(features, labels[m], 3, "exact")
        single = linear.fit(member_features, labels[m], 3, "exact")
        np.testing.assert_allclose(np.asarray(shared.vectors[m]), np.asarray(single_shared.vectors), atol=1e-12)
        np.testing.assert_allclose(np.asarray(per_member.vectors[m]), np.asarray(single.vectors), atol=1e-12)
        np.testing.assert_array_equal(np.asarray(linear.predict(shared, test))[m],
                                      np.asarray(linear.predict(single_shared, test)))
    stacked_test = np.stack([test, test * 2])
    np.testing.assert_allclose(np.asarray(linear.scores(per_member, stacked_test)),
                               np.einsum("mtd,mcd->mtc", stacked_test, np.asarray(per_member.vectors)), atol=1e-12)


@pytest.mark.parametrize("precision", ["exact", "fast"])
def test_streaming_gram_matches_in_memory_fit(precision):
    rng = np.random.default_rng(3)
    features = signed_features(rng, 200, 9)
    labels = rng.integers(0, 4, 200)
    with jax.enable_x64(precision == "exact"):
        state = masc.gram_init(4, 9, jnp.float64 if precision == "exact" else jnp.float32)
        for start in range(0, 200, 64):
            x, y = features[start : start + 64], labels[start : start + 64]
            for c in range(4):
                state = masc.gram_update(state, jnp.asarray(x, state.gram.dtype), jnp.int32(c), jnp.asarray(y == c))
    streamed = linear.fit_from_gram(state, features.mean(0), precision)
    direct = linear.fit(features, labels, 4, precision)
    np.testing.assert_allclose(np.asarray(streamed.vectors), np.asarray(direct.vectors),
                               atol=1e-10 if precision == "exact" else 2e-5)
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), state)
    means = np.stack([features.mean(0), -features.mean(0)])  # member 1: opposite mean, so every sign flips
    both = linear.fit_from_gram(stacked, means, precision)
    np.testing.assert_allclose(np.asarray(both.vectors[1]), -np.asarray(streamed.vectors), atol=1e-12)


def test_empty_and_all_zero_classes_get_zero_vectors():
    rng = np.random.default_rng(4)
    features = relu_features(rng, 90, 6)
    labels = rng.choice([0, 2, 3], 90)  # class 1 has no samples
    features[labels == 3] = 0.0  # class 3 has only all-zero activations
    for dual in (True, False):
        probe = linear.fit(features, labels, 4, "exact", dual=dual)
        vectors = np.asarray(probe.vectors)
        np.testing.assert_array_equal(vectors[[1, 3]], 0.0)
        np.testing.assert_allclose(np.linalg.norm(vectors[[0, 2]], axis=1), 1.0, rtol=1e-12)
        test = relu_features(rng, 40, 6)
        assert np.asarray(linear.scores(probe, test))[:, [1, 3]].max() == 0.0
        predictions = np.asarray(linear.predict(probe, test))
        # an empty class wins only where no fitted class scores above 0 (here: the all-zero sample → class 0)
        np.testing.assert_array_equal(predictions, np.argmax(test @ vectors.T, 1))
        assert int(linear.predict(probe, np.zeros((1, 6)))[0]) == 0
    state = masc.gram_init(4, 6, jnp.float32)
    for c in (0, 2, 3):
        state = masc.gram_update(state, jnp.asarray(features, jnp.float32), jnp.int32(c), jnp.asarray(labels == c))
    streamed = linear.fit_from_gram(state, features.mean(0))
    np.testing.assert_array_equal(np.asarray(streamed.vectors)[[1, 3]], 0.0)


def test_signed_features_can_select_an_empty_class():
    """Documented: an empty class scores 0, so it wins where every fitted class scores below 0."""
    features = np.array([[1.0, 0.0], [2.0, 0.0]])
    probe = linear.fit(features, np.array([1, 1]), 2, "exact")  # class 0 empty; v_1 = (1, 0)
    np.testing.assert_allclose(np.asarray(probe.vectors), [[0.0, 0.0], [1.0, 0.0]], atol=1e-12)
    np.testing.assert_array_equal(np.asarray(linear.predict(probe, np.array([[-1.0, 0.0], [1.0, 5.0]]))), [0, 1])


def test_bad_input_is_reported_clearly():
    features = np.ones((10, 3))
    labels = np.zeros(10, int)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        linear.fit(features, np.full(10, 2), 2)
    with pytest.raises(ValueError, match="precision"):
        linear.fit(features, labels, 2, precision="double")
    with pytest.raises(ValueError, match="NaN"):
        linear.fit(np.full((10, 3), np.nan), labels, 2)
    probe = linear.fit(features, labels, 2)
    with pytest.raises(ValueError, match=r"\[T, 3\]"):
        linear.predict(probe, np.ones((4, 5)))
    with pytest.raises(ValueError, match="without a member axis"):
        linear.scores(probe, np.ones((2, 4, 3)))
    with pytest.raises(ValueError, match="mean_feature"):
        linear.fit_from_gram(masc.gram_init(2, 3), np.ones(4))


# ------------------------------------------------------------------------------------------------ editing


def test_edit_layers_feed_the_last_dense():
    assert set(editing.EDIT_LAYERS) == set(MODEL_NAMES)
    shapes = {"alexnet_tiny_imagenet": (1, 64, 64, 3), "mlp": (1, 28, 28, 1), "cnn": (1, 28, 28, 1)}
    for name in MODEL_NAMES:
        layer = editing.edit_layer(name)
        assert layer == probe_layers(name)[-1]
        model = get_model(name, 7)
        x = jnp.zeros(shapes.get(name, (1, 32, 32, 3)))
        variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), x)
        _, activations = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
        kernel = variables["params"][editing.HEAD]["kernel"]
        assert kernel.shape == (activations[layer].shape[-1], 7)
        assert ("bias" in variables["params"][editing.HEAD]) == (name != "cnn")
    with pytest.raises(ValueError, match="unknown model"):
        editing.edit_layer("vgg")


@functools.lru_cache(maxsize=None)
def _model_case(name, seed=0):
    """(model, params, inputs, probe fitted on the edit layer with one class left empty)."""
    model = get_model(name, 6)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(48, 8, 8, 1)), jnp.float32)
    params = model.init(jax.random.key(seed), x)["params"]
    bias = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
    if "bias" in params["out"]:  # default init is zero; a random bias makes keep_bias observable
        params = {**params, "out": {**params["out"], "bias": bias}}
    _, activations = model.apply({"params": params}, x)
    labels = rng.choice([0, 1, 2, 4, 5], 48)  # class 3 empty
    probe = linear.fit(activations[editing.edit_layer(name)], labels, 6)
    return model, params, x, activations, probe


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_zero_bias_edit_predicts_as_the_linear_probe(name):
    model, params, x, activations, probe = _model_case(name)
    layer_features = activations[editing.edit_layer(name)]
    expected_scores = np.asarray(linear.scores(probe, layer_features))
    edited = editing.edit_params(params, probe)
    logits, edited_activations = model.apply({"params": edited}, x)
    np.testing.assert_array_equal(np.asarray(edited_activations[editing.edit_layer(name)]), layer_features)
    np.testing.assert_array_equal(np.asarray(logits).argmax(1), np.asarray(linear.predict(probe, layer_features)))
    np.testing.assert_allclose(np.asarray(logits), expected_scores, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(logits)[:, 3], 0.0)  # the empty class's column is zero
    original_logits, _ = model.apply({"params": params}, x)
    assert not np.allclose(np.asarray(original_logits), np.asarray(logits), atol=1e-3)  # the edit changed the head
    kept_logits, _ = model.apply({"params": editing.edit_params(params, probe, keep_bias=True)}, x)
    bias = np.asarray(params["out"]["bias"]) if "bias" in params["out"] else np.zeros(6)
    assert name == "cnn" or np.abs(bias).min() > 0
    np.testing.assert_allclose(np.asarray(kept_logits) - np.asarray(logits), np.broadcast_to(bias, (48, 6)), atol=1e-5)


def test_edit_with_member_axis_equals_per_member_edits():
    cases = [_model_case("cnn", seed) for seed in (0, 1)]
    model, x = cases[0][0], cases[0][2]
    stacked_params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(case[1] for case in cases))
    stacked_probe = linear.LinearProbe(jnp.stack([case[4].vectors for case in cases]))
    edited = editing.edit_params(stacked_params, stacked_probe)
    logits, activations = jax.vmap(lambda p: model.apply({"params": p}, x))(edited)
    for m, (_, params, _, _, probe) in enumerate(cases):
        single, _ = model.apply({"params": editing.edit_params(params, probe)}, x)
        np.testing.assert_allclose(np.asarray(logits[m]), np.asarray(single), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1),
                                  np.asarray(linear.predict(stacked_probe, activations["fc3"])))


def test_edit_rejects_mismatched_shapes():
    _, params, _, _, probe = _model_case("mlp")
    with pytest.raises(ValueError, match=r"vectors of shape \(2048, 6\) do not fit .* kernel of shape \(2048, 6\)"):
        editing.edit_params(params, linear.LinearProbe(probe.vectors.T))
    with pytest.raises(ValueError, match=r"expected vectors of shape \(6, 2048\)"):
        editing.edit_params(params, linear.LinearProbe(jnp.zeros((5, 2048))))
    with pytest.raises(ValueError, match="no 'out' Dense"):
        editing.edit_params({"params": params}, probe)


# ------------------------------------------------------------------------------------- MASC is quadratic


@pytest.mark.parametrize("n,d,c", [(300, 10, 3), (48, 30, 4)])  # primal; dual (D > N_c)
def test_masc_angle_rule_equals_argmax_quadratic_form(n, d, c):
    rng = np.random.default_rng(n + d)
    features, labels = relu_features(rng, n, d), rng.integers(0, c, n)
    test = relu_features(rng, 100, d)
    for variance in (0.99, 0.5, 2):
        probe = masc.fit(features, labels, c, variance, precision="exact")
        quadratic = np.asarray(masc.quadratic_scores(probe, test))
        np.testing.assert_array_equal(quadratic.argmax(1), np.asarray(masc.predict(probe, test)))
        # oracle for the form itself: hᵀP_c h with P_c built in numpy from the probe's orthonormal basis
        for cls in range(c):
            basis = np.asarray(probe.basis[cls])
            projector = basis @ basis.T
            if bool(probe.complement[cls]):
                projector = np.eye(d) - projector
            np.testing.assert_allclose(quadratic[:, cls], np.einsum("td,de,te->t", test, projector, test), rtol=1e-9)
