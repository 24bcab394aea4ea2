"""The many-member training engine (SPEC §1.3, §3): one jitted epoch for all members, and the host loop around it.

Inside an epoch (pure, per member, then vmapped over member chunks in one ``jit``): a ``lax.scan`` over batches
whose order comes from the spec and ``fold_in(member_key, epoch)``; frozen members keep their state bit-identical;
then an evaluation and the stop rule. Outside (:func:`fit_members`): a short Python loop over epochs that
fetches the metrics once per epoch, appends tidy rows, checkpoints with Orbax, shows progress, and resumes.

A run directory holds ``config.json`` and ``members.csv`` (written at the start), ``results.csv`` (model rows:
epoch 0 = initialisation for every member, then each epoch a member trained in; none after its stop epoch),
``checkpoints/<epoch>`` (the latest full stacked state), ``epochs/<epoch>`` (parameters at requested epochs,
kept) and ``final`` (last parameters).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import linen as nn
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxmem import results
from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset, member_train_labels, normalize
from jaxmem.members import check_members, member_keys
from jaxmem.models import get_model
from jaxmem.train.step import (DeviceData, EvalMetrics, MemberState, evaluate, init_member, make_optimizer,
                               train_step)

EVAL_BATCH_SIZE = 1000
CONFIG_FILE = "config.json"
MEMBERS_FILE = "members.csv"
RESULTS_FILE = "results.csv"
CHECKPOINT_DIR = "checkpoints"
EPOCHS_DIR = "epochs"
FINAL_DIR = "final"
_RUN_OUTPUTS = (CONFIG_FILE, MEMBERS_FILE, RESULTS_FILE, CHECKPOINT_DIR, EPOCHS_DIR, FINAL_DIR)
# A resumed run may extend the epoch cap; every other TrainSpec field must match the original run.
_RESUMABLE_CHANGES = ("max_epochs",)


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


def required_correct(target_train_accuracy: float, num_train: int) -> int:
    """Smallest number of correct train samples whose accuracy is ≥ the target (rounded so 0.999·60000 = 59940)."""
    return math.ceil(round(target_train_accuracy * num_train, 6))


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
                      eval_batch_size: int = EVAL_BATCH_SIZE) -> Callable:
    """The un-transformed epoch of ONE member: train (unless frozen), evaluate, apply the stop rule.

    Returns ``epoch(state, labels [N], key, epoch [], data) -> (state, EvalMetrics)``. A member that enters the
    epoch inactive leaves it bit-identical (its running counts are 0). After the evaluation an active member whose
    train accuracy vs its own labels reaches ``spec.target_train_accuracy`` becomes inactive with
    ``stop_epoch = epoch``; the accuracy is the epoch's running one (``spec.stop_on == "running"``, the authors'
    PyTorch loops) or the post-epoch full pass (``"eval"``).

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
                  eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None) -> Callable:
    """``epoch_fn(state [M], labels [M, N], keys [M], epoch [], data) -> (state [M], EvalMetrics [M])``, jitted.

    One program for all members: state, labels and keys carry the member axis, the epoch number and the dataset
    are shared. Members go through :func:`make_member_epoch` in consecutive chunks of ``member_chunk``, each
    chunk under ``vmap`` (a chunk of one runs unbatched, so a frozen member skips its training). ``None``:
    :func:`default_member_chunk` (all members at once on accelerators, one at a time on CPU). Results do not
    depend on the chunking beyond float rounding. The input state is donated.
    """
    if member_chunk is not None and member_chunk < 1:
        raise ValueError(f"member_chunk must be >= 1 or None, got {member_chunk}")
    member_epoch = make_member_epoch(model, tx, spec, num_train, eval_batch_size=eval_batch_size)
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


def run_config(spec: TrainSpec, members: Sequence[MemberSpec], dataset: Dataset) -> dict:
    """``config.json`` content: the TrainSpec, the members, and a fingerprint of the training data
    (sizes and a hash of the true train labels, which catches e.g. tfds order vs the original files)."""
    return {
        "train": dataclasses.asdict(spec),
        "members": [dataclasses.asdict(m) for m in members],
        "data": {
            "num_train": int(dataset.y_train.shape[0]),
            "num_test": int(dataset.y_test.shape[0]),
            "train_labels_sha1": hashlib.sha1(np.asarray(dataset.y_train, np.int32).tobytes()).hexdigest(),
        },
    }


def read_run_config(out_dir: str | Path) -> tuple[TrainSpec, list[MemberSpec]]:
    """The TrainSpec and members recorded in a run directory's ``config.json``."""
    config = json.loads((Path(out_dir) / CONFIG_FILE).read_text())
    return TrainSpec(**config["train"]), [MemberSpec(**m) for m in config["members"]]


def _comparable(config: dict) -> dict:
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in _RESUMABLE_CHANGES}}


def _check_same_run(out_dir: Path, config: dict) -> None:
    saved = json.loads((out_dir / CONFIG_FILE).read_text())
    current = json.loads(json.dumps(config))
    if _comparable(saved) != _comparable(current):
        differing = sorted(k for k in current if _comparable(saved).get(k) != _comparable(current)[k])
        raise ValueError(f"{out_dir} holds a different run (its config.json differs in {differing}); resume only "
                         f"with the same TrainSpec (max_epochs may change), members and data, or use another "
                         f"out_dir, or pass resume=False to start over")


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


def _stack(history: Sequence[EvalMetrics]) -> EvalMetrics:
    return jax.tree.map(lambda *epochs: np.stack(epochs), *history)


def _checkpoint_meta(epoch: int, rows_written: int, history: Sequence[EvalMetrics]) -> dict:
    """What a checkpoint stores beside the state: the epoch, the results rows written, the metric history."""
    return {"epoch": epoch, "results_rows": rows_written,
            "history": {name: column.tolist() for name, column in _stack(history)._asdict().items()}}


def _history_from_meta(meta: dict) -> list[EvalMetrics]:
    dtypes = {"train_loss": np.float32}
    stacked = EvalMetrics(**{name: np.asarray(column, dtypes.get(name, np.int32))
                             for name, column in meta["history"].items()})
    return [jax.tree.map(lambda column: column[e], stacked) for e in range(stacked.train_loss.shape[0])]


def _progress_postfix(metrics: EvalMetrics, trained: np.ndarray, active: np.ndarray, num_train: int,
                      num_test: int) -> dict:
    train_accuracy = metrics.train_correct[trained] / num_train
    return {"train min": f"{train_accuracy.min():.4f}", "train mean": f"{train_accuracy.mean():.4f}",
            "test": f"{(metrics.test_correct[trained] / num_test).mean():.4f}", "active": int(active.sum())}


# ----------------------------------------------------------------------------------------------------------
# Checkpoints (Orbax)
# ----------------------------------------------------------------------------------------------------------


def _member_params(state: MemberState) -> dict:
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats})


class _Checkpoints:
    """The Orbax side of a run directory. States are copied to the host before an (async) save, so the
    donated device buffers can be reused by the next epoch while the files are written."""

    def __init__(self, out_dir: Path):
        out_dir = out_dir.absolute()  # Orbax rejects relative paths (at the first save, in a background thread)
        self._out_dir = out_dir
        self._manager = ocp.CheckpointManager(
            out_dir / CHECKPOINT_DIR, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
        self._params = ocp.StandardCheckpointer()

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, epoch: int, target: MemberState) -> tuple[MemberState, dict]:
        restored = self._manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

    def save(self, epoch: int, state: MemberState, meta: dict) -> None:
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave(meta)))

    def save_epoch_params(self, epoch: int, state: MemberState) -> None:
        path = (self._out_dir / EPOCHS_DIR / str(epoch)).absolute()
        if not path.exists():  # written before an interruption: same epoch, same (deterministic) parameters
            self._params.save(path, _member_params(state))

    def save_final_params(self, state: MemberState) -> None:
        self._params.save((self._out_dir / FINAL_DIR).absolute(), _member_params(state), force=True)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._params.wait_until_finished()
        self._manager.close()
        self._params.close()


def load_member_params(out_dir: str | Path, epoch: int | str = "final"):
    """Stacked parameters of every member of a run, at ``epoch`` (an int from ``checkpoint_epochs``) or ``"final"``.

    Returns:
      ``(params, batch_stats)``, leaves with a leading member axis ``[M, ...]``; ``batch_stats`` is ``{}`` for
      models without BatchNorm.
    """
    out_dir = Path(out_dir)
    path = out_dir / FINAL_DIR if epoch == "final" else out_dir / EPOCHS_DIR / str(int(epoch))
    if not path.exists():
        saved = sorted(int(p.name) for p in (out_dir / EPOCHS_DIR).glob("*") if p.name.isdigit())
        raise FileNotFoundError(f"no parameters for epoch {epoch!r} in {out_dir}; saved epochs: {saved}, "
                                f"and 'final' {'exists' if (out_dir / FINAL_DIR).exists() else 'is missing'}")
    checkpointer = ocp.StandardCheckpointer()
    restored = checkpointer.restore(path.absolute())
    checkpointer.close()
    return restored["params"], restored.get("batch_stats", {})


# ----------------------------------------------------------------------------------------------------------
# The host loop
# ----------------------------------------------------------------------------------------------------------


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


def _start_fresh(out_dir: Path) -> None:
    for name in _RUN_OUTPUTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def fit_members(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                max_epochs: int | None = None, checkpoint_epochs: Iterable[int] = (), resume: bool = True,
                progress: bool = True, checkpoint_every: int | None = None,
                checkpoint_seconds: float | None = 60.0,
                eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None,
                mesh: Mesh | None = None) -> TrainResult:
    """Train all members of one (dataset, model) together until each memorises its labels (SPEC §3).

    Every member trains until its train accuracy vs its own labels reaches ``spec.target_train_accuracy``
    (then it is frozen) or until ``max_epochs``; the loop ends when no member is active.

    Args:
      dataset: host dataset; members' labels come from :func:`jaxmem.data.member_train_labels`.
      members: one dataset and model (:func:`jaxmem.members.member_grid`).
      spec: the shared training settings.
      out_dir: run directory (see the module docstring); created if needed.
      max_epochs: epoch cap, default ``spec.max_epochs``.
      checkpoint_epochs: epochs whose parameters are kept under ``out_dir/epochs/<epoch>`` (0 = initialisation),
        e.g. :func:`paper2_epoch_schedule`.
      resume: continue from ``out_dir``'s latest checkpoint; ``False`` deletes this run's previous outputs.
      progress: show a tqdm bar over epochs.
      checkpoint_every: save the full state every this many epochs (and always at the end) ...
      checkpoint_seconds: ... and whenever this much wall time has passed since the last save, so that an
        interruption loses at most about a minute of work while fast epochs are not slowed by saving.
        Where checkpoints fall never changes the results: a resumed run repeats the same keys and batches.
      eval_batch_size: batch of the per-epoch evaluation (memory only).
      member_chunk: members vmapped together inside the one epoch program (:func:`make_epoch_fn`); ``None``
        picks :func:`default_member_chunk` for the backend.
      mesh: a :func:`jaxmem.sharding.member_mesh` to split the members over its devices (each device vmaps its
        own ``M / n`` members; ``M`` must be a multiple of the device count; ``member_chunk`` must be None).
        One process only (a single host with several devices).
    """
    if mesh is not None and member_chunk is not None:
        raise ValueError(f"member_chunk={member_chunk} is for the single-device epoch; with a mesh each device "
                         f"vmaps all of its members, pass member_chunk=None")
    members = check_members(members)
    max_epochs = spec.max_epochs if max_epochs is None else max_epochs
    checkpoint_epochs = _check_fit_args(max_epochs, checkpoint_epochs, checkpoint_every)
    out_dir = Path(out_dir)
    results_path = out_dir / RESULTS_FILE
    num_train, num_test = int(dataset.y_train.shape[0]), int(dataset.y_test.shape[0])
    num_members = len(members)
    config = run_config(spec, members, dataset)

    # Decision order at startup:
    # 1. resume=False: delete this run's previous outputs, then start fresh (4).
    # 2. out_dir already holds a run: its config.json must describe this one (else ValueError, never a mix);
    #    a results.csv without config.json is not ours to overwrite (ValueError).
    # 3. a checkpoint exists: restore state, epoch, results-row count and metric history from the latest;
    #    rows written after it are dropped when training continues (they are recomputed identically).
    # 4. otherwise start at epoch 0: drop rows of an attempt killed before its first checkpoint, write
    #    config.json and members.csv, evaluate and record the initialisation.
    if not resume:
        _start_fresh(out_dir)
    if (out_dir / CONFIG_FILE).exists():
        _check_same_run(out_dir, config)
    elif results_path.exists():
        raise ValueError(f"{results_path} exists but {out_dir / CONFIG_FILE} does not; not a jaxmem training run "
                         f"directory, choose another out_dir")

    model = get_model(members[0].model, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    tx = make_optimizer(spec)
    data = device_data(dataset)
    labels = member_train_labels(dataset, members)  # [M, N]
    init_keys, train_keys = split_member_keys(members)
    if mesh is None:
        labels = jax.device_put(labels)
        state = init_members(model, tx, init_keys, data.x_train[:1])
    else:
        from jaxmem import sharding  # not at the top: jaxmem.sharding imports this module
        state, labels, train_keys, data = sharding.place_run(model, tx, mesh, labels, init_keys, train_keys, data)
    checkpoints = _Checkpoints(out_dir)
    restored_epoch = checkpoints.latest_epoch()
    if restored_epoch is not None:
        state, meta = checkpoints.restore(restored_epoch, state)
        epoch, rows_written, history = meta["epoch"], meta["results_rows"], _history_from_meta(meta)
    else:
        epoch, history = 0, [jax.device_get(make_eval_fn(model, eval_batch_size=eval_batch_size)(state, labels, data))]
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        results.write_member_table(out_dir / MEMBERS_FILE, members)
        results.truncate_rows(results_path, 0)
        rows_written = results.append_rows(
            results_path, model_rows(members, 0, history[0], np.ones(num_members, bool), num_train, num_test))
        if 0 in checkpoint_epochs:
            checkpoints.save_epoch_params(0, state)

    active = np.asarray(jax.device_get(state.active))
    if epoch < max_epochs and active.any():
        results.truncate_rows(results_path, rows_written)
    if mesh is None:
        epoch_fn = make_epoch_fn(model, tx, spec, num_train, eval_batch_size=eval_batch_size,
                                 member_chunk=member_chunk)
    else:
        epoch_fn = sharding.sharded_epoch_fn(model, tx, spec, num_train, mesh, eval_batch_size)
    saved_epoch, last_save = restored_epoch, time.monotonic()
    bar = tqdm(total=max_epochs, initial=epoch, disable=not progress, unit="epoch",
               desc=f"{members[0].dataset}×{members[0].model} ×{num_members}")
    while epoch < max_epochs and active.any():
        epoch += 1
        trained = active
        state, metrics = epoch_fn(state, labels, train_keys, jnp.asarray(epoch, jnp.int32), data)
        metrics, active = jax.device_get((metrics, state.active))
        history.append(metrics)
        rows_written += results.append_rows(
            results_path, model_rows(members, epoch, metrics, trained, num_train, num_test))
        if epoch in checkpoint_epochs:
            checkpoints.save_epoch_params(epoch, state)
        if (checkpoint_every and epoch % checkpoint_every == 0) or (
                checkpoint_seconds is not None and time.monotonic() - last_save >= checkpoint_seconds):
            checkpoints.save(epoch, state, _checkpoint_meta(epoch, rows_written, history))
            saved_epoch, last_save = epoch, time.monotonic()
        bar.update(1)
        bar.set_postfix(_progress_postfix(metrics, trained, active, num_train, num_test))
    bar.close()
    if saved_epoch != epoch:
        checkpoints.save(epoch, state, _checkpoint_meta(epoch, rows_written, history))
    checkpoints.save_final_params(state)
    checkpoints.close()
    return TrainResult(
        state=state,
        metrics=_stack(history),
        stop_epoch=np.asarray(jax.device_get(state.stop_epoch)),
        out_dir=out_dir,
        members=members,
        num_train=num_train,
        num_test=num_test,
    )
