"""PyTorch's default initialisers (``init="torch"``) held against PyTorch itself, layer by layer.

For every Dense/Conv kernel and bias of a model, many initialisations are drawn (vmapped over keys, one jitted
program per draw count; XLA drops the leaves a program does not return, so only the leaves that need many draws
are drawn many times) and compared with the same-shaped ``torch.nn.Linear`` / ``torch.nn.Conv2d`` reset as often:
the bound (max |w| ≤ 1/√fan_in and within a few 1/n of it), the mean and standard deviation (tolerances from the
sample size) and the whole distribution (two-sample Kolmogorov–Smirnov). BatchNorm starts as ``BatchNorm2d``
does. Flax's initialisers fail the same check.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem.models import get_model

torch = pytest.importorskip("torch", reason="torch is not installed; the initialiser oracle is PyTorch itself")
stats = pytest.importorskip("scipy.stats", reason="scipy is not installed; the distribution check needs it")

TARGET_SAMPLES = 2**14  # draws per leaf: enough that the leaf holds at least this many values in all
KS_SAMPLES = 50_000  # values per side in the distribution test
Z = 6.0  # tolerance in standard errors: a false failure has probability ~1e-9 per check
KS_P_MIN = 1e-6

# (model, classes, input shape)
MODELS = [
    ("mlp", 10, (28, 28, 1)),
    ("cnn", 10, (32, 32, 3)),
    ("alexnet_cifar100", 100, (32, 32, 3)),
    ("alexnet_tiny_imagenet", 200, (64, 64, 3)),
    ("resnet18", 10, (32, 32, 3)),
]


def _draws(size: int) -> int:
    """Draws of a leaf of ``size`` values: a power of two, at least 2."""
    return max(2, 2 ** math.ceil(math.log2(max(1, TARGET_SAMPLES / size))))


def _layers(params) -> dict[tuple[str, ...], dict[str, tuple[int, ...]]]:
    """``{module path: {leaf name: shape}}`` of one member's params."""
    layers: dict = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        keys = tuple(p.key for p in path)
        layers.setdefault(keys[:-1], {})[keys[-1]] = tuple(leaf.shape)
    return layers


def _draw_leaves(model, x, leaves, draws: int) -> dict:
    """``{(path, leaf): [draws, *shape]}`` for the given leaves from ``draws`` initialisations with distinct keys."""

    def one(key):
        params = model.init(key, x, train=False)["params"]
        return [_get(params, path)[leaf] for path, leaf in leaves]

    drawn = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), draws))
    return {entry: np.asarray(values, np.float64) for entry, values in zip(leaves, drawn)}


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _torch_layer(leaves: dict[str, tuple[int, ...]]):
    """The PyTorch layer of the same shape as a Flax Dense (kernel [in, out]) or Conv (kernel [kh, kw, in, out])."""
    kernel = leaves["kernel"]
    bias = "bias" in leaves
    if len(kernel) == 2:
        return torch.nn.Linear(kernel[0], kernel[1], bias=bias)
    kh, kw, c_in, c_out = kernel
    return torch.nn.Conv2d(c_in, c_out, (kh, kw), bias=bias)


def _torch_draws(layer, draws: int) -> dict[str, np.ndarray]:
    """``{"kernel", "bias": [draws · size]}`` from ``draws`` default resets of a PyTorch layer."""
    out = {"kernel": [], "bias": []}
    for _ in range(draws):
        layer.reset_parameters()
        out["kernel"].append(layer.weight.detach().numpy().astype(np.float64).ravel())
        if layer.bias is not None:
            out["bias"].append(layer.bias.detach().numpy().astype(np.float64).ravel())
    return {k: np.concatenate(v) for k, v in out.items() if v}


def _compare(name: str, ours: np.ndarray, theirs: np.ndarray, fan_in: int) -> list[str]:
    """Mismatches between our values and PyTorch's for one leaf (empty when they agree)."""
    bound = 1.0 / math.sqrt(fan_in)
    sigma = bound / math.sqrt(3.0)  # std of U(-b, b)
    problems = []
    for who, values in (("jaxmem", ours), ("torch", theirs)):
        n = values.size
        top = np.abs(values).max()
        # max|w| of n uniform draws falls short of b by more than c·b/n with probability ~e^(-c)
        if not bound * (1 - 20.0 / n) <= top <= bound * (1 + 1e-6):
            problems.append(f"{name} ({who}): max |w| = {top:.6g}, expected just under 1/sqrt(fan_in) = {bound:.6g}")
    n1, n2 = ours.size, theirs.size
    # standard errors under the uniform law: mean σ/√n, standard deviation σ·√((κ − 1)/4n) with kurtosis κ = 9/5
    if abs(ours.mean() - theirs.mean()) > Z * sigma * math.sqrt(1 / n1 + 1 / n2):
        problems.append(f"{name}: mean {ours.mean():.4g} vs torch {theirs.mean():.4g}")
    if abs(ours.std() - theirs.std()) > Z * sigma * math.sqrt(0.2 / n1 + 0.2 / n2):
        problems.append(f"{name}: std {ours.std():.5g} vs torch {theirs.std():.5g} (uniform: {sigma:.5g})")
    p_value = stats.ks_2samp(ours[:KS_SAMPLES], theirs[:KS_SAMPLES]).pvalue  # values are i.i.d.: any subset will do
    if p_value < KS_P_MIN:
        problems.append(f"{name}: distribution differs from torch's (KS p = {p_value:.2g})")
    return problems


def torch_init_mismatches(model, input_shape) -> tuple[list[str], int]:
    """Every way ``model``'s initial parameters differ from PyTorch's defaults, and the number of leaves checked.

    Dense/Conv kernels and biases: against the same-shaped PyTorch layer (fan_in = in·kh·kw); BatchNorm: scale 1,
    bias 0, running mean 0 and variance 1, as ``torch.nn.BatchNorm2d``. Any other leaf is a mismatch.
    """
    x = jnp.zeros((2, *input_shape), jnp.float32)
    variables = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
    layers = _layers(variables["params"])
    problems, checked = [], 0
    dense_or_conv = {path: leaves for path, leaves in layers.items() if "kernel" in leaves}
    by_draws: dict[int, list] = {}
    for path, leaves in dense_or_conv.items():
        if set(leaves) - {"kernel", "bias"}:
            problems.append(f"{'/'.join(path)}: unexpected leaves {sorted(set(leaves) - {'kernel', 'bias'})}")
        for leaf, shape in leaves.items():
            by_draws.setdefault(_draws(math.prod(shape)), []).append((path, leaf))
    torch.manual_seed(0)
    for draws, entries in sorted(by_draws.items()):
        drawn = _draw_leaves(model, x, entries, draws)
        for path, leaf in entries:
            leaves = dense_or_conv[path]
            theirs = _torch_draws(_torch_layer(leaves), draws)
            if leaf in theirs:
                problems += _compare(f"{'/'.join(path)}/{leaf}", drawn[path, leaf].ravel(), theirs[leaf],
                                     fan_in=math.prod(leaves["kernel"][:-1]))
                checked += 1
    real = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(1))
    norm = torch.nn.BatchNorm2d(4)
    expected = {"scale": norm.weight.detach(), "bias": norm.bias.detach(), "mean": norm.running_mean,
                "var": norm.running_var}
    for collection in ("params", "batch_stats"):
        for path, leaves in _layers(real.get(collection, {})).items():
            if path in dense_or_conv:
                continue
            node = _get(real[collection], path)
            for leaf in leaves:
                name = f"{collection}/{'/'.join(path)}/{leaf}"
                if leaf not in expected:
                    problems.append(f"{name}: not a Dense, Conv or BatchNorm leaf")
                    continue
                checked += 1
                if not np.array_equal(np.asarray(node[leaf]), np.full(leaves[leaf], float(expected[leaf][0]))):
                    problems.append(f"{name}: not {float(expected[leaf][0])} everywhere like BatchNorm2d")
    return problems, checked


def _leaf_count(model, input_shape) -> int:
    variables = jax.eval_shape(lambda k: model.init(k, jnp.zeros((2, *input_shape)), train=False),
                               jax.random.key(0))
    return len(jax.tree.leaves(variables))


@pytest.mark.slow
@pytest.mark.parametrize("name, classes, shape", MODELS, ids=[m[0] for m in MODELS])
def test_torch_init_matches_pytorch_layer_by_layer(name, classes, shape):
    model = get_model(name, classes, init="torch")
    problems, checked = torch_init_mismatches(model, shape)
    assert problems == []
    assert checked == _leaf_count(model, shape)  # every kernel, bias and BatchNorm leaf was checked


@pytest.mark.parametrize("name, classes, shape", MODELS[:2], ids=["mlp", "cnn"])  # Dense and Conv rules
def test_flax_init_fails_the_same_check(name, classes, shape):
    problems, _ = torch_init_mismatches(get_model(name, classes, init="flax"), shape)
    text = "\n".join(problems)
    assert "max |w|" in text and "std" in text  # LeCun-normal kernels: wider and unbounded
    if name != "resnet18":  # ResNet's convs have no bias; elsewhere Flax's zero biases fail
        assert "bias (jaxmem): max |w| = 0," in text
    # BatchNorm starts the same in both frameworks
    assert "BatchNorm2d" not in text
