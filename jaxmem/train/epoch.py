"""One jitted epoch for all members, and what it starts from (initial states, keys, the dataset on the device).

Inside an epoch (pure, per member, then vmapped over member chunks in one ``jit``, or over each device's members
with a mesh): a ``lax.scan`` over batches whose order comes from the spec and ``fold_in(member_key, epoch)``;
frozen members keep their state bit-identical; then an evaluation and the stop rule.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh

from jaxmem import sharding
from jaxmem.config import MemberSpec, TrainSpec, required_correct
from jaxmem.data import Dataset
from jaxmem.members import member_keys
from jaxmem.train.step import DeviceData, MemberState, evaluate, init_member, train_step

EVAL_BATCH_SIZE = 1000


def steps_per_epoch(spec: TrainSpec, num_train: int) -> int:
    """Batches per epoch; the last one is partial (padded and masked) when ``batch_size`` does not divide N."""
    return -(-num_train // spec.batch_size)


def epoch_keys(key: jax.Array, epoch: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(order_key, dropout_key)`` of one member's epoch: ``split(fold_in(train_key, epoch))``."""
    order_key, dropout_key = jax.random.split(jax.random.fold_in(key, epoch))
    return order_key, dropout_key


def batch_order(spec: TrainSpec, key: jax.Array, num_train: int) -> tuple[jax.Array, jax.Array]:
    """One epoch's batches of sample indices for one member.

    Args:
      key: this member's order key for the epoch (:func:`epoch_keys`); used only when ``spec.order == "shuffle"``.

    Returns:
      ``(indices [S, B] int32, weights [S, B] float32)``: ``arange(N)`` ("fixed", the paper preset) or a
      permutation of it ("shuffle"), padded with index 0 and weight 0 up to ``S·B``.
    """
    steps = steps_per_epoch(spec, num_train)
    if spec.order == "shuffle":
        order = jax.random.permutation(key, num_train).astype(jnp.int32)
    else:
        order = jnp.arange(num_train, dtype=jnp.int32)
    padding = steps * spec.batch_size - num_train
    indices = jnp.concatenate([order, jnp.zeros(padding, jnp.int32)]).reshape(steps, spec.batch_size)
    weights = (jnp.arange(steps * spec.batch_size) < num_train).astype(jnp.float32).reshape(steps, spec.batch_size)
    return indices, weights


def train_epoch(model: nn.Module, tx: optax.GradientTransformation, spec: TrainSpec, state: MemberState,
                labels: jax.Array, key: jax.Array, epoch: jax.Array, x_train: jax.Array, y_true: jax.Array
                ) -> tuple[MemberState, tuple[jax.Array, jax.Array]]:
    """One pass over the training set for one member (no freezing, no evaluation).

    Args:
      labels: ``[N]`` int32, the member's own labels.
      key: the member's training key; epoch ``e`` uses ``fold_in(key, e)``, so a resumed run repeats it exactly.
      epoch: ``[]`` int32, 1 for the first trained epoch.
      x_train: ``[N, H, W, C]`` float32, shared by all members.
      y_true: ``[N]`` int32 true labels, shared.

    Returns:
      ``(state, (running_correct, running_correct_true))``: the counts of the steps' own train-mode outputs that
      match the member's labels and the true labels, accumulated over the epoch as the weights change.
    """
    order_key, dropout_key = epoch_keys(key, epoch)
    indices, weights = batch_order(spec, order_key, labels.shape[0])

    def body(carry, batch):
        state, correct, correct_true = carry
        step, batch_indices, batch_weights = batch
        own = labels[batch_indices]
        state, _, logits = train_step(model, tx, state, x_train[batch_indices], own, batch_weights,
                                      jax.random.fold_in(dropout_key, step))
        predicted = jnp.argmax(logits, axis=-1)
        real = batch_weights > 0
        correct += jnp.sum(real & (predicted == own), dtype=jnp.int32)
        correct_true += jnp.sum(real & (predicted == y_true[batch_indices]), dtype=jnp.int32)
        return (state, correct, correct_true), None

    zero = jnp.zeros((), jnp.int32)
    (state, correct, correct_true), _ = jax.lax.scan(body, (state, zero, zero),
                                                     (jnp.arange(indices.shape[0]), indices, weights))
    return state, (correct, correct_true)


def make_member_epoch(model: nn.Module, tx: optax.GradientTransformation, spec: TrainSpec, num_train: int, *,
                      eval_batch_size: int = EVAL_BATCH_SIZE, stop_at_target: bool = True) -> Callable:
    """The un-transformed epoch of ONE member: train (unless frozen), evaluate, apply the stop rule.

    Returns ``epoch(state, labels [N], key, epoch [], data) -> (state, EvalMetrics)``. A member that enters the
    epoch inactive leaves it bit-identical (its running counts are 0). After the evaluation an active member whose
    train accuracy vs its own labels reaches ``spec.target_train_accuracy`` becomes inactive with
    ``stop_epoch = epoch``; the accuracy is the epoch's running one (``spec.stop_on == "running"``, the authors'
    PyTorch loops) or the post-epoch full pass (``"eval"``). With ``stop_at_target=False`` there is no stop rule:
    members stay active (fine-tuning and continued training stop by their own rules, from the host).

    Note: a short last batch is padded with sample 0 at weight 0. The loss and gradients ignore it exactly, but
    BatchNorm (ResNet) batch statistics of that one batch include the padding rows.
    """
    required = required_correct(spec.target_train_accuracy, num_train)

    def epoch_fn(state: MemberState, labels: jax.Array, key: jax.Array, epoch: jax.Array, data: DeviceData):
        if data.x_train.shape[0] != num_train:
            raise ValueError(f"epoch function built for {num_train} train samples, got {data.x_train.shape[0]}")
        # Unbatched, a frozen member skips training; under vmap the cond becomes a select (both computed).
        zero = jnp.zeros((), jnp.int32)
        state, running = jax.lax.cond(
            state.active, lambda s: train_epoch(model, tx, spec, s, labels, key, epoch, data.x_train, data.y_train),
            lambda s: (s, (zero, zero)), state)
        metrics = evaluate(model, state, labels, data, batch_size=eval_batch_size, running=running)
        if not stop_at_target:
            return state, metrics
        reached = metrics.running_correct if spec.stop_on == "running" else metrics.train_correct
        stopping = state.active & (reached >= required)
        state = state._replace(active=state.active & ~stopping,
                               stop_epoch=jnp.where(stopping, epoch, state.stop_epoch))
        return state, metrics

    return epoch_fn


def default_member_chunk(num_members: int, backend: str | None = None) -> int:
    """Members vmapped together: all of them on an accelerator, one at a time (member-major) on CPU.

    On CPU, a small-batch step is memory-bound and one member's weights, gradients and optimiser state stay in
    the cache for a whole epoch; vmapping M members streams all of them every step, and XLA:CPU's batched
    weight-gradient dots also run slower than M plain ones. Measured on 2 cores (MLP-MNIST, M = 8,
    ``benchmarks/train_bench.py``): a full vmap ran at 0.6× the throughput of M sequential runs, member-major
    chunks of 1 at 1.0×. On a GPU the vmap fills the device that a batch of 32 leaves idle.
    """
    backend = backend or jax.default_backend()
    return 1 if backend == "cpu" else num_members


def epoch_compiler_options(backend: str | None = None) -> dict:
    """XLA options for the epoch program: on CPU, region-based copy insertion.

    Without it XLA:CPU copies every weight matrix once per step inside the ``scan`` (the forward pass reads the
    carried weights that the update then overwrites); with it the update is in place, ~15 % faster for the
    MLP-MNIST step on 2 cores. Other backends get no options.
    """
    backend = backend or jax.default_backend()
    return {"xla_cpu_copy_insertion_use_region_analysis": True} if backend == "cpu" else {}


def make_epoch_fn(model: nn.Module, tx: optax.GradientTransformation, spec: TrainSpec, num_train: int, *,
                  eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None, mesh: Mesh | None = None,
                  stop_at_target: bool = True) -> Callable:
    """``epoch_fn(state [M], labels [M, N], keys [M], epoch [], data) -> (state [M], EvalMetrics [M])``, jitted.

    One program for all members: state, labels and keys carry the member axis, the epoch number and the dataset
    are shared. Members go through :func:`make_member_epoch` in consecutive chunks of ``member_chunk``, each
    chunk under ``vmap`` (a chunk of one runs unbatched, so a frozen member skips its training). ``None``:
    :func:`default_member_chunk` (all members at once on accelerators, one at a time on CPU). Results do not
    depend on the chunking beyond float rounding. The input state is donated.

    With a ``mesh`` (:func:`jaxmem.sharding.member_mesh`, possibly spanning several processes) each device runs
    ``vmap`` of the member epoch over its own ``M / n`` members under :func:`jax.shard_map`: the compiled program
    is the single-device epoch on a member slice, with no collectives (plain ``jit`` with shardings would leave
    it to the SPMD partitioner to carry the member split through the scan, the gathers and the frozen-member
    select). State, labels and keys are split over ``"members"``, ``epoch`` and ``data`` replicated; outputs stay
    split. ``member_chunk`` must then be None. ``stop_at_target``: see :func:`make_member_epoch`.
    """
    if member_chunk is not None and member_chunk < 1:
        raise ValueError(f"member_chunk must be >= 1 or None, got {member_chunk}")
    member_epoch = make_member_epoch(model, tx, spec, num_train, eval_batch_size=eval_batch_size,
                                     stop_at_target=stop_at_target)
    if mesh is not None:
        if member_chunk is not None:
            raise ValueError(f"member_chunk={member_chunk} is for the single-device epoch; with a mesh each device "
                             f"vmaps all of its members, pass member_chunk=None")
        return _sharded_epoch_fn(member_epoch, mesh)
    batched_epoch = jax.vmap(member_epoch, in_axes=(0, 0, 0, None, None))

    def epoch_fn(state: MemberState, labels: jax.Array, keys: jax.Array, epoch: jax.Array, data: DeviceData):
        num_members = labels.shape[0]
        chunk = min(member_chunk or default_member_chunk(num_members), num_members)
        if chunk == num_members and chunk > 1:  # a chunk of one runs unbatched: vmap would batch its dots
            return batched_epoch(state, labels, keys, epoch, data)
        outputs = []
        for start in range(0, num_members, chunk):
            part = lambda leaf: leaf[start:start + chunk]
            if chunk == 1:
                one = member_epoch(jax.tree.map(lambda leaf: leaf[start], state), labels[start], keys[start],
                                   epoch, data)
                outputs.append(jax.tree.map(lambda leaf: leaf[None], one))
            else:
                outputs.append(batched_epoch(jax.tree.map(part, state), part(labels), part(keys), epoch, data))
        return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *outputs)

    return jax.jit(epoch_fn, donate_argnums=0, compiler_options=epoch_compiler_options())


def _sharded_epoch_fn(member_epoch: Callable, mesh: Mesh) -> Callable:
    local_epoch = jax.vmap(member_epoch, in_axes=(0, 0, 0, None, None))
    split, whole = sharding.member_sharding(mesh), sharding.replicated_sharding(mesh)
    return jax.jit(sharding.on_members(local_epoch, mesh, 3, 2), donate_argnums=0,
                   in_shardings=(split, split, split, whole, whole), out_shardings=split,
                   compiler_options=epoch_compiler_options(mesh.devices.flat[0].platform))


def make_eval_fn(model: nn.Module, *, eval_batch_size: int = EVAL_BATCH_SIZE) -> Callable:
    """``eval_fn(state [M], labels [M, N], data) -> EvalMetrics [M]`` (used for epoch 0, the initialisation)."""
    return jax.jit(jax.vmap(partial(evaluate, model, batch_size=eval_batch_size), in_axes=(0, 0, None)))


def init_members(model: nn.Module, tx: optax.GradientTransformation, keys: jax.Array,
                 sample_x: jax.Array) -> MemberState:
    """Stacked fresh states ``[M]`` from typed init keys ``[M]``; ``sample_x [B, H, W, C]`` fixes the shapes."""
    return jax.jit(jax.vmap(partial(init_member, model, tx), in_axes=(0, None)))(keys, sample_x)


def split_member_keys(members: Sequence[MemberSpec]) -> tuple[jax.Array, jax.Array]:
    """``(init_keys [M], train_keys [M])``: ``split(jax.random.key(member.seed))`` per member."""
    pairs = jax.vmap(jax.random.split)(member_keys(members))
    return pairs[:, 0], pairs[:, 1]


def device_data(dataset: Dataset) -> DeviceData:
    """The normalised dataset, put on the default device once."""
    return jax.device_put(DeviceData(
        x_train=dataset.inputs("train"),
        y_train=np.asarray(dataset.y_train, np.int32),
        x_test=dataset.inputs("test"),
        y_test=np.asarray(dataset.y_test, np.int32),
    ))

