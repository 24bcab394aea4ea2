"""Tests for jaxmem.models: SPEC §2 shapes and parameter counts, numpy forward oracles, dropout, BatchNorm, vmap."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from jaxmem.models import MODEL_NAMES, count_params, get_model, probe_layers


def _conv(in_ch, out_ch, kernel, bias=True):
    return kernel * kernel * in_ch * out_ch + (out_ch if bias else 0)


def _dense(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def _resnet_block(in_ch, out_ch):
    """conv3×3 + BN, conv3×3 + BN, and a 1×1 conv + BN projection when the width changes (BN: scale + bias)."""
    count = _conv(in_ch, out_ch, 3, bias=False) + 2 * out_ch + _conv(out_ch, out_ch, 3, bias=False) + 2 * out_ch
    if in_ch != out_ch:
        count += _conv(in_ch, out_ch, 1, bias=False) + 2 * out_ch
    return count


# (model, input shape, classes, {probe layer: width} in SPEC order, parameter count from the layer formulas)
CASES = [
    ("mlp", (28, 28, 1), 10, {"input": 784, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
     784 * 128 + 128 + 128 * 512 + 512 + 512 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10),
    ("mlp", (32, 32, 3), 10, {"input": 3072, "fc1": 128, "fc2": 512, "fc3": 2048, "fc4": 2048},
     3072 * 128 + 128 + 128 * 512 + 512 + 512 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10),
    ("cnn", (28, 28, 1), 10, {"input": 784, "flat": 576, "fc1": 250, "fc2": 250, "fc3": 250},
     _conv(1, 16, 3) + _conv(16, 16, 3) + _conv(16, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 64, 3)
     + _dense(3 * 3 * 64, 250) + _dense(250, 250) + _dense(250, 250) + _dense(250, 10, bias=False)),
    ("cnn", (32, 32, 3), 10, {"input": 3072, "flat": 1024, "fc1": 250, "fc2": 250, "fc3": 250},
     _conv(3, 16, 3) + _conv(16, 16, 3) + _conv(16, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 64, 3)
     + _dense(4 * 4 * 64, 250) + _dense(250, 250) + _dense(250, 250) + _dense(250, 10, bias=False)),
    ("alexnet_cifar100", (32, 32, 3), 100, {"flat": 256, "fc1": 4096, "fc2": 4096},
     _conv(3, 64, 3) + _conv(64, 192, 3) + _conv(192, 384, 3) + _conv(384, 256, 3) + _conv(256, 256, 3)
     + _dense(256, 4096) + _dense(4096, 4096) + _dense(4096, 100)),
    ("alexnet_tiny_imagenet", (64, 64, 3), 200, {"flat": 256, "fc1": 4096, "fc2": 4096},
     _conv(3, 64, 11) + _conv(64, 192, 5) + _conv(192, 384, 3) + _conv(384, 256, 3) + _conv(256, 256, 3)
     + _dense(256, 4096) + _dense(4096, 4096) + _dense(4096, 200)),
    ("resnet18", (32, 32, 3), 10,
     {"l0": 16 * 16 * 64, "l0_1": 16 * 16 * 64, "l0_2": 16 * 16 * 64, "l0_3": 16 * 16 * 64, "l1": 16 * 16 * 64,
      "l2": 8 * 8 * 128, "l3": 4 * 4 * 256, "l4": 2 * 2 * 512, "pool": 512},
     _conv(3, 64, 3, bias=False) + 2 * 64
     + _resnet_block(64, 64) + _resnet_block(64, 64) + _resnet_block(64, 128) + _resnet_block(128, 128)
     + _resnet_block(128, 256) + _resnet_block(256, 256) + _resnet_block(256, 512) + _resnet_block(512, 512)
     + _dense(512, 10)),
]


@functools.lru_cache(maxsize=None)
def _init(name, shape, classes, seed=0, dropout=0.0):
    """(model, variables); cached because initialisation dominates this file's run time on CPU."""
    model = get_model(name, classes, dropout=dropout)
    return model, model.init(jax.random.key(seed), jnp.zeros((2, *shape), jnp.float32))


def _perturbed(params, seed, scale=0.05):
    """Params plus Gaussian noise, so biases are non-zero and the oracles test them."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + np.float32(scale) * rng.standard_normal(leaf.shape, np.float32), params)


def _images(shape, batch=2, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _np(tree):
    return jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), tree)


# --- numpy oracles (float64, PyTorch semantics: symmetric padding, floor output sizes) -----------------------------

def np_conv(x, kernel, bias=None, stride=1, pad=0):
    """x [B, H, W, C], kernel HWIO [k, k, C, F] -> [B, (H + 2p - k) // s + 1, …, F]."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    out_h = (x.shape[1] - k) // stride + 1
    out_w = (x.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            window = x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride, :]
            out += window @ kernel[i, j]
    return out if bias is None else out + bias


def np_max_pool(x, window, stride, pad=0):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    out_h = (x.shape[1] - window) // stride + 1
    out_w = (x.shape[2] - window) // stride + 1
    out = np.full((x.shape[0], out_h, out_w, x.shape[3]), -np.inf)
    for i in range(window):
        for j in range(window):
            out = np.maximum(out, x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride])
    return out


def relu(x):
    return np.maximum(x, 0.0)


def np_batch_norm(x, params, stats, train):
    """Returns (normalised x, batch mean, biased batch variance); eval mode uses the running ``stats``."""
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    use_mean, use_var = (mean, var) if train else (stats["mean"], stats["var"])
    return (x - use_mean) / np.sqrt(use_var + 1e-5) * params["scale"] + params["bias"], mean, var


def np_cnn(params, x):
    h, acts = x, {"input": x.reshape(len(x), -1)}
    for index in range(1, 7):
        h = relu(np_conv(h, params[f"conv{index}"]["kernel"], params[f"conv{index}"]["bias"], pad=1))
        if index % 2 == 0:
            h = np_max_pool(h, 2, 2)
    h = acts["flat"] = h.reshape(len(x), -1)
    for name in ("fc1", "fc2", "fc3"):
        h = acts[name] = relu(h @ params[name]["kernel"] + params[name]["bias"])
    return h @ params["out"]["kernel"], acts


ALEXNET_CONVS = {  # (kernel stride, padding) of conv1 … conv5, SPEC §2
    "alexnet_cifar100": [(2, 1), (1, 1), (1, 1), (1, 1), (1, 1)],
    "alexnet_tiny_imagenet": [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)],
}


def np_alexnet(name, params, x):
    h = x
    for index, (stride, pad) in enumerate(ALEXNET_CONVS[name], start=1):
        h = relu(np_conv(h, params[f"conv{index}"]["kernel"], params[f"conv{index}"]["bias"], stride, pad))
        if index in (1, 2, 5):
            h = np_max_pool(h, 3, 2)
    h = h.reshape(len(x), -1)
    acts = {"flat": h}
    for name_ in ("fc1", "fc2"):
        h = acts[name_] = relu(h @ params[name_]["kernel"] + params[name_]["bias"])
    return h @ params["out"]["kernel"] + params["out"]["bias"], acts


def np_resnet(variables, x, train):
    """Returns (logits, activations, {bn path: (batch mean, batch var)})."""
    params, stats = variables["params"], variables["batch_stats"]
    moments = {}

    def conv_bn(h, p, s, path, stride, pad):
        h = np_conv(h, p[path[-1].replace("bn", "conv")]["kernel"], stride=stride, pad=pad)
        h, mean, var = np_batch_norm(h, p[path[-1]], s[path[-1]], train)
        moments["/".join(path)] = (mean, var)
        return h

    h = relu(conv_bn(x, params, stats, ("bn1",), 1, 1))
    h = np_max_pool(h, 3, 2, pad=1)
    acts = {"l0": h.reshape(len(x), -1)}
    for stage, (width, stride) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2)), start=1):
        for block in range(2):
            name = f"layer{stage}_{block}"
            p, s = params[name], stats[name]
            block_stride = stride if block == 0 else 1
            first = relu(conv_bn(h, p, s, (name, "bn1"), block_stride, 1))
            residual = conv_bn(first, p, s, (name, "bn2"), 1, 1)
            shortcut = h
            if "shortcut_conv" in p:
                shortcut = np_conv(h, p["shortcut_conv"]["kernel"], stride=block_stride)
                shortcut, mean, var = np_batch_norm(shortcut, p["shortcut_bn"], s["shortcut_bn"], train)
                moments[f"{name}/shortcut_bn"] = (mean, var)
            h = relu(residual + shortcut)
            if (stage, block) == (1, 0):
                acts["l0_1"], acts["l0_2"] = first.reshape(len(x), -1), h.reshape(len(x), -1)
            elif (stage, block) == (1, 1):
                acts["l0_3"] = first.reshape(len(x), -1)
        acts[f"l{stage}"] = h.reshape(len(x), -1)
    h = acts["pool"] = h.mean(axis=(1, 2))
    return h @ params["out"]["kernel"] + params["out"]["bias"], acts, moments


def assert_activations_close(actual, expected, rtol=1e-4, atol=1e-4):
    """Same layers in the same order and values equal to float32 accuracy (``atol`` scaled by the layer's range)."""
    assert list(actual) == list(expected)
    for layer, want in expected.items():
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(np.asarray(actual[layer]), want, rtol=rtol, atol=atol * scale, err_msg=layer)


# --- registry ------------------------------------------------------------------------------------------------------

def test_registry_names_and_probe_layers():
    assert MODEL_NAMES == ("mlp", "cnn", "alexnet_cifar100", "alexnet_tiny_imagenet", "resnet18")
    assert probe_layers("mlp") == ("input", "fc1", "fc2", "fc3", "fc4")
    assert probe_layers("cnn") == ("input", "flat", "fc1", "fc2", "fc3")
    assert probe_layers("alexnet_cifar100") == probe_layers("alexnet_tiny_imagenet") == ("flat", "fc1", "fc2")
    assert probe_layers("resnet18") == ("l0", "l0_1", "l0_2", "l0_3", "l1", "l2", "l3", "l4", "pool")


def test_registry_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vgg.*known models: mlp, cnn"):
        get_model("vgg", 10)
    with pytest.raises(ValueError, match="vgg"):
        probe_layers("vgg")
    for name in ("mlp", "alexnet_cifar100", "alexnet_tiny_imagenet"):
        with pytest.raises(ValueError, match=f"dropout=0.5 given for model '{name}'"):
            get_model(name, 10, dropout=0.5)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout must be in"):
            get_model("cnn", 10, dropout=bad)
    with pytest.raises(ValueError, match="num_classes"):
        get_model("mlp", 0)
    get_model("mlp", 10, dropout=0.0)  # dropout 0 is accepted everywhere


# --- shapes, widths, parameter counts ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, shape, classes, widths, n_params", CASES,
                         ids=[f"{case[0]}-{'x'.join(map(str, case[1]))}" for case in CASES])
def test_shapes_widths_and_parameter_count(name, shape, classes, widths, n_params):
    model, variables = _init(name, shape, classes)
    logits, acts = model.apply(variables, _images(shape))
    assert logits.shape == (2, classes) and logits.dtype == jnp.float32
    assert tuple(acts) == probe_layers(name)
    assert {layer: a.shape for layer, a in acts.items()} == {layer: (2, d) for layer, d in widths.items()}
    assert count_params(variables["params"]) == n_params


def test_param_names_and_cnn_out_has_no_bias():
    _, cnn = _init("cnn", (28, 28, 1), 10)
    params = cnn["params"]
    assert set(params) == {f"conv{i}" for i in range(1, 7)} | {"fc1", "fc2", "fc3", "out"}
    assert set(params["out"]) == {"kernel"} and params["out"]["kernel"].shape == (250, 10)
    assert params["conv1"]["kernel"].shape == (3, 3, 1, 16) and params["conv1"]["bias"].shape == (16,)
    _, mlp = _init("mlp", (28, 28, 1), 10)
    assert set(mlp["params"]) == {"fc1", "fc2", "fc3", "fc4", "out"}
    assert mlp["params"]["fc1"]["kernel"].shape == (784, 128)
    _, alex = _init("alexnet_tiny_imagenet", (64, 64, 3), 200)
    assert set(alex["params"]) == {f"conv{i}" for i in range(1, 6)} | {"fc1", "fc2", "out"}
    assert alex["params"]["conv1"]["kernel"].shape == (11, 11, 3, 64)


@pytest.mark.parametrize("name, size, classes, expected", [
    ("alexnet_cifar100", 32, 100, [16, 7, 7, 3, 3, 3, 3, 1]),
    ("alexnet_tiny_imagenet", 64, 200, [15, 7, 7, 3, 3, 3, 3, 1]),
])
def test_alexnet_spatial_sizes(name, size, classes, expected):
    """SPEC §2 (check): conv1, pool, conv2, pool, conv3, conv4, conv5, pool spatial sizes."""
    model, variables = _init(name, (size, size, 3), classes)
    _, state = model.apply(variables, _images((size, size, 3)), capture_intermediates=True)
    inter = state["intermediates"]
    conv_shapes = [inter[f"conv{i}"]["__call__"][0].shape[1:] for i in range(1, 6)]
    conv_sizes = [expected[0], expected[2], expected[4], expected[5], expected[6]]
    assert conv_shapes == [(n, n, c) for n, c in zip(conv_sizes, (64, 192, 384, 256, 256))]
    # convs 2-5 keep their input size, so pools 1 and 2 gave expected[1] and expected[3]; pool 3 gives 1×1×256
    assert (expected[1], expected[3]) == (expected[2], expected[4])
    assert model.apply(variables, _images((size, size, 3)))[1]["flat"].shape == (2, 256 * expected[7] ** 2)


# --- forward passes against numpy oracles --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_mlp_activations_are_post_relu_dense_outputs(shape):
    model, variables = _init("mlp", shape, 10)
    params = _perturbed(variables["params"], seed=3)
    x = _images(shape)
    logits, acts = model.apply({"params": params}, x)
    p = _np(params)
    h = x.reshape(2, -1).astype(np.float64)
    expected = {"input": h}
    for name in ("fc1", "fc2", "fc3", "fc4"):
        h = expected[name] = relu(h @ p[name]["kernel"] + p[name]["bias"])
    assert_activations_close(acts, expected)
    assert (np.asarray(acts["fc2"]) == 0).any() and (np.asarray(acts["fc2"]) > 0).any()  # ReLU is active
    np.testing.assert_allclose(logits, expected["fc4"] @ p["out"]["kernel"] + p["out"]["bias"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_cnn_matches_numpy_forward(shape):
    model, variables = _init("cnn", shape, 10)
    params = _perturbed(variables["params"], seed=4)
    x = _images(shape)
    logits, acts = model.apply({"params": params}, x)
    expected_logits, expected = np_cnn(_np(params), x.astype(np.float64))
    assert_activations_close(acts, expected)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, size, classes", [("alexnet_cifar100", 32, 100), ("alexnet_tiny_imagenet", 64, 200)])
def test_alexnet_matches_numpy_forward(name, size, classes):
    model, variables = _init(name, (size, size, 3), classes)
    params = _perturbed(variables["params"], seed=5, scale=0.02)
    x = _images((size, size, 3))
    logits, acts = model.apply({"params": params}, x)
    expected_logits, expected = np_alexnet(name, _np(params), x.astype(np.float64))
    assert_activations_close(acts, expected)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)


def _resnet_with_running_stats(seed=0):
    """ResNet-18 with perturbed params and non-trivial running statistics (so eval-mode BN is really tested)."""
    model, variables = _init("resnet18", (32, 32, 3), 10, seed=seed)
    rng = np.random.default_rng(seed + 10)

    def draw(path, leaf):
        values = rng.uniform(0.5, 2.0, leaf.shape) if path[-1].key == "var" else rng.normal(0, 0.3, leaf.shape)
        return jnp.asarray(values, jnp.float32)

    stats = jax.tree.map_with_path(draw, variables["batch_stats"])
    return model, {"params": _perturbed(variables["params"], seed=seed + 20, scale=0.01), "batch_stats": stats}


def test_resnet_eval_matches_numpy_forward_and_is_deterministic():
    model, variables = _resnet_with_running_stats()
    x = _images((32, 32, 3))
    logits, acts = model.apply(variables, x)
    expected_logits, expected, _ = np_resnet(_np(variables), x.astype(np.float64), train=False)
    assert_activations_close(acts, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-3, atol=1e-3)
    again, _ = model.apply(variables, x)
    np.testing.assert_array_equal(logits, again)


def test_resnet_reference_mode_normalises_each_sample_alone():
    from jaxmem.features import collect_activations
    from jaxmem.models.resnet import PerSampleBatchNorm, with_bn_mode

    model, variables = _resnet_with_running_stats(seed=0)
    x = _images((32, 32, 3), batch=3)
    reference = with_bn_mode(model, "reference")
    assert isinstance(reference, PerSampleBatchNorm) and with_bn_mode(model, "eval") is model
    logits, acts = reference.apply(variables, x)
    # the oracle: the model in train mode on each image alone (batch of 1), in a plain loop
    for i in range(len(x)):
        (one_logits, one_acts), _ = model.apply(variables, x[i:i + 1], train=True, mutable=["batch_stats"])
        # float32 through 18 layers: the two orders of summation differ by ~2e-5 on activations of order 1
        np.testing.assert_allclose(logits[i], one_logits[0], rtol=1e-4, atol=1e-4)
        for name in probe_layers("resnet18"):
            np.testing.assert_allclose(acts[name][i], one_acts[name][0], rtol=1e-4, atol=1e-4)
    # neither the running averages (eval mode) nor the statistics of the whole batch
    eval_logits, eval_acts = model.apply(variables, x)
    (batch_logits, batch_acts), _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    for other in (eval_acts, batch_acts):
        assert not np.allclose(acts["l0"], other["l0"], rtol=1e-3, atol=1e-3)
        assert not np.allclose(acts["pool"], other["pool"], rtol=1e-3, atol=1e-3)
    # the same through the feature extraction of the probes, vmapped over members
    stacked = _stack([variables, variables])
    got = collect_activations(reference, stacked, x, ("l0", "pool"), batch_size=2)
    np.testing.assert_allclose(got["pool"][1], acts["pool"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="bn_mode"):
        with_bn_mode(model, "batch")


def test_resnet_train_mode_uses_batch_stats_and_updates_running_averages():
    model, variables = _resnet_with_running_stats(seed=1)
    x = _images((32, 32, 3), batch=3)
    (logits, acts), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    expected_logits, expected, moments = np_resnet(_np(variables), x.astype(np.float64), train=True)
    assert_activations_close(acts, expected, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-3, atol=1e-3)
    old, new = _np(variables["batch_stats"]), _np(updates["batch_stats"])
    assert len(moments) == 1 + 8 * 2 + 3  # stem, two per block, three projection shortcuts
    for path, (mean, var) in moments.items():
        old_stats, new_stats = old, new
        for key in path.split("/"):
            old_stats, new_stats = old_stats[key], new_stats[key]
        # Flax momentum 0.9 == PyTorch momentum 0.1; Flax uses the biased batch variance.
        np.testing.assert_allclose(new_stats["mean"], 0.9 * old_stats["mean"] + 0.1 * mean, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(new_stats["var"], 0.9 * old_stats["var"] + 0.1 * var, rtol=1e-3, atol=1e-4)
    assert not np.allclose(new["bn1"]["mean"], old["bn1"]["mean"])
    # eval mode with the same params gives different outputs (running averages, not batch statistics)
    assert not np.allclose(model.apply(variables, x)[0], logits, atol=1e-3)


def test_torch_semantics_for_strided_convs_and_padded_pool():
    """Our AlexNet-TinyImageNet and ResNet stem equal PyTorch's Conv2d(padding=p) / MaxPool2d on the same weights."""
    torch = pytest.importorskip("torch", reason="torch (the 'reference' extra) is not installed")
    functional = torch.nn.functional

    def to_torch(array):
        return torch.tensor(np.asarray(array, np.float32))

    def conv(h, p, stride, pad):
        return functional.conv2d(h, to_torch(p["kernel"]).permute(3, 2, 0, 1), to_torch(p["bias"]), stride, pad)

    model, variables = _init("alexnet_tiny_imagenet", (64, 64, 3), 200)
    params = _perturbed(variables["params"], seed=6, scale=0.02)
    x = _images((64, 64, 3))
    h = torch.from_numpy(x).permute(0, 3, 1, 2)
    for index, (stride, pad) in enumerate(ALEXNET_CONVS["alexnet_tiny_imagenet"], start=1):
        h = functional.relu(conv(h, params[f"conv{index}"], stride, pad))
        if index in (1, 2, 5):
            h = functional.max_pool2d(h, 3, 2)
    flat = h.permute(0, 2, 3, 1).reshape(2, -1)
    np.testing.assert_allclose(model.apply({"params": params}, x)[1]["flat"], flat.numpy(), rtol=1e-4, atol=1e-4)

    model, variables = _resnet_with_running_stats(seed=2)
    x = _images((32, 32, 3))
    stem, stats = variables["params"]["bn1"], variables["batch_stats"]["bn1"]
    h = functional.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                          to_torch(variables["params"]["conv1"]["kernel"]).permute(3, 2, 0, 1), padding=1)
    h = functional.batch_norm(h, to_torch(stats["mean"]), to_torch(stats["var"]), to_torch(stem["scale"]),
                              to_torch(stem["bias"]), training=False, eps=1e-5)
    h = functional.max_pool2d(functional.relu(h), 3, 2, padding=1)
    l0 = h.permute(0, 2, 3, 1).reshape(2, -1)
    np.testing.assert_allclose(model.apply(variables, x)[1]["l0"], l0.numpy(), rtol=1e-4, atol=1e-4)


# --- dropout -------------------------------------------------------------------------------------------------------

def _torch_cnn_head(variables, flat, *, renorm: bool):
    """The reference's fully connected part in PyTorch from ``flat``: Linear, ReLU, (dropout p→0,) then
    ``torch.renorm(x, 1, 1, 3)`` after each hidden layer, and the bias-free ``fc3``; float64."""
    torch = pytest.importorskip("torch", reason="torch is not installed; the renorm oracle needs it")
    params = variables["params"]
    h = torch.tensor(np.asarray(flat, np.float64))
    for name in ("fc1", "fc2", "fc3"):
        weight = torch.tensor(np.asarray(params[name]["kernel"], np.float64)).T
        h = torch.relu(torch.nn.functional.linear(h, weight, torch.tensor(np.asarray(params[name]["bias"], np.float64))))
        if renorm:
            h = torch.renorm(h, 1, 1, 3)
    return (h @ torch.tensor(np.asarray(params["out"]["kernel"], np.float64))).numpy()


def test_renorm_units_is_torch_renorm_values_and_gradient():
    torch = pytest.importorskip("torch", reason="torch is not installed; the renorm oracle needs it")
    from jaxmem.models.cnn import renorm_units

    x = np.abs(np.random.default_rng(0).normal(size=(6, 9))) * np.linspace(0.05, 2.0, 9)  # columns under and over 3
    norms = np.abs(x).sum(axis=0)
    assert (norms < 3).any() and (norms > 3).any()
    x[:, 0] = 3.0 / 6  # a column exactly at the cap is left alone
    weights = np.random.default_rng(1).normal(size=x.shape)
    x_torch = torch.tensor(x, requires_grad=True)
    expected = torch.renorm(x_torch, p=1, dim=1, maxnorm=3)
    (expected * torch.tensor(weights)).sum().backward()
    with jax.enable_x64(True):
        ours = renorm_units(jnp.asarray(x))
        grad = jax.grad(lambda a: jnp.sum(renorm_units(a) * weights))(jnp.asarray(x))
    np.testing.assert_allclose(ours, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    # not the row-wise (dim=0) renorm
    assert not np.allclose(ours, torch.renorm(torch.tensor(x), 1, 0, 3).numpy())


def test_cnn_dropout_then_renorm_as_the_reference():
    shape = (28, 28, 1)
    _, variables = _init("cnn", shape, 10)  # dropout has no parameters
    x = _images(shape, batch=128)  # the reference's MNIST batch: many units' column norms pass the cap
    plain = get_model("cnn", 10)
    plain_logits, plain_acts = plain.apply(variables, x)
    reference = _torch_cnn_head(variables, plain_acts["flat"], renorm=True)
    assert not np.allclose(reference, _torch_cnn_head(variables, plain_acts["flat"], renorm=False), rtol=0.05,
                           atol=1e-3)
    # dropout ≈ 0 in train mode: no unit is dropped, so only the renorm after each hidden layer remains
    almost, _ = get_model("cnn", 10, dropout=1e-9).apply(variables, x, train=True,
                                                         rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(almost, reference, rtol=2e-4, atol=2e-5)

    model = get_model("cnn", 10, dropout=0.5)
    train_a, acts_a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(train_a, model.apply(variables, x, train=True,
                                                       rngs={"dropout": jax.random.key(1)})[0])
    assert not np.allclose(train_a, train_b)
    # renorm comes after dropout: the input of the last layer has every unit's L1 norm over the batch capped at 3
    seen = []

    def record_out_input(next_fun, args, kwargs, context):
        if context.module.name == "out":
            seen.append(np.asarray(args[0]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record_out_input):
        model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    norms = np.abs(seen[0]).sum(axis=0)
    assert norms.max() <= 3 * (1 + 1e-5) and np.isclose(norms, 3, rtol=1e-5).mean() > 0.1
    # eval mode: no unit dropped, but the reference's renorm still applies (it is not gated by the mode)
    eval_logits, eval_acts = model.apply(variables, x)
    np.testing.assert_allclose(eval_logits, reference, rtol=2e-4, atol=2e-5)
    assert not np.allclose(train_a, eval_logits)
    # without dropout nothing changes: the plain model is the head without renorm, in either mode
    np.testing.assert_allclose(plain_logits, _torch_cnn_head(variables, plain_acts["flat"], renorm=False),
                               rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(plain_logits, plain.apply(variables, x, train=True)[0], rtol=1e-5, atol=1e-6)
    # fc1 is recorded before its dropout and renorm: the same in every mode and model
    np.testing.assert_allclose(acts_a["fc1"], plain_acts["fc1"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(eval_acts["fc1"], plain_acts["fc1"], rtol=1e-6, atol=1e-6)


def test_resnet_dropout_acts_only_in_train_mode():
    model = get_model("resnet18", 10, dropout=0.5)
    _, variables = _resnet_with_running_stats(seed=0)
    x = _images((32, 32, 3))

    def train_logits(seed):
        (logits, _), _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.key(seed)})
        return logits

    assert not np.allclose(train_logits(1), train_logits(2))
    eval_logits, _ = model.apply(variables, x)
    np.testing.assert_array_equal(eval_logits, model.apply(variables, x)[0])
    np.testing.assert_allclose(eval_logits, get_model("resnet18", 10).apply(variables, x)[0], rtol=1e-6, atol=1e-6)


# --- member axis ---------------------------------------------------------------------------------------------------

def test_vmap_over_members_equals_separate_applies():
    x = _images((28, 28, 1))
    for name, kwargs in (("mlp", {}), ("cnn", {"dropout": 0.3})):
        model = get_model(name, 10, **kwargs)
        members = [_init(name, (28, 28, 1), 10, seed)[1] for seed in range(3)]  # dropout has no parameters
        keys = jax.random.split(jax.random.key(9), 3)

        def apply(variables, key):
            return model.apply(variables, x, train=True, rngs={"dropout": key})

        logits, acts = jax.vmap(apply)(_stack(members), keys)
        assert logits.shape == (3, 2, 10)
        for m, variables in enumerate(members):
            one_logits, one_acts = apply(variables, keys[m])
            np.testing.assert_allclose(logits[m], one_logits, rtol=1e-5, atol=1e-6)
            for layer in probe_layers(name):
                np.testing.assert_allclose(acts[layer][m], one_acts[layer], rtol=1e-5, atol=1e-6)
        assert not np.allclose(logits[0], logits[1])  # members really differ


def test_vmap_over_resnet_members_with_batch_stats():
    model = get_model("resnet18", 10)
    x = _images((32, 32, 3))
    members = [_resnet_with_running_stats(seed)[1] for seed in range(3)]

    def train_apply(variables):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])

    (logits, _), updates = jax.vmap(train_apply)(_stack(members))
    eval_logits, _ = jax.vmap(lambda v: model.apply(v, x))(_stack(members))
    for m, variables in enumerate(members):
        (one_logits, _), one_updates = train_apply(variables)
        np.testing.assert_allclose(logits[m], one_logits, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(updates["batch_stats"]["layer4_1"]["bn2"]["var"][m],
                                   one_updates["batch_stats"]["layer4_1"]["bn2"]["var"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(eval_logits[m], model.apply(variables, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 7, 7, 3), (1, 32, 32, 16), (3, 6, 9, 2)])
def test_reshape_max_pool_equals_flax_max_pool(shape):
    from jaxmem.models.cnn import max_pool_2x2

    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID"))


@pytest.mark.parametrize("kernel, stride, padding, channels", [
    (3, 1, ((1, 1), (1, 1)), (3, 16)),  # CNN / ResNet
    (3, 2, ((1, 1), (1, 1)), (8, 16)),  # ResNet stage entry
    (1, 2, "VALID", (8, 16)),  # ResNet shortcut
    (11, 4, ((2, 2), (2, 2)), (3, 8)),  # AlexNet-TinyImageNet conv1
    (5, 1, "SAME", (4, 6)),
])
def test_patches_conv_equals_xla_conv_and_its_gradients(kernel, stride, padding, channels):
    from jaxmem.models.conv import patches_conv

    c_in, c_out = channels
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, 19, 17, c_in))
    k = jax.random.normal(kk, (kernel, kernel, c_in, c_out))
    dims = jax.lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))

    def xla(x, k):
        return jax.lax.conv_general_dilated(x, k, (stride, stride), padding, dimension_numbers=dims,
                                            precision="highest")

    def ours(x, k):
        return patches_conv(x, k, (stride, stride), padding)

    np.testing.assert_allclose(ours(x, k), xla(x, k), rtol=1e-4, atol=1e-4 * kernel)
    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
    for got, want in zip(jax.grad(loss(ours), (0, 1))(x, k), jax.grad(loss(xla), (0, 1))(x, k)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * kernel)


def test_conv_impls_share_parameters_and_outputs():
    from jaxmem.models.conv import Conv

    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
    make = lambda impl: Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), impl=impl)
    params = {impl: make(impl).init(jax.random.key(2), x) for impl in ("xla", "patches")}
    reference = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))).init(jax.random.key(2), x)
    for impl in params:
        jax.tree.map(np.testing.assert_array_equal, params[impl], reference)
    np.testing.assert_allclose(make("patches").apply(reference, x), make("xla").apply(reference, x),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl"):
        Conv(8, (3, 3), impl="fft")


@pytest.mark.parametrize("name", ["cnn", "alexnet_cifar100", "resnet18"])
def test_conv_impl_is_the_models_field_not_the_backend(name, monkeypatch):
    from jaxmem.models.conv import default_conv_impl

    assert (default_conv_impl("cpu"), default_conv_impl("gpu"), default_conv_impl("tpu")) == ("patches", "xla", "xla")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # model code must not look
    x = jnp.zeros((2, 32, 32, 3))
    model = get_model(name, 10, conv_impl="patches")
    variables = model.init(jax.random.key(0), x)

    def program(model, train):
        return str(jax.make_jaxpr(lambda v: model.apply(v, x, train=train, mutable=["batch_stats"]))(variables))

    assert "conv_general_dilated" not in program(model, train=True)
    assert "conv_general_dilated" in program(model, train=False)  # evaluation always uses XLA's convolution
    assert "conv_general_dilated" in program(get_model(name, 10, conv_impl="xla"), train=True)
    assert get_model(name, 10).conv_impl == "xla"  # the default follows the (patched) backend
    with pytest.raises(ValueError, match="conv_impl"):
        get_model(name, 10, conv_impl="fft")
