"""Fitting a run in its run directory: :func:`fit_members` composes :func:`jaxmem.train.loop.train_members` with
a :class:`jaxmem.train.rundir.RunDir` (config check, tidy rows, Orbax checkpoints, resume) and a progress display;
for long runs, a call at each kept epoch and a resumable copy kept elsewhere (:class:`Carry`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxmem import faults, sharding
from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset, member_train_labels
from jaxmem.manifest import holding, is_writer
from jaxmem.members import check_members
from jaxmem.models import get_model
from jaxmem.train.epoch import EVAL_BATCH_SIZE, device_data, init_members, make_eval_fn, split_member_keys
from jaxmem.train.loop import EpochEnd, Progress, progress_postfix, model_rows, train_members
from jaxmem.train.rundir import (EPOCHS_DIR, RunDir, checkpoint_meta, history_from_meta, run_config, snapshot_run,
                                 stack_metrics)
from jaxmem.train.step import EvalMetrics, MemberState, make_optimizer


class TrainResult(NamedTuple):
    """What :func:`fit_members` returns."""

    state: MemberState  # final stacked state, leaves [M, ...]
    metrics: EvalMetrics  # fields [E + 1, M]: row e = after epoch e (0 = initialisation); frozen members repeat
    stop_epoch: np.ndarray  # [M] int32: epoch the member reached its target; -1 if it never did
    out_dir: Path
    members: list[MemberSpec]
    num_train: int
    num_test: int


class Carry(NamedTuple):
    """Keep a resumable copy of a training run in ``dest`` (:func:`jaxmem.train.rundir.snapshot_run`), to carry
    it to another machine: after a checkpoint once ``seconds`` have passed since the last copy, and at the end.
    ``epochs``: kept epochs (of ``checkpoint_epochs``) that travel too, once they are kept."""

    dest: Path
    seconds: float = 600
    epochs: tuple[int, ...] = ()


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


def _agreed_seconds_since(start: float) -> float:
    """Wall time since ``start``; process 0's value in every process, so that all take a checkpoint together."""
    elapsed = np.float64(time.monotonic() - start)
    if jax.process_count() > 1:
        elapsed = multihost_utils.broadcast_one_to_all(elapsed)
    return float(elapsed)


def _check_fit_args(max_epochs: int, checkpoint_epochs: Iterable[int], checkpoint_every: int | None,
                    carry: Carry | None) -> frozenset[int]:
    if max_epochs < 0:
        raise ValueError(f"max_epochs must be >= 0, got {max_epochs}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    epochs = list(checkpoint_epochs)
    if any(not isinstance(e, (int, np.integer)) or e < 0 for e in epochs):
        raise ValueError(f"checkpoint_epochs must be non-negative integers, got {epochs}")
    if carry is not None:
        if carry.seconds < 0:
            raise ValueError(f"carry.seconds must be >= 0, got {carry.seconds}")
        if not set(carry.epochs) <= set(epochs):
            raise ValueError(f"carry.epochs {sorted(set(carry.epochs) - set(epochs))} are not in checkpoint_epochs")
    return frozenset(int(e) for e in epochs)


@holding()
def fit_members(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                max_epochs: int | None = None, checkpoint_epochs: Iterable[int] = (), resume: bool = True,
                progress: bool = True, checkpoint_every: int | None = None,
                checkpoint_seconds: float | None = 60.0,
                eval_batch_size: int = EVAL_BATCH_SIZE, member_chunk: int | None = None,
                mesh: Mesh | None = None, on_kept_epoch: Callable[[int], None] | None = None,
                carry: Carry | None = None) -> TrainResult:
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
      on_kept_epoch: ``on_kept_epoch(epoch)``, called in the writing process right after the parameters of a
        kept epoch are saved under ``out_dir/epochs/<epoch>`` (epoch 0 included), e.g. to probe it at once
        (:func:`jaxmem.experiments.dynamics.probe_saved_epochs` with ``epochs=[epoch]`` and a ``results_path``
        of its own). It runs in the training process, between epochs (training waits for it), and before the
        epoch's checkpoint: a resumed run calls it for the kept epochs after its checkpoint only, and repeats
        a call an interruption cut short.
      carry: a :class:`Carry`: keep a resumable snapshot of the run in ``carry.dest`` (written by the writing
        process after a checkpoint, at most every ``carry.seconds``, and at the end).
    """
    if mesh is not None and member_chunk is not None:
        raise ValueError(f"member_chunk={member_chunk} is for the single-device epoch; with a mesh each device "
                         f"vmaps all of its members, pass member_chunk=None")
    members = check_members(members)
    max_epochs = spec.max_epochs if max_epochs is None else max_epochs
    checkpoint_epochs = _check_fit_args(max_epochs, checkpoint_epochs, checkpoint_every, carry)
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

    def kept(epoch: int) -> None:
        """Hand a kept epoch, once written, to ``on_kept_epoch``."""
        if on_kept_epoch is not None:
            run_dir.wait_until_saved()
            if is_writer():
                on_kept_epoch(epoch)

    def snapshot(epoch: int) -> None:
        """The run (its writes finished) into ``carry.dest``, with the epochs of ``carry.epochs`` kept so far."""
        nonlocal snapshot_epoch, last_snapshot
        if is_writer():
            kept_epochs = [e for e in carry.epochs if (run_dir.path / EPOCHS_DIR / str(e)).is_dir()]
            snapshot_run(run_dir.path, carry.dest, epochs=kept_epochs)
        snapshot_epoch, last_snapshot = epoch, time.monotonic()

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
            kept(0)

    if epoch < max_epochs and np.asarray(sharding.to_host(state.active)).any():
        run_dir.truncate_rows(rows_written)
    saved_epoch, last_save = restored_epoch, time.monotonic()
    snapshot_epoch, last_snapshot = None, last_save
    bar = Progress(max_epochs, epoch, f"{members[0].dataset}×{members[0].model} ×{num_members}", enabled=progress)

    def record(end: EpochEnd) -> None:
        nonlocal rows_written, saved_epoch, last_save
        history.append(end.metrics)
        rows_written += run_dir.append_rows(model_rows(members, end.epoch, end.metrics, end.trained, num_train,
                                                       num_test))
        if end.epoch in checkpoint_epochs:
            run_dir.save_epoch_params(end.epoch, end.state)
            kept(end.epoch)
        faults.maybe_fail("epoch")
        if (checkpoint_every and end.epoch % checkpoint_every == 0) or (
                checkpoint_seconds is not None and _agreed_seconds_since(last_save) >= checkpoint_seconds):
            run_dir.save(end.epoch, end.state, checkpoint_meta(end.epoch, rows_written, history))
            saved_epoch, last_save = end.epoch, time.monotonic()
            if carry is not None and _agreed_seconds_since(last_snapshot) >= carry.seconds:
                run_dir.wait_until_saved()
                snapshot(end.epoch)
        bar.update(end.epoch, progress_postfix(end.metrics, end.trained, end.active, num_train, num_test,
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
    if carry is not None and snapshot_epoch != epoch:
        snapshot(epoch)
    return TrainResult(
        state=state,
        metrics=stack_metrics(history),
        stop_epoch=np.asarray(sharding.to_host(state.stop_epoch)),
        out_dir=run_dir.path,
        members=members,
        num_train=num_train,
        num_test=num_test,
    )
