"""The memory planner: its arithmetic by hand, and its training estimate against XLA's compiled epoch."""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import pytest

from jaxmem import planner
from jaxmem.config import TrainSpec
from jaxmem.models import count_params, get_model
from jaxmem.train.epoch import epoch_compiler_options, init_members, make_member_epoch
from jaxmem.train.step import DeviceData, make_optimizer

SGD = TrainSpec("sgd", 1e-2, 32, 1.0)
ADAM = TrainSpec("adam", 1e-3, 128, 1.0)


def _dense(widths, bias=True):
    return sum(a * b + (b if bias else 0) for a, b in zip(widths, widths[1:]))


# SPEC §2 shapes, counted by hand: MLP 64 → 128 → 512 → 2048 → 2048 → 10 on 8×8×1; CNN convs 3×3 with bias,
# three 2×2 pools (28 → 14 → 7 → 3), Dense 576 → 250 → 250 → 250 (bias) → 10 (no bias).
MLP_DIGITS_PARAMS = _dense((64, 128, 512, 2048, 2048, 10))
CNN_CONVS = ((1, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64))
CNN_MNIST_PARAMS = sum(9 * a * b + b for a, b in CNN_CONVS) + _dense((576, 250, 250, 250)) + 250 * 10


@pytest.mark.parametrize("name, shape, expected", [("mlp", (8, 8, 1), MLP_DIGITS_PARAMS),
                                                    ("cnn", (28, 28, 1), CNN_MNIST_PARAMS)])
def test_parameter_count_matches_hand_count_and_count_params(name, shape, expected):
    costs = planner.member_costs(name, shape, 10, SGD, 100)
    model = get_model(name, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]
    assert costs.num_params == expected == count_params(params)
    assert costs.parameters == 4 * expected


@pytest.mark.parametrize("spec, moments, counter_bytes", [(SGD, 1, 0), (ADAM, 2, 4)])
def test_breakdown_arithmetic(spec, moments, counter_bytes):
    members, num_train, num_test = 3, 200, 50
    parts = planner.estimate_memory("mlp", (8, 8, 1), 10, spec, members, num_train, num_test, eval_batch_size=100)
    params = 4 * MLP_DIGITS_PARAMS
    assert parts["parameters"] == members * params
    assert parts["optimizer_state"] == members * (moments * params + counter_bytes)  # Adam's step count: int32
    assert parts["gradients"] == members * params
    assert parts["batch_stats"] == 0
    assert parts["state_copy"] == parts["parameters"] + parts["optimizer_state"]
    assert parts["dataset"] == (num_train + num_test) * (64 * 4 + 4)
    assert parts["member_labels"] == members * num_train * 4
    held = sum(parts[k] for k in ("parameters", "optimizer_state", "state_copy", "dataset", "member_labels"))
    assert parts["training"] == held + max(parts["gradients"] + parts["train_activations"], parts["eval_activations"])
    assert parts["total"] == parts["training"] and parts["probing"] == 0


def test_member_parts_scale_with_members_per_device():
    one = planner.estimate_memory("mlp", (8, 8, 1), 10, SGD, 2, 200, 50)
    two = planner.estimate_memory("mlp", (8, 8, 1), 10, SGD, 4, 200, 50)
    sharded = planner.estimate_memory("mlp", (8, 8, 1), 10, SGD, 8, 200, 50, num_devices=4)
    for name in ("parameters", "optimizer_state", "gradients", "train_activations", "eval_activations"):
        assert two[name] == 2 * one[name] and sharded[name] == one[name]
    assert two["dataset"] == one["dataset"] == sharded["dataset"]  # a full copy per device
    with pytest.raises(ValueError, match="M = 6 members cannot be split evenly over 4 devices"):
        planner.estimate_memory("mlp", (8, 8, 1), 10, SGD, 6, 200, 50, num_devices=4)


def test_probe_arithmetic():
    members, num_train, num_test, classes = 2, 300, 100, 10
    dims = {"a": 10, "b": 20}
    common = ("mlp", (8, 8, 1), classes, SGD, members, num_train, num_test)
    in_memory = planner.estimate_memory(*common, probe_layers_dims=dims)
    streamed = planner.estimate_memory(*common, probe_layers_dims=[10, 20], streaming=True)
    assert in_memory["probe_activations"] == members * (num_train + num_test) * 30 * 4
    assert in_memory["probe_grams"] == members * classes * 20**2 * 4  # one layer at a time
    assert streamed["probe_activations"] == 0
    assert streamed["probe_grams"] == members * classes * (10**2 + 20**2) * 4  # every layer's Grams at once
    assert in_memory["probe_eigh"] == streamed["probe_eigh"] == 2 * members * classes * 20**2 * 4
    assert in_memory["probe_dual"] == members * (num_train**2 // classes + 20 * num_train) * 4
    held = in_memory["parameters"] + in_memory["dataset"] + in_memory["member_labels"]
    assert in_memory["probing"] == held + sum(in_memory[k] for k in ("probe_activations", "probe_grams",
                                                                     "probe_eigh"))
    assert in_memory["total"] == max(in_memory["training"], in_memory["probing"])
    with pytest.raises(ValueError, match="positive integer widths"):
        planner.estimate_memory(*common, probe_layers_dims=[10, 0])


def test_probe_layer_widths_of_the_mlp():
    widths = planner.probe_layer_widths("mlp", (8, 8, 1), 10)
    assert list(widths.items()) == [("input", 64), ("fc1", 128), ("fc2", 512), ("fc3", 2048), ("fc4", 2048)]


def test_peak_live_bytes_by_hand():
    x = jnp.zeros(1000, jnp.float32)  # 4000 bytes per [1000] float32 value

    def chain(x):  # a dies when b is made: peak a + b
        return ((x * 2) + 1).sum()

    def fork(x):  # a and b both live while c is made: peak a + b + c
        a, b = x * 2, x * 3
        return (a + b).sum()

    def view(x):  # the reshape owns no buffer: peak a (+ the 4-byte sum)
        return (x * 2).reshape(10, 100).sum()

    assert planner.peak_live_bytes(jax.make_jaxpr(chain)(x)) == 8000
    assert planner.peak_live_bytes(jax.make_jaxpr(fork)(x)) == 12000
    assert planner.peak_live_bytes(jax.make_jaxpr(view)(x)) == 4004


def _compiled_epoch_bytes(name, shape, spec, members, num_train, num_test, eval_batch_size):
    """argument + output − aliased + temporary bytes of the compiled, fully vmapped epoch program."""
    model, tx = get_model(name, 10), make_optimizer(spec)
    keys = jax.random.split(jax.random.key(0), members)
    state = jax.eval_shape(lambda k: init_members(model, tx, k, jnp.zeros((1, *shape))), keys)
    array = jax.ShapeDtypeStruct
    data = DeviceData(array((num_train, *shape), jnp.float32), array((num_train,), jnp.int32),
                      array((num_test, *shape), jnp.float32), array((num_test,), jnp.int32))
    epoch = jax.vmap(make_member_epoch(model, tx, spec, num_train, eval_batch_size=eval_batch_size),
                     in_axes=(0, 0, 0, None, None))
    compiled = jax.jit(epoch, donate_argnums=0, compiler_options=epoch_compiler_options()).lower(
        state, array((members, num_train), jnp.int32), keys, array((), jnp.int32), data).compile()
    analysis = compiled.memory_analysis()
    return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes)


@pytest.mark.parametrize("name, shape, spec, members, num_train, num_test, eval_batch_size", [
    ("mlp", (8, 8, 1), SGD, 2, 256, 64, 100),  # 5.3 M parameters, state-dominated
    ("cnn", (28, 28, 1), ADAM, 2, 512, 128, 500),  # 0.34 M parameters, activation-dominated
])
def test_training_estimate_within_25_percent_of_compiled_epoch(name, shape, spec, members, num_train, num_test,
                                                               eval_batch_size):
    if jax.default_backend() != "cpu":
        pytest.skip("calibrated against XLA:CPU buffer assignment")
    measured = _compiled_epoch_bytes(name, shape, spec, members, num_train, num_test, eval_batch_size)
    estimate = planner.estimate_memory(name, shape, 10, spec, members, num_train, num_test,
                                       eval_batch_size=eval_batch_size)
    assert abs(estimate["training"] - measured) <= 0.25 * measured, (estimate["training"], measured)


def test_max_members_and_check_fits_agree_with_the_estimate():
    common = ("mlp", (8, 8, 1), 10, SGD)
    total = lambda m, **kw: planner.estimate_memory(*common, m, 200, 50, **kw)["total"]  # noqa: E731
    budget = total(5) + 1000
    assert total(6) > budget
    assert planner.max_members(*common, 200, 50, budget_bytes=budget) == 5
    assert planner.check_fits(*common, 5, 200, 50, budget_bytes=budget)["total"] == total(5)
    with pytest.raises(ValueError) as error:
        planner.check_fits(*common, 64, 200, 50, budget_bytes=budget)
    gib = lambda b: f"{b / 2**30:.1f}"  # noqa: E731
    assert re.match(rf"M = 64 needs {gib(total(64))} GiB; 5 fit in {gib(budget)} GiB", str(error.value))
    # sharded over 2 devices: per-device budget, M a multiple of 2
    assert planner.max_members(*common, 200, 50, budget_bytes=budget, num_devices=2) == 10
    assert planner.max_members(*common, 200, 50, budget_bytes=1000) == 0


class _FakeDevice:
    def __init__(self, platform, stats):
        self.platform, self._stats = platform, stats

    def memory_stats(self):
        return self._stats


def test_device_memory_bytes():
    assert planner.device_memory_bytes(_FakeDevice("gpu", {"bytes_limit": 123, "bytes_in_use": 7})) == 123
    assert planner.device_memory_bytes(_FakeDevice("gpu", None)) is None
    host = planner.device_memory_bytes(_FakeDevice("cpu", None))
    assert 0 < host <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with pytest.raises(ValueError, match="pass budget_bytes"):
        planner.check_fits("mlp", (8, 8, 1), 10, SGD, 1, 10, 10, device=_FakeDevice("gpu", None))

