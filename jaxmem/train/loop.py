"""The many-member training engine: one jitted epoch for all members, and the loop around it.

Inside an epoch (pure, per member, then vmapped over member chunks in one ``jit``, or over each device's members
with a mesh): a ``lax.scan`` over batches whose order comes from the spec and ``fold_in(member_key, epoch)``;
frozen members keep their state bit-identical; then an evaluation and the stop rule. Outside:
:func:`train_members`, a short Python loop over epochs with no file I/O that fetches the metrics once per epoch
and hands them to a callback; :func:`fit_members` composes it with a :class:`jaxmem.train.rundir.RunDir`
(config check, tidy rows, Orbax checkpoints, resume) and a progress display.
"""
from __future__ import annotations

import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxmem import faults, results, sharding
from jaxmem.config import MemberSpec, TrainSpec, required_correct
from jaxmem.data import Dataset, member_train_labels, normalize
from jaxmem.manifest import holding
from jaxmem.members import check_members, member_keys
from jaxmem.models import get_model
from jaxmem.train.rundir import (CHECKPOINT_DIR, CONFIG_FILE, EPOCHS_DIR, FINAL_DIR, MEMBERS_FILE, RESULTS_FILE,
                                 RunDir, checkpoint_meta, history_from_meta, load_member_params, read_run_config,
                                 run_config, stack_metrics)
from jaxmem.train.step import (DeviceData, EvalMetrics, MemberState, evaluate, init_member, make_optimizer,
                               train_step)

EVAL_BATCH_SIZE = 1000

class TrainResult(NamedTuple):
    """What :func:`fit_members` returns."""

    state: MemberState  # final stacked state, leaves [M, ...]
    metrics: EvalMetrics  # fields [E + 1, M]: row e = after epoch e (0 = initialisation); frozen members repeat
    stop_epoch: np.ndarray  # [M] int32: epoch the member reached its target; -1 if it never did
    out_dir: Path
    members: list[MemberSpec]
    num_train: int
    num_test: int


# ----------------------------------------------------------------------------------------------------------
# One epoch (pure, per member)
# ----------------------------------------------------------------------------------------------------------


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
        x_train=normalize(dataset.name, dataset.x_train),
        y_train=np.asarray(dataset.y_train, np.int32),
        x_test=normalize(dataset.name, dataset.x_test),
        y_test=np.asarray(dataset.y_test, np.int32),
    ))


# ----------------------------------------------------------------------------------------------------------
# Epoch schedules, config and rows (host)
# ----------------------------------------------------------------------------------------------------------


def paper2_epoch_schedule(last_epoch: int = 500, *, dense_until: int = 20, sparse_step: int = 5) -> tuple[int, ...]:
    """Epochs whose parameters paper 2 studies, as the authors' code lists them: 0 (the initialisation), 1, then
    every even epoch up to ``dense_until``, then every ``sparse_step``-th epoch up to ``last_epoch``.

    Defaults: 0, 1, 2, 4, …, 18, 20, 25, 30, …, 500; Tiny-ImageNet uses ``sparse_step=10`` (…, 20, 30, 40, …).
    """
    if last_epoch < 0 or dense_until < 0 or sparse_step < 1:
        raise ValueError(f"need last_epoch, dense_until >= 0 and sparse_step >= 1, got last_epoch={last_epoch}, "
                         f"dense_until={dense_until}, sparse_step={sparse_step}")
    dense = range(2, dense_until + 1, 2)
    sparse = range((dense_until // sparse_step + 1) * sparse_step, last_epoch + 1, sparse_step)
    return tuple(e for e in (0, 1, *dense, *sparse) if e <= last_epoch)


def model_rows(members: Sequence[MemberSpec], epoch: int, metrics: EvalMetrics, trained: np.ndarray,
               num_train: int, num_test: int) -> list[dict]:
    """Tidy rows (``probe="model"``, ``layer="output"``) for the members trained in ``epoch``: the post-epoch full
    pass (``split`` "train" and "test") and, after epoch 0, the epoch's running counts (``split="train_running"``).

    Args:
      metrics: host arrays ``[M]``.
      trained: ``[M]`` bool, members that were active during the epoch (all of them at epoch 0).
    """
    rows = []
    for m in map(int, np.flatnonzero(trained)):
        common = dict(epoch=epoch, probe="model", layer="output", subspace_labels="none")
        loss = float(metrics.train_loss[m])
        rows += [
            results.accuracy_row(m, members[m], **common, split="train", scored_against="corrupted",
                                 n_correct=metrics.train_correct[m], n_seen=num_train, loss=loss),
            results.accuracy_row(m, members[m], **common, split="train", scored_against="true",
                                 n_correct=metrics.train_correct_true[m], n_seen=num_train, loss=loss),
            results.accuracy_row(m, members[m], **common, split="test", scored_against="true",
                                 n_correct=metrics.test_correct[m], n_seen=num_test),
        ]
        if epoch > 0:  # the running counts of the epoch's own steps (none at the initialisation)
            rows += [results.accuracy_row(m, members[m], **common, split="train_running", scored_against=against,
                                          n_correct=correct[m], n_seen=num_train)
                     for against, correct in (("corrupted", metrics.running_correct),
                                              ("true", metrics.running_correct_true))]
    return rows


def _progress_postfix(metrics: EvalMetrics, trained: np.ndarray, active: np.ndarray, num_train: int,
                      num_test: int, stop_on: str) -> dict:
    """The accuracy the stop rule watches (min and mean over the trained members), the other one's mean, the test
    accuracy and how many members still train: with a fixed order the two can differ by tens of points."""
    accuracies = {"running": metrics.running_correct[trained] / num_train,
                  "full pass": metrics.train_correct[trained] / num_train}
    watched = "running" if stop_on == "running" else "full pass"
    other = "full pass" if watched == "running" else "running"
    return {f"{watched} min": f"{accuracies[watched].min():.4f}",
            f"{watched} mean": f"{accuracies[watched].mean():.4f}", f"{other} mean": f"{accuracies[other].mean():.4f}",
            "test": f"{(metrics.test_correct[trained] / num_test).mean():.4f}", "active": int(active.sum())}


class Progress:
    """Progress over epochs: a tqdm bar on a terminal; elsewhere (a log file, a pipe) one plain line every
    ``ceil(total / lines)`` epochs and at the end, so a long run writes a few dozen lines, not thousands.

    ``enabled=False`` shows nothing; in a multi-process run only process 0 shows anything.
    """

    def __init__(self, total: int, initial: int, desc: str, *, enabled: bool = True, lines: int = 20, stream=None):
        self._stream = stream or sys.stderr
        self._enabled = enabled and jax.process_index() == 0
        self._terminal = self._enabled and hasattr(self._stream, "isatty") and self._stream.isatty()
        self._every = max(1, math.ceil(max(total - initial, 1) / lines))
        self._desc, self._total, self._epoch = desc, total, initial
        self._bar = tqdm(total=total, initial=initial, unit="epoch", desc=desc, file=self._stream) \
            if self._terminal else None
        self._postfix: dict = {}

    def update(self, epoch: int, postfix: dict) -> None:
        self._epoch, self._postfix = epoch, postfix
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(postfix)
        elif self._enabled and epoch % self._every == 0:
            self._line()

    def _line(self) -> None:
        fields = ", ".join(f"{key} {value}" for key, value in self._postfix.items())
        print(f"{self._desc}: epoch {self._epoch}/{self._total}" + (f" ({fields})" if fields else ""),
              file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._enabled and self._postfix and self._epoch % self._every:
            self._line()


class EpochEnd(NamedTuple):
    """What :func:`train_members` hands its ``on_epoch`` callback after each epoch."""

    epoch: int
    state: MemberState  # [M], on the device(s); the next epoch donates it, so copy what must outlive it
    metrics: EvalMetrics  # [M] host arrays
    trained: np.ndarray  # [M] bool: members active during the epoch
    active: np.ndarray  # [M] bool: members still active after it (before the callback's own stops)


# on_epoch(end) -> [M] bool of members to freeze from the next epoch on, or None
EpochCallback = Callable[[EpochEnd], "np.ndarray | None"]


def train_members(model: nn.Module, tx: optax.GradientTransformation, spec: TrainSpec, state: MemberState,
                  labels: jax.Array, keys: jax.Array, data: DeviceData, *, max_epochs: int | None = None,
                  start_epoch: int = 0, stop_at_target: bool = True, on_epoch: EpochCallback | None = None,
                  eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None,
                  mesh: Mesh | None = None) -> tuple[MemberState, EvalMetrics]:
    """Train every member from ``start_epoch`` until none is active or ``max_epochs`` is reached. No file I/O.

    Epoch ``e`` (from ``start_epoch + 1``) runs all members in one jitted program (:func:`make_epoch_fn`), fetches
    the metrics to the host once, and calls ``on_epoch(EpochEnd(...))``; the members it returns
    (``[M]`` bool) are frozen from the next epoch on: this is how a host-side rule such as early stopping on a
    held-out split stops members. The spec's memorisation rule (``spec.target_train_accuracy`` on
    ``spec.stop_on``) freezes members inside the epoch unless ``stop_at_target=False``.

    Args:
      state: stacked states ``[M]`` (donated: do not reuse the argument); with a mesh, split over it.
      labels: ``[M, N]`` int32 training labels per member; keys: ``[M]`` typed training keys.
      data: the shared dataset (:func:`device_data`; replicated over the mesh when there is one).
      max_epochs: last epoch, default ``spec.max_epochs``.
      member_chunk, mesh, eval_batch_size: see :func:`make_epoch_fn`.

    Returns:
      ``(state [M], metrics)``: metric fields ``[E, M]`` host arrays, row ``i`` = epoch ``start_epoch + 1 + i``
      (frozen members repeat their values).
    """
    max_epochs = spec.max_epochs if max_epochs is None else max_epochs
    epoch_fn = make_epoch_fn(model, tx, spec, int(data.x_train.shape[0]), eval_batch_size=eval_batch_size,
                             member_chunk=member_chunk, mesh=mesh, stop_at_target=stop_at_target)
    active = np.asarray(sharding.to_host(state.active))
    history, epoch = [], start_epoch
    while epoch < max_epochs and active.any():
        epoch += 1
        trained = active
        state, metrics = epoch_fn(state, labels, keys, jnp.asarray(epoch, jnp.int32), data)
        metrics, active = sharding.to_host((metrics, state.active))
        history.append(metrics)
        stop = on_epoch(EpochEnd(epoch, state, metrics, trained, active)) if on_epoch is not None else None
        if stop is not None and np.any(stop):
            active = active & ~np.asarray(stop, bool)
            state = state._replace(active=_like(state.active, active))
    num_members = int(labels.shape[0])
    if not history:
        empty = np.zeros((0, num_members), np.int32)
        return state, EvalMetrics(**{name: empty.astype(np.float32) if name == "train_loss" else empty
                                     for name in EvalMetrics._fields})
    return state, stack_metrics(history)


def _like(reference: jax.Array, host: np.ndarray) -> jax.Array:
    """``host`` placed as ``reference`` is (same sharding, so the jitted epoch sees the same input layout)."""
    if isinstance(reference, jax.Array) and not reference.is_fully_addressable:
        return jax.make_array_from_callback(host.shape, reference.sharding, lambda index: host[index])
    return jax.device_put(host, reference.sharding)


def _agreed_seconds_since(start: float) -> float:
    """Wall time since ``start``; process 0's value in every process, so that all take a checkpoint together."""
    elapsed = np.float64(time.monotonic() - start)
    if jax.process_count() > 1:
        elapsed = multihost_utils.broadcast_one_to_all(elapsed)
    return float(elapsed)


def _check_fit_args(max_epochs: int, checkpoint_epochs: Iterable[int], checkpoint_every: int | None
                    ) -> frozenset[int]:
    if max_epochs < 0:
        raise ValueError(f"max_epochs must be >= 0, got {max_epochs}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    epochs = list(checkpoint_epochs)
    if any(not isinstance(e, (int, np.integer)) or e < 0 for e in epochs):
        raise ValueError(f"checkpoint_epochs must be non-negative integers, got {epochs}")
    return frozenset(int(e) for e in epochs)


@holding()
def fit_members(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                max_epochs: int | None = None, checkpoint_epochs: Iterable[int] = (), resume: bool = True,
                progress: bool = True, checkpoint_every: int | None = None,
                checkpoint_seconds: float | None = 60.0,
                eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None,
                mesh: Mesh | None = None) -> TrainResult:
    """Train all members of one (dataset, model) together until each memorises its labels, in a run
    directory: :func:`train_members` with a :class:`~jaxmem.train.rundir.RunDir` around it.

    Every member trains until its train accuracy vs its own labels reaches ``spec.target_train_accuracy``
    (then it is frozen) or until ``max_epochs``; the loop ends when no member is active.

    Args:
      dataset: host dataset; members' labels come from :func:`jaxmem.data.member_train_labels`.
      members: one dataset and model (:func:`jaxmem.members.member_grid`).
      spec: the shared training settings.
      out_dir: run directory (:mod:`jaxmem.train.rundir`); created if needed.
      max_epochs: epoch cap, default ``spec.max_epochs``.
      checkpoint_epochs: epochs whose parameters are kept under ``out_dir/epochs/<epoch>`` (0 = initialisation),
        e.g. :func:`paper2_epoch_schedule`.
      resume: continue from ``out_dir``'s latest checkpoint; ``False`` deletes this run's previous outputs.
      progress: show progress (a bar on a terminal, a line every few epochs otherwise: :class:`Progress`).
      checkpoint_every: save the full state every this many epochs (and always at the end) ...
      checkpoint_seconds: ... and whenever this much wall time has passed since the last save, so that an
        interruption loses at most about a minute of work while fast epochs are not slowed by saving.
        Where checkpoints fall never changes the results: a resumed run repeats the same keys and batches.
      eval_batch_size: batch of the per-epoch evaluation (memory only).
      member_chunk: members vmapped together inside the one epoch program (:func:`make_epoch_fn`); ``None``
        picks :func:`default_member_chunk` for the backend.
      mesh: a :func:`jaxmem.sharding.member_mesh` to split the members over its devices (each device vmaps its
        own ``M / n`` members; ``M`` must be a multiple of the device count; ``member_chunk`` must be None). The
        mesh may span several processes (:func:`jaxmem.sharding.initialize_distributed`): every process calls
        this with the same arguments, process 0 alone writes the files, and every process gets the results.
    """
    if mesh is not None and member_chunk is not None:
        raise ValueError(f"member_chunk={member_chunk} is for the single-device epoch; with a mesh each device "
                         f"vmaps all of its members, pass member_chunk=None")
    members = check_members(members)
    max_epochs = spec.max_epochs if max_epochs is None else max_epochs
    checkpoint_epochs = _check_fit_args(max_epochs, checkpoint_epochs, checkpoint_every)
    num_train, num_test = int(dataset.y_train.shape[0]), int(dataset.y_test.shape[0])
    num_members = len(members)
    config = run_config(spec, members, dataset)
    run_dir = RunDir(out_dir)

    # Decision order at startup:
    # 1. resume=False: delete this run's previous outputs, then start fresh (4).
    # 2. out_dir already holds a run: its config.json must describe this one (else ValueError, never a mix);
    #    a results.csv without config.json is not ours to overwrite (ValueError).
    # 3. a checkpoint exists: restore state, epoch, results-row count and metric history from the newest that
    #    restores and whose rows are all in results.csv (one line for each passed over; none restoring:
    #    ValueError); rows written after it are dropped when training continues (recomputed identically).
    # 4. otherwise start at epoch 0: drop rows of an attempt killed before its first checkpoint, write
    #    config.json and members.csv, evaluate and record the initialisation.
    run_dir.prepare(config, resume=resume)

    model = get_model(members[0].model, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    tx = make_optimizer(spec)
    data = device_data(dataset)
    labels = member_train_labels(dataset, members)  # [M, N]
    init_keys, train_keys = split_member_keys(members)
    if mesh is None:
        labels = jax.device_put(labels)
        state = init_members(model, tx, init_keys, data.x_train[:1])
    else:
        state, labels, train_keys, data = sharding.place_run(model, tx, mesh, labels, init_keys, train_keys, data)
    restored = run_dir.restore_latest(state)
    restored_epoch = None
    if restored is not None:
        state, meta = restored
        epoch, rows_written, history = meta["epoch"], meta["results_rows"], history_from_meta(meta)
        restored_epoch = epoch
    else:
        epoch = 0
        history = [sharding.to_host(make_eval_fn(model, eval_batch_size=eval_batch_size)(state, labels, data))]
        rows_written = run_dir.start(config, members, model_rows(members, 0, history[0], np.ones(num_members, bool),
                                                                 num_train, num_test))
        if 0 in checkpoint_epochs:
            run_dir.save_epoch_params(0, state)

    if epoch < max_epochs and np.asarray(sharding.to_host(state.active)).any():
        run_dir.truncate_rows(rows_written)
    saved_epoch, last_save = restored_epoch, time.monotonic()
    bar = Progress(max_epochs, epoch, f"{members[0].dataset}×{members[0].model} ×{num_members}", enabled=progress)

    def record(end: EpochEnd) -> None:
        nonlocal rows_written, saved_epoch, last_save
        history.append(end.metrics)
        rows_written += run_dir.append_rows(model_rows(members, end.epoch, end.metrics, end.trained, num_train,
                                                       num_test))
        if end.epoch in checkpoint_epochs:
            run_dir.save_epoch_params(end.epoch, end.state)
        faults.maybe_fail("epoch")
        if (checkpoint_every and end.epoch % checkpoint_every == 0) or (
                checkpoint_seconds is not None and _agreed_seconds_since(last_save) >= checkpoint_seconds):
            run_dir.save(end.epoch, end.state, checkpoint_meta(end.epoch, rows_written, history))
            saved_epoch, last_save = end.epoch, time.monotonic()
        bar.update(end.epoch, _progress_postfix(end.metrics, end.trained, end.active, num_train, num_test,
                                                 spec.stop_on))

    state, trained_metrics = train_members(model, tx, spec, state, labels, train_keys, data, max_epochs=max_epochs,
                                           start_epoch=epoch, on_epoch=record, eval_batch_size=eval_batch_size,
                                           member_chunk=member_chunk, mesh=mesh)
    bar.close()
    epoch += int(trained_metrics.train_loss.shape[0])
    if saved_epoch != epoch:
        run_dir.save(epoch, state, checkpoint_meta(epoch, rows_written, history))
    run_dir.save_final_params(state)
    run_dir.close()
    return TrainResult(
        state=state,
        metrics=stack_metrics(history),
        stop_epoch=np.asarray(sharding.to_host(state.stop_epoch)),
        out_dir=run_dir.path,
        members=members,
        num_train=num_train,
        num_test=num_test,
    )
