"""The host loop over epochs: :func:`train_members`, a short Python loop with no file I/O that runs the jitted
epoch (:mod:`jaxmem.train.epoch`), fetches the metrics once per epoch and hands them to a callback; the tidy rows
of an epoch and the progress display; and the two helpers of training on from kept parameters (a fresh optimiser
state: :func:`fresh_states`; the same members as several branches: :func:`concat_members`).
"""
from __future__ import annotations

import math
import sys
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxmem import results, sharding
from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.train.epoch import EVAL_BATCH_SIZE, make_epoch_fn
from jaxmem.train.rundir import stack_metrics
from jaxmem.train.step import DeviceData, EvalMetrics, MemberState


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


def progress_postfix(metrics: EvalMetrics, trained: np.ndarray, active: np.ndarray, num_train: int,
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


def concat_members(*trees):
    """Pytrees with a leading member axis joined along it (e.g. the same members as several branches)."""
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *trees)


def fresh_states(params, batch_stats, tx) -> MemberState:
    """Active members ``[M]`` with the given parameters and a fresh optimiser state."""
    members = jax.tree.leaves(params)[0].shape[0]
    return MemberState(params=params, batch_stats=batch_stats, opt_state=jax.vmap(tx.init)(params),
                       active=jnp.ones(members, bool), stop_epoch=jnp.full(members, -1, jnp.int32))


def _like(reference: jax.Array, host: np.ndarray) -> jax.Array:
    """``host`` placed as ``reference`` is (same sharding, so the jitted epoch sees the same input layout)."""
    if isinstance(reference, jax.Array) and not reference.is_fully_addressable:
        return jax.make_array_from_callback(host.shape, reference.sharding, lambda index: host[index])
    return jax.device_put(host, reference.sharding)
