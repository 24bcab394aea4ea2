"""Memory planner: device bytes of training (and probing) M members, before anything is allocated.

:func:`estimate_memory` breaks one device's peak down into parts; :func:`max_members` inverts it for a budget;
:func:`check_fits` turns it into a clear ``ValueError``; :func:`device_memory_bytes` reads the budget of a device.

Where the numbers come from (per member, from the model itself, without compiling or allocating):

* parameters, BatchNorm statistics and optimiser state: ``jax.eval_shape`` of the member's init (Adam keeps two
  moments, 2× the parameters; SGD with momentum one, 1×);
* one training step: the peak of the intermediates live at once in the jaxpr of the step's loss and gradients
  (program order, each value freed after its last use): the gradients plus the activations kept for the
  backward pass (the optimiser update then works leaf by leaf into the epoch's carry);
* one evaluation batch: the same peak for the forward pass on ``min(eval_batch_size, max(N, T))`` samples.

The epoch program (:func:`jaxmem.train.epoch.make_member_epoch` under ``vmap``) holds the state twice (the donated
input, and the carry that training updates while the input is kept for frozen members' select), the dataset, the
member labels, and at any time either a training step or an evaluation batch per member:

    training = state + state copy + dataset + labels + max(gradients + train activations, eval activations)

Checked against XLA's own buffer assignment of the compiled epoch (``tests/test_planner.py``: within 25 % on CPU
for an MLP and a CNN; ResNet-18 comes out 19 % low, see ``docs/scaling.md``). Probing is estimated from the layer
widths (not checked against a measurement):
activations ``[M, N + T, D]`` of the in-memory layers, or per-class Grams ``C·D²`` of every layer when streaming,
plus the eigendecomposition of the widest layer. ``total = max(training, probing)``: the two are separate
programs. Sharded over ``num_devices`` (:mod:`jaxmem.sharding`), every figure is per device, for ``M / n``
members and a full copy of the dataset.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.extend.core import DropVar, Literal, jaxprs_in_params

from jaxmem.config import TrainSpec
from jaxmem.models import count_params, get_model, probe_layers
from jaxmem.train.epoch import EVAL_BATCH_SIZE
from jaxmem.train.step import apply_model, cross_entropy, init_member, make_optimizer

GIB = 2**30
FLOAT_BYTES = 4  # float32 parameters, activations and normalised images
LABEL_BYTES = 4  # int32 labels
# Results that are a view of their operand once XLA has assigned layouts and fused (no buffer of their own).
VIEW_PRIMITIVES = frozenset({"transpose", "reshape", "squeeze", "expand_dims", "broadcast_in_dim"})


class MemberCosts(NamedTuple):
    """Bytes of one member, from tracing its model (see the module docstring)."""

    num_params: int
    parameters: int
    batch_stats: int
    optimizer_state: int
    gradient_peak: int  # live intermediates of one step's loss and gradients, the gradients included
    eval_peak: int  # live intermediates of one evaluation batch's forward pass


def _tree_bytes(tree) -> int:
    return sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree))


def _var_bytes(var) -> int:
    aval = var.aval
    if not hasattr(aval, "shape") or not hasattr(aval, "dtype") or jnp.issubdtype(aval.dtype, jax.dtypes.prng_key):
        return 0
    return math.prod(aval.shape) * aval.dtype.itemsize


def peak_live_bytes(jaxpr) -> int:
    """Peak bytes of intermediates live at once when ``jaxpr`` runs in program order.

    A value is live from the equation that makes it to its last use (outputs: to the end); inputs and constants
    are not counted. Layout-only results (:data:`VIEW_PRIMITIVES`) take no bytes and keep their source alive, as
    XLA folds them into their consumers. An equation with inner jaxprs (``jit``, ``custom_jvp_call``, ``scan``,
    ``cond``, …) adds the larger of its outputs and its inner peak on top of what is live around it.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # ClosedJaxpr -> Jaxpr
    outside = set(jaxpr.invars) | set(jaxpr.constvars)
    source, last_use = {}, {}
    for index, eqn in enumerate(jaxpr.eqns):
        if eqn.primitive.name in VIEW_PRIMITIVES and not isinstance(eqn.invars[0], Literal):
            source[eqn.outvars[0]] = source.get(eqn.invars[0], eqn.invars[0])
        for var in eqn.invars:
            if not isinstance(var, Literal):
                last_use[source.get(var, var)] = index
    for var in jaxpr.outvars:
        if not isinstance(var, Literal):
            last_use[source.get(var, var)] = len(jaxpr.eqns)
    owned = lambda var: 0 if var in source else _var_bytes(var)  # noqa: E731
    live = peak = 0
    for index, eqn in enumerate(jaxpr.eqns):
        outputs = [var for var in eqn.outvars if not isinstance(var, DropVar)]
        inner = max((peak_live_bytes(sub) for sub in jaxprs_in_params(eqn.params)), default=0)
        peak = max(peak, live + max(inner, sum(map(owned, outputs))))
        live += sum(owned(var) for var in outputs if last_use.get(var, -1) > index)
        for var in {source.get(var, var) for var in eqn.invars if not isinstance(var, Literal)}:
            if last_use[var] == index and var not in outside:
                live -= owned(var)
    return peak


@functools.lru_cache(maxsize=32)
def member_costs(model_name: str, image_shape: tuple[int, ...], num_classes: int, spec: TrainSpec,
                 eval_batch: int) -> MemberCosts:
    """Per-member bytes of ``model_name`` trained with ``spec`` on ``image_shape = (H, W, C)`` images."""
    model = get_model(model_name, num_classes, init=spec.init, dropout=spec.dropout)
    tx = make_optimizer(spec)
    key = jax.random.key(0)
    state = jax.eval_shape(lambda k: init_member(model, tx, k, jnp.zeros((1, *image_shape))), key)
    batch = spec.batch_size

    def loss_and_grads(params, batch_stats, x, labels, weights, dropout_key):  # the gradient part of train_step
        def loss_fn(params):
            logits, new_stats = apply_model(model, params, batch_stats, x, train=True, dropout_key=dropout_key)
            return cross_entropy(logits, labels, weights), new_stats

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    backward = jax.make_jaxpr(loss_and_grads)(
        state.params, state.batch_stats, jax.ShapeDtypeStruct((batch, *image_shape), jnp.float32),
        jax.ShapeDtypeStruct((batch,), jnp.int32), jax.ShapeDtypeStruct((batch,), jnp.float32), key)
    forward = jax.make_jaxpr(lambda s, x: apply_model(model, s.params, s.batch_stats, x)[0])(
        state, jax.ShapeDtypeStruct((eval_batch, *image_shape), jnp.float32))
    return MemberCosts(
        num_params=count_params(state.params),
        parameters=_tree_bytes(state.params),
        batch_stats=_tree_bytes(state.batch_stats),
        optimizer_state=_tree_bytes(state.opt_state),
        gradient_peak=peak_live_bytes(backward),
        eval_peak=peak_live_bytes(forward),
    )


def probe_layer_widths(model_name: str, image_shape: Sequence[int], num_classes: int) -> dict[str, int]:
    """``{layer: D}`` of the model's probe layers (pass as ``probe_layers_dims``)."""
    model = get_model(model_name, num_classes)
    x = jnp.zeros((1, *image_shape))
    variables = jax.eval_shape(lambda k: model.init({"params": k}, x, train=False), jax.random.key(0))
    _, activations = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
    return {name: math.prod(activations[name].shape[1:]) for name in probe_layers(model_name)}


def _members_per_device(num_members: int, num_devices: int) -> int:
    if num_members < 1 or num_devices < 1:
        raise ValueError(f"need num_members >= 1 and num_devices >= 1, got {num_members} and {num_devices}")
    if num_members % num_devices:
        raise ValueError(f"M = {num_members} members cannot be split evenly over {num_devices} devices; choose M a "
                         f"multiple of {num_devices} (jaxmem.sharding shards the member axis evenly)")
    return num_members // num_devices


def _layer_dims(probe_layers_dims) -> list[int]:
    if probe_layers_dims is None:
        return []
    dims = list(probe_layers_dims.values() if isinstance(probe_layers_dims, Mapping) else probe_layers_dims)
    if any(not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"probe_layers_dims must be positive integer widths (or {{layer: width}}), got {dims}")
    return dims


def estimate_memory(model_name: str, image_shape: Sequence[int], num_classes: int, spec: TrainSpec,
                    num_members: int, num_train: int, num_test: int, *,
                    probe_layers_dims: Mapping[str, int] | Sequence[int] | None = None, streaming: bool = False,
                    num_devices: int = 1, eval_batch_size: int = EVAL_BATCH_SIZE) -> dict[str, int]:
    """Peak bytes on one device of training ``num_members`` members (and probing them), part by part.

    Args:
      model_name, num_classes, spec: the model and its training settings (as for ``fit_members``).
      image_shape: ``(H, W, C)``.
      num_members: M, all members of the run; each device holds ``M / num_devices`` of them.
      num_train, num_test: N and T (the dataset is on every device).
      probe_layers_dims: widths D of the layers to probe (e.g. :func:`probe_layer_widths`); None: no probing.
      streaming: every layer streams its per-class Grams (:func:`jaxmem.probes.engine.probe_source`); False: every
        layer holds its activations ``[M, N + T, D]`` (``probe_members`` picks per layer under its own budget,
        so its peak lies between the two).
      num_devices: devices the member axis is sharded over; M must be a multiple of it.
      eval_batch_size: the epoch's evaluation batch.

    Returns:
      Bytes: ``parameters``, ``batch_stats``, ``optimizer_state``, ``state_copy`` (the epoch's second copy of
      the state), ``gradients``, ``train_activations`` (one step), ``eval_activations`` (one batch), ``dataset``
      (normalised float32 images and int32 labels), ``member_labels`` (``[M, N]``), their peak ``training``;
      ``probe_activations``, ``probe_grams`` (``C·D²`` per layer held), ``probe_eigh`` (gathered Grams and
      eigenvectors of the widest layer), their peak ``probing`` with the parameters, dataset and labels;
      ``probe_dual`` (the dual alternative for classes with ``N_c < D``: kernels ``Σ_c N_c² ≈ N²/C`` and bases
      ``D·N``, not added anywhere); ``total = max(training, probing)``.
    """
    members = _members_per_device(num_members, num_devices)
    image_shape = tuple(int(s) for s in image_shape)
    eval_batch = min(eval_batch_size, max(num_train, num_test))
    costs = member_costs(model_name, image_shape, num_classes, spec, eval_batch)
    pixels = math.prod(image_shape)
    state = costs.parameters + costs.batch_stats + costs.optimizer_state
    train_activations = max(costs.gradient_peak - costs.parameters, 0)
    parts = {
        "parameters": members * costs.parameters,
        "batch_stats": members * costs.batch_stats,
        "optimizer_state": members * costs.optimizer_state,
        "state_copy": members * state,
        "gradients": members * costs.parameters,
        "train_activations": members * (train_activations + spec.batch_size * pixels * FLOAT_BYTES),
        "eval_activations": members * (costs.eval_peak + eval_batch * pixels * FLOAT_BYTES),
        "dataset": (num_train + num_test) * (pixels * FLOAT_BYTES + LABEL_BYTES),
        "member_labels": members * num_train * LABEL_BYTES,
    }
    held = ("parameters", "batch_stats", "optimizer_state", "state_copy", "dataset", "member_labels")
    parts["training"] = (sum(parts[name] for name in held)
                         + max(parts["gradients"] + parts["train_activations"], parts["eval_activations"]))

    dims = _layer_dims(probe_layers_dims)
    widest = max(dims, default=0)
    squares = sum(d * d for d in dims) if streaming else widest * widest
    parts["probe_activations"] = 0 if streaming else members * (num_train + num_test) * sum(dims) * FLOAT_BYTES
    parts["probe_grams"] = members * num_classes * squares * FLOAT_BYTES
    parts["probe_eigh"] = 2 * members * num_classes * widest * widest * FLOAT_BYTES
    parts["probe_dual"] = members * (num_train**2 // num_classes + widest * num_train) * FLOAT_BYTES if dims else 0
    parts["probing"] = (parts["parameters"] + parts["batch_stats"] + parts["dataset"] + parts["member_labels"]
                        + parts["probe_activations"] + parts["probe_grams"] + parts["probe_eigh"]) if dims else 0
    parts["total"] = max(parts["training"], parts["probing"])
    return parts


def device_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Memory a device may use: the allocator's ``bytes_limit`` on accelerators, the host's available memory
    (``MemAvailable`` in ``/proc/meminfo``, else ``os.sysconf``) on CPU; None when neither can be read."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _budget(budget_bytes: int | None, device: jax.Device | None) -> int:
    budget = device_memory_bytes(device) if budget_bytes is None else budget_bytes
    if budget is None:
        raise ValueError(f"cannot read the memory of {device or jax.devices()[0]}; pass budget_bytes")
    return int(budget)


def max_members(model_name: str, image_shape: Sequence[int], num_classes: int, spec: TrainSpec, num_train: int,
                num_test: int, *, budget_bytes: int | None = None, device: jax.Device | None = None,
                num_devices: int = 1, limit: int = 2**20, **options) -> int:
    """Largest M (a multiple of ``num_devices``, at most ``limit``) whose :func:`estimate_memory` total fits
    ``budget_bytes`` per device (default: :func:`device_memory_bytes` of ``device``); 0 if not even one per
    device fits. ``options``: ``probe_layers_dims``, ``streaming``, ``eval_batch_size``."""
    budget = _budget(budget_bytes, device)

    def fits(per_device: int) -> bool:
        return estimate_memory(model_name, image_shape, num_classes, spec, per_device * num_devices, num_train,
                               num_test, num_devices=num_devices, **options)["total"] <= budget

    low, high = 0, 1  # fits(low) (or low = 0); the total grows with the members per device
    while high * num_devices <= limit and fits(high):
        low, high = high, 2 * high
    high = min(high, limit // num_devices + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low * num_devices


def check_fits(model_name: str, image_shape: Sequence[int], num_classes: int, spec: TrainSpec, num_members: int,
               num_train: int, num_test: int, *, budget_bytes: int | None = None, device: jax.Device | None = None,
               num_devices: int = 1, **options) -> dict[str, int]:
    """The :func:`estimate_memory` breakdown if it fits the budget, else ``ValueError`` like
    ``"M = 64 needs 31.0 GiB; 24 fit in 16.0 GiB"`` (per device when ``num_devices > 1``)."""
    budget = _budget(budget_bytes, device)
    parts = estimate_memory(model_name, image_shape, num_classes, spec, num_members, num_train, num_test,
                            num_devices=num_devices, **options)
    if parts["total"] > budget:
        fitting = max_members(model_name, image_shape, num_classes, spec, num_train, num_test, budget_bytes=budget,
                              num_devices=num_devices, **options)
        where = f" per device ({num_devices} devices)" if num_devices > 1 else ""
        raise ValueError(f"M = {num_members} needs {parts['total'] / GIB:.1f} GiB{where}; {fitting} fit in "
                         f"{budget / GIB:.1f} GiB{where} ({model_name}, {num_train} train samples); train fewer "
                         f"members per program, or shard them over more devices")
    return parts


__all__ = [
    "GIB",
    "MemberCosts",
    "check_fits",
    "device_memory_bytes",
    "estimate_memory",
    "max_members",
    "member_costs",
    "peak_live_bytes",
    "probe_layer_widths",
]
