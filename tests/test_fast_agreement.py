"""Fast mode (float32) MASC against exact mode (float64) on the real MNIST input layer, every paper setting.

p ∈ {0, 0.2, 0.4, 0.6, 0.8, 1} (the reference label rule) × n ∈ {0.25, 0.5, 0.75, 0.99, 1}: the share of equal
test predictions must be ≥ 99.9 % in each of the 30 settings. Each (p, precision) accumulates its per-class Grams
once (the fit's own chunked path) and fits the five variances from them with ``fit_from_gram``, which is what
``fit`` does for classes with more samples than dimensions.

Hidden layers: a member trained briefly on a real-MNIST subset (see :func:`test_fast_agrees_with_exact_on_hidden_layers`).
"""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import data, features, masc, models
from jaxmem.config import paper_train_spec
from jaxmem.members import MemberSpec
from jaxmem.probes import gram
from jaxmem.probes.base import precision_context
from jaxmem.train import fit_members, load_member_params

DEGREES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
VARIANCES = (0.25, 0.5, 0.75, 0.99, 1)
THRESHOLD = 0.999


def class_grams(features, labels, num_classes, exact):
    """Per-class second moments [C, D, D] as ``masc.fit`` accumulates them, in the mode's dtype."""
    with precision_context(exact):
        x = jnp.asarray(features, jnp.float64 if exact else jnp.float32)
        schedule = gram.chunk_schedule(labels[None], num_classes, 512)
        state = gram.accumulate_members(x, schedule, num_classes, x.shape[-1], True)
        return gram.GramState(*(a[0] for a in state))


@pytest.fixture(scope="module")
def mnist_input_layer(mnist_dir):
    dataset = data.load_dataset("mnist", mnist_dir)
    flat = lambda x: data.normalize("mnist", x).reshape(len(x), -1)  # noqa: E731
    return flat(dataset.x_train), np.asarray(dataset.y_train), flat(dataset.x_test)


@pytest.fixture(scope="module")
def agreements(mnist_input_layer):
    """{(p, n): share of equal test predictions, fast vs exact}."""
    x_train, y_train, x_test = mnist_input_layer
    table = {}
    for p in DEGREES:
        labels = data.corrupt_labels(y_train, p, 10)
        states = {precision: class_grams(x_train, labels, 10, precision == "exact") for precision in ("fast", "exact")}
        for n in VARIANCES:
            fast, exact = (np.asarray(masc.predict(masc.fit_from_gram(states[precision], n, precision), x_test))
                           for precision in ("fast", "exact"))
            table[p, n] = float(np.mean(fast == exact))
    return table


@pytest.mark.slow
@pytest.mark.parametrize("p", DEGREES)
def test_fast_agrees_with_exact_on_mnist_input_layer(agreements, p):
    rows = {n: agreements[p, n] for n in VARIANCES}
    print(f"p={p}: " + ", ".join(f"n={n}: {100 * a:.2f} %" for n, a in rows.items()))
    assert all(a >= THRESHOLD for a in rows.values()), f"fast vs exact agreement at p={p}: {rows}"


@pytest.mark.slow
def test_fast_agrees_with_exact_on_hidden_layers(mnist_dir, tmp_path):
    """fc1-fc4 of an MLP trained for one epoch (the paper preset) on the first 24000 MNIST images at p = 0.8,
    probed at n = 0.99 on its corrupted labels and scored on 2000 test images.

    This covers the hidden-layer spectra (ReLU features, k near D/2 up to most of D, the complement scoring) and
    the primal problem (N_c ≈ 2400 > D = 2048); it is not a memorising member (the full one costs hours on CPU),
    whose layers keep more components still.
    """
    dataset = data.subset(data.load_dataset("mnist", mnist_dir), 24000, 2000)
    member = MemberSpec("mnist", "mlp", 0.8, 0)
    fit_members(dataset, [member], paper_train_spec("mnist", "mlp"), tmp_path, max_epochs=1, progress=False)
    params, batch_stats = load_member_params(tmp_path)
    labels = data.member_train_labels(dataset, [member])[0]
    layers = [name for name in models.probe_layers("mlp") if name != "input"]
    model, variables = models.get_model("mlp", 10), features.member_variables(params, batch_stats)
    train, test = (features.collect_activations(model, variables, data.normalize("mnist", x), layers)
                   for x in (dataset.x_train, dataset.x_test))
    rows = {}
    for layer in layers:
        fast, exact = (np.asarray(masc.predict(masc.fit(train[layer][0], labels, 10, 0.99, precision),
                                               test[layer][0])) for precision in ("fast", "exact"))
        rows[layer] = float(np.mean(fast == exact))
    print("hidden layers: " + ", ".join(f"{layer}: {100 * a:.2f} %" for layer, a in rows.items()))
    assert all(a >= THRESHOLD for a in rows.values()), f"fast vs exact agreement on hidden layers: {rows}"
