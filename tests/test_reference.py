"""Framework cross-checks (jaxmem.reference.verify): converters, the four checks, and that they can fail.

Needs the ``jaxmem[reference]`` extra (TensorFlow for the MLP, PyTorch for the CNN); those tests skip with a reason
when it is absent. MNIST-shaped checks use real MNIST when ``JAXMEM_DATA_DIR`` holds it, synthetic images otherwise;
CIFAR-shaped checks use synthetic images. Sizes (2 CPU cores): MLP 50 steps × batch 32 (float32), CNN 10 steps ×
batch 32 (float64); MASC fitted on the trajectory's samples, predictions on 250 held-out samples.
"""
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxmem.reference import verify
from jaxmem.config import paper_train_spec
from jaxmem.models import get_model
from jaxmem.reference import convert

FRAMEWORK_MODULE = {"mlp": "tensorflow", "cnn": "torch"}
IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
RUNS = {"mlp": {"steps": 50, "batch_size": 32}, "cnn": {"steps": 10, "batch_size": 32}}
NUM_EVAL = 250


def _params(model_name: str, dataset: str, seed: int = 0):
    x = np.zeros((1, *IMAGE_SHAPES[dataset]), np.float32)
    variables = get_model(model_name, 10).init(jax.random.key(seed), x)
    return jax.tree.map(np.asarray, variables["params"])


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert left.dtype == right.dtype and left.shape == right.shape
        np.testing.assert_array_equal(left, right)


# ------------------------------------------------------------------------------------- lazy imports, no extra


def test_importing_verify_imports_no_framework():
    code = ("import sys, jaxmem.reference.verify, jaxmem.reference.convert; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("model_name, module", [("mlp", "keras"), ("cnn", "torch")])
def test_missing_framework_says_install_the_extra(monkeypatch, model_name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    monkeypatch.delitem(sys.modules, f"jaxmem.reference.{'keras_mlp' if model_name == 'mlp' else 'torch_cnn'}",
                        raising=False)
    with pytest.raises(verify.ReferenceUnavailable, match=r"jaxmem\[reference\]"):
        verify.make_reference(model_name, (28, 28, 1), 10, paper_train_spec("mnist", model_name))


def test_run_all_reports_a_missing_framework_as_skipped(monkeypatch):
    def unavailable(model_name):
        raise verify.ReferenceUnavailable(f"no {model_name} framework here; {verify.INSTALL_HINT}")

    monkeypatch.setattr(verify, "_reference_class", unavailable)
    monkeypatch.delenv("JAXMEM_DATA_DIR", raising=False)  # no data folder: synthetic CIFAR-shaped images
    results = verify.run_all(None, steps=1, cnn_steps=1, datasets=("cifar10",), eval_samples=8, masc_samples=32)
    assert [(r.model, r.check) for r in results] == [(m, c) for m in ("mlp", "cnn") for c in verify.CHECKS]
    assert all(r.skipped and not r.passed and "jaxmem[reference]" in r.skipped for r in results)
    report = verify.format_report(results)
    assert report.count("SKIP") == 8 and report.endswith("0 passed, 0 failed, 8 skipped")


# ------------------------------------------------------------------------------------ converters (numpy only)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_numpy_round_trips_are_the_identity(dataset):
    mlp, cnn = _params("mlp", dataset), _params("cnn", dataset)
    _assert_trees_equal(convert.keras_to_mlp(convert.mlp_to_keras(mlp)), mlp)
    _assert_trees_equal(convert.torch_to_cnn(convert.cnn_to_torch(cnn)), cnn)
    as64 = jax.tree.map(lambda a: a.astype(np.float64), cnn)
    _assert_trees_equal(convert.torch_to_cnn(convert.cnn_to_torch(as64)), as64)  # dtype kept (float64 checks)


@pytest.mark.parametrize("map_shape", [(3, 3, 64), (4, 4, 64), (2, 5, 3)])
def test_fc1_permutation_matches_the_two_flatten_orders(map_shape):
    """Oracle: a feature map flattened NHWC (jaxmem) and NCHW (PyTorch) must give the same fc1 output."""
    rng = np.random.default_rng(0)
    height, width, channels = map_shape
    feature_map = rng.normal(size=(2, height, width, channels))  # [B, H, W, C]
    jax_flat = feature_map.reshape(2, -1)
    torch_flat = feature_map.transpose(0, 3, 1, 2).reshape(2, -1)
    kernel = rng.normal(size=(height * width * channels, 5))  # jaxmem Dense kernel [in, out]
    torch_weight = convert.hwc_rows_to_chw(kernel, map_shape).T  # Linear.weight [out, in]
    np.testing.assert_allclose(torch_flat @ torch_weight.T, jax_flat @ kernel, rtol=1e-12)
    np.testing.assert_array_equal(convert.chw_to_hwc_features(torch_flat, map_shape), jax_flat)
    np.testing.assert_array_equal(convert.chw_rows_to_hwc(convert.hwc_rows_to_chw(kernel, map_shape), map_shape),
                                  kernel)


def test_cnn_to_torch_layouts():
    params = _params("cnn", "cifar10")
    state = convert.cnn_to_torch(params)
    assert state["conv1.weight"].shape == (16, 3, 3, 3)  # OIHW
    np.testing.assert_array_equal(state["conv2.weight"][5, 7, 0, 2], params["conv2"]["kernel"][0, 2, 7, 5])
    assert state["fc1.weight"].shape == (250, 1024) and state["out.weight"].shape == (10, 250)
    np.testing.assert_array_equal(state["fc2.weight"], params["fc2"]["kernel"].T)
    # fc1 input column of (channel c, row i, column j) in PyTorch order is jaxmem row (i, j, c) of a 4×4×64 map.
    c, i, j = 9, 2, 3
    np.testing.assert_array_equal(state["fc1.weight"][:, c * 16 + i * 4 + j], params["fc1"]["kernel"][(i * 4 + j) * 64 + c])
    assert "out.bias" not in state


def test_converters_reject_bad_input():
    with pytest.raises(ValueError, match="exactly the layers"):
        convert.mlp_to_keras({"fc1": {}})
    with pytest.raises(ValueError, match="expected 10 Keras MLP weight arrays"):
        convert.keras_to_mlp([np.zeros(3, np.float32)])
    bad = _params("cnn", "mnist")
    bad["fc1"]["kernel"] = np.zeros((577, 250), np.float32)
    with pytest.raises(ValueError, match="577 is not a square map"):
        convert.cnn_to_torch(bad)
    with pytest.raises(ValueError, match="float32 or float64"):
        convert.mlp_to_keras(jax.tree.map(lambda a: a.astype(np.int32), _params("mlp", "mnist")))


def test_error_measures_against_hand_computed_values():
    initial = {"a": {"kernel": np.zeros(4)}, "b": {"bias": np.ones(2)}}
    theirs = {"a": {"kernel": np.full(4, 0.5)}, "b": {"bias": np.ones(2)}}  # "b" did not move
    ours = {"a": {"kernel": np.array([0.5, 0.5, 0.5, 0.51])}, "b": {"bias": np.ones(2)}}
    assert verify.update_errors(initial, ours, theirs) == pytest.approx({"a/kernel": 0.01, "b/bias": 0.0})
    assert verify.trajectory_divergence(initial, ours, theirs) == pytest.approx(0.01)
    assert verify.trajectory_divergence(initial, ours, initial) == float("inf")  # no movement verifies nothing
    assert verify.relative_max_error([1.0, -2.0], [1.0, -4.0]) == pytest.approx(0.5)


# ------------------------------------------------------------------------------- framework round trips


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_round_trip_through_the_framework_is_the_identity(model_name, dataset):
    pytest.importorskip(FRAMEWORK_MODULE[model_name])
    params = _params(model_name, dataset, seed=3)
    reference = verify.make_reference(model_name, IMAGE_SHAPES[dataset], 10, paper_train_spec(dataset, model_name))
    reference.set_weights(verify.to_framework(model_name)(params))
    _assert_trees_equal(verify.from_framework(model_name)(reference.get_weights()), params)


# ------------------------------------------------------------------------------------ the four checks


@pytest.fixture(scope="module", params=[(m, d) for m in ("mlp", "cnn") for d in ("mnist", "cifar10")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pair_results(request, data_dir):
    """All four checks of one (model, input shape), run once: {check: CheckResult}."""
    model_name, dataset = request.param
    pytest.importorskip(FRAMEWORK_MODULE[model_name])
    run = RUNS[model_name]
    num_train = run["steps"] * run["batch_size"]
    if dataset == "mnist":  # real MNIST when JAXMEM_DATA_DIR holds it, synthetic otherwise (recorded in .data)
        data = verify.load_verify_data(dataset, data_dir, num_train=num_train, num_eval=NUM_EVAL)
    else:
        data = verify.synthetic_data(dataset, num_train, NUM_EVAL)
    results = verify.run_pair(model_name, data, **run, masc_samples=num_train)
    return {result.check: result for result in results}


@pytest.mark.parametrize("check", verify.CHECKS)
@pytest.mark.slow
def test_check_passes(pair_results, check):
    result = pair_results[check]
    assert list(pair_results) == list(verify.CHECKS)
    assert result.passed and not result.skipped, verify.format_report([result])
    assert 0 <= result.error <= result.tolerance


@pytest.mark.slow
def test_checks_compare_what_they_claim(pair_results):
    forward, one_step, trajectory, masc_result = pair_results.values()
    model_name = forward.model
    assert FRAMEWORK_MODULE[model_name] in forward.framework
    assert forward.tolerance == verify.TOLERANCES.forward
    assert "logits + 5 probe layers" in forward.detail
    dtype = verify.TRAINING_DTYPES[model_name]
    optimiser = "sgd(lr=0.001, momentum=0.9)" if model_name == "mlp" else "adam(lr=0.0002)"
    assert one_step.detail.startswith(f"{dtype}, {optimiser}, batch 32")
    assert trajectory.detail.startswith(f"{dtype}, {RUNS[model_name]['steps']} steps × batch 32, fixed order")
    assert trajectory.tolerance == getattr(verify.TOLERANCES, f"trajectory_{dtype}")
    assert f"predict {NUM_EVAL}" in masc_result.detail


@pytest.mark.slow
def test_mnist_shaped_checks_use_real_mnist_when_given(mnist_dir, pair_results):
    if pair_results["forward"].dataset == "mnist":
        assert pair_results["forward"].data.startswith("files:"), pair_results["forward"].data


@pytest.mark.slow
def test_report_lists_every_check(pair_results):
    report = verify.format_report(list(pair_results.values()))
    lines = report.splitlines()
    assert sum(line.split()[0] in ("mlp", "cnn") for line in lines if line.strip()) == 4
    assert lines[-1] == "4 passed, 0 failed, 0 skipped"


# -------------------------------------------------------------------------- falsifiability: broken converters


def _transposed(layer: str):
    def broken(params):
        params = jax.tree.map(np.array, params)
        params[layer]["kernel"] = params[layer]["kernel"].T  # square 2048×2048: loads fine, wrong layout
        return convert.mlp_to_keras(params)
    return broken


def _conv_spatially_transposed(layer: str):
    def broken(params):
        params = jax.tree.map(np.array, params)
        params[layer]["kernel"] = params[layer]["kernel"].transpose(1, 0, 2, 3)  # HWIO -> WHIO
        return convert.cnn_to_torch(params)
    return broken


def _fc1_without_flatten_permutation(params):
    state = convert.cnn_to_torch(params)
    state["fc1.weight"] = np.array(params["fc1"]["kernel"]).T  # NHWC rows used as if they were NCHW
    return state


@pytest.mark.parametrize("model_name, converter", [
    ("mlp", _transposed("fc4")),
    ("cnn", _conv_spatially_transposed("conv3")),
    ("cnn", _fc1_without_flatten_permutation),
], ids=["mlp-transposed-fc4", "cnn-conv3-hw-swapped", "cnn-fc1-no-nchw-permutation"])
@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.slow
def test_forward_check_fails_with_a_broken_converter(model_name, converter, dataset, monkeypatch):
    pytest.importorskip(FRAMEWORK_MODULE[model_name])
    data = verify.synthetic_data(dataset, 8, 32)
    monkeypatch.setattr(verify, "to_framework", lambda name: converter)  # run_pair's weights into the reference
    forward = verify.run_pair(model_name, data, steps=1, batch_size=8, training_dtype="float32", masc_samples=8)[0]
    assert forward.check == "forward"  # the one that passes with the real converter (test_check_passes)
    assert not forward.passed and forward.error > 100 * forward.tolerance
