"""The run directory of a training run: file names, the configuration check, Orbax checkpoints, row appends, resume.

Layout (big_vision's workdir):

* ``config.json`` and ``members.csv``: written when the run starts; a rerun must describe the same run.
* ``results.csv``: the tidy table (:mod:`jaxmem.results`); model rows of epoch 0 = initialisation for every
  member, then each epoch a member trained in, none after its stop epoch. Probes append to it.
  Appends land whole or not at all: ``results.csv.committed`` records the bytes they finished, and an append
  cut short is dropped when the table is next opened (:func:`jaxmem.results.append_rows`).
* ``checkpoints/<epoch>``: the last two full stacked states (member axis included), each with the epoch, the
  number of results rows written and the metric history. A resume takes the newest that restores and whose rows
  are all in ``results.csv`` (:meth:`RunDir.restore_latest`), so a corrupt, half-written or deleted checkpoint
  or a cut table costs the epochs since the one before, never the run.
* ``epochs/<epoch>``: parameters at requested epochs (kept); ``final``: the last parameters.
* ``dynamics.csv`` (optional): rows probed at the kept epochs while the run trains, a table of its own.

Everything that touches these files lives here; :func:`jaxmem.train.loop.train_members` does no file I/O.
:func:`snapshot_run` copies what a resume needs to another folder, :func:`restore_snapshot` seeds a run
directory from it (a run carried to another machine).

Several processes (``jax.distributed``): every process opens the same directory, which must be on a file system
they all see (as Orbax requires); process 0 alone writes the files, Orbax writes each process's shards of the
global arrays, and each write that others read is followed by a barrier.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxmem import faults, results
from jaxmem.manifest import CONFIG_FILE, RESULTS_FILE, config_differences, hold, is_writer
from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset
from jaxmem.train.step import EvalMetrics, MemberState

MEMBERS_FILE = "members.csv"
KEPT_CHECKPOINTS = 2
CHECKPOINT_DIR = "checkpoints"
EPOCHS_DIR = "epochs"
FINAL_DIR = "final"
DYNAMICS_FILE = "dynamics.csv"
_RUN_OUTPUTS = (CONFIG_FILE, MEMBERS_FILE, RESULTS_FILE, RESULTS_FILE + results.COMMIT_SUFFIX, CHECKPOINT_DIR,
                EPOCHS_DIR, FINAL_DIR)
# Settings that never change a trajectory, only where it ends: a resumed run may take new values (recorded in
# config.json under "resumed_with"); every other TrainSpec field must match the original run.
_RESUMABLE_CHANGES = ("max_epochs", "stop_on")


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
            # the user's own training labels (--labels), which the members start from; None: the dataset's
            "given_labels_sha1": None if dataset.train_labels is None else
            hashlib.sha1(np.asarray(dataset.train_labels, np.int32).tobytes()).hexdigest(),
        },
    }


def read_run_config(out_dir: str | Path) -> tuple[TrainSpec, list[MemberSpec]]:
    """The TrainSpec and members recorded in a run directory's ``config.json``."""
    config = json.loads((Path(out_dir) / CONFIG_FILE).read_text())
    return TrainSpec(**config["train"]), [MemberSpec(**m) for m in config["members"]]


def _comparable(config: dict) -> dict:
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in _RESUMABLE_CHANGES}}


def barrier(name: str) -> None:
    """Wait for every process (no-op when single-process): files written by process 0 are visible after it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def _host_state(state: MemberState):
    """What Orbax saves: host copies when single-process (so the donated device buffers can be reused while the
    files are written), the global arrays themselves when multi-process (each process writes its own shards)."""
    return jax.device_get(state) if jax.process_count() == 1 else state


def _member_params(state: MemberState) -> dict:
    return _host_state({"params": state.params, "batch_stats": state.batch_stats})


class RunDir:
    """One training run's directory. States go to Orbax asynchronously; :meth:`close` waits for the writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._absolute = self.path.absolute()  # Orbax rejects relative paths (at the first save, in a thread)
        self._manager: ocp.CheckpointManager | None = None
        self._params: ocp.StandardCheckpointer | None = None

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    # -------------------------------------------------------------------------------- configuration, resume

    def prepare(self, config: dict, *, resume: bool) -> None:
        """Check (or clear) the directory before anything is read from it, then open the checkpoints.

        ``resume=False`` deletes this run's previous outputs. Otherwise a ``config.json`` already there must
        describe the same run (``ValueError`` naming the differing parts, never a silent mix), and a
        ``results.csv`` without ``config.json`` is not ours to overwrite (``ValueError``).
        """
        if not resume and is_writer():
            for name in _RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        barrier("jaxmem-rundir-prepared")
        saved = None
        if (self.path / CONFIG_FILE).exists():
            saved = self._check_same_run(config)
        elif self.results_path.exists():
            raise ValueError(f"{self.results_path} exists but {self.path / CONFIG_FILE} does not; not a jaxmem "
                             f"training run directory, choose another out_dir")
        options = ocp.CheckpointManagerOptions(max_to_keep=KEPT_CHECKPOINTS, create=True)
        self._manager = ocp.CheckpointManager(self._absolute / CHECKPOINT_DIR, options=options)
        self._params = ocp.StandardCheckpointer()
        if saved is not None:
            self._record_resumable_changes(saved, config)

    def _record_resumable_changes(self, saved: dict, config: dict) -> None:
        """A resume under a new epoch cap or stop rule: ``config.json`` takes the new values and keeps the old ones,
        with the epoch they held until, under ``"resumed_with"``."""
        changed = {key: saved["train"][key] for key in _RESUMABLE_CHANGES
                   if key in saved["train"] and saved["train"][key] != config["train"][key]}
        if not changed or not is_writer():
            return
        history = saved.get("resumed_with", []) + [{"until_epoch": self._manager.latest_step() or 0, **changed}]
        (self.path / CONFIG_FILE).write_text(json.dumps({**saved, "train": config["train"], "resumed_with": history},
                                                        indent=2))

    def _check_same_run(self, config: dict) -> dict:
        """The saved configuration, if it describes the same run as ``config`` (else ``ValueError``)."""
        saved = json.loads((self.path / CONFIG_FILE).read_text())
        current = json.loads(json.dumps(config))
        differing = config_differences(_comparable(saved), _comparable(current))
        if differing:
            added = (differing == [d for d in differing if d.startswith("members:")]
                     and all(m in current["members"] for m in saved["members"]))
            raise ValueError(f"{self.path} holds a different run ({'; '.join(differing)}): use a new --out "
                             f"(out_dir), or --no-resume (resume=False) to delete it and start over" +
                             ("; a run's members train as one program, so members are added as runs of their own: "
                              "jaxmem sweep --layout member (or a grid file's layout = \"member\") trains only the "
                              "new ones" if added else ""))
        return saved

    def start(self, config: dict, members: Sequence[MemberSpec], rows: Iterable[Mapping]) -> int:
        """A fresh run: drop rows of an attempt killed before its first checkpoint, write ``config.json``,
        ``members.csv`` and the initialisation's rows; returns the number of rows written."""
        rows = list(rows)
        if is_writer():
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            results.write_member_table(self.path / MEMBERS_FILE, members)
            results.truncate_rows(self.results_path, 0)
            results.append_rows(self.results_path, rows)
        barrier("jaxmem-rundir-started")
        return len(rows)

    def append_rows(self, rows: Iterable[Mapping]) -> int:
        """Append rows to ``results.csv`` (process 0); returns their number on every process."""
        rows = list(rows)
        if is_writer():
            results.append_rows(self.results_path, rows)
        return len(rows)

    def truncate_rows(self, keep: int) -> None:
        """Keep the first ``keep`` rows: those written after the restored checkpoint are recomputed identically."""
        if is_writer():
            results.truncate_rows(self.results_path, keep)
        barrier("jaxmem-rundir-truncated")

    # ------------------------------------------------------------------------------------------ checkpoints

    def restore_latest(self, target: MemberState) -> tuple[MemberState, dict] | None:
        """``(state, meta)`` of the newest checkpoint that restores and whose results rows are all in the table,
        laid out like ``target`` (shardings included); None when there is no checkpoint to resume from.

        Each checkpoint passed over is named on stderr in one line and deleted (its epochs are recomputed). When
        checkpoints exist but none restores: ``ValueError`` with the ways out.
        """
        rows = results.count_rows(self.results_path) if is_writer() else 0
        if jax.process_count() > 1:
            rows = int(multihost_utils.broadcast_one_to_all(np.int64(rows)))
        failed = []
        newest_first = sorted(self._manager.all_steps(), reverse=True)
        for index, epoch in enumerate(newest_first):
            earlier = index + 1 < len(newest_first)
            name = self._absolute / CHECKPOINT_DIR / str(epoch)
            try:
                restored = self._manager.restore(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
            except Exception as error:  # corrupt, half-written or partly deleted: fall back to an earlier one
                failed.append(f"{name} ({_first_sentence(error)})")
                restored = None
            if restored is None:
                _silence_abandoned_reads()
                self._pass_over(epoch, f"checkpoint {failed[-1]} does not restore", earlier)
                continue
            if restored.meta["results_rows"] > rows:
                self._pass_over(epoch, f"checkpoint {name} needs {restored.meta['results_rows']} rows of "
                                       f"{self.results_path}, which holds {rows}", earlier)
                continue
            return restored.state, restored.meta
        if failed:
            raise ValueError(f"no checkpoint of {self.path} restores ({'; '.join(failed)}): rerun with --no-resume "
                             f"(resume=False) to start over, or use a new --out (out_dir)")
        return None

    def _pass_over(self, epoch: int, why: str, earlier: bool) -> None:
        """Say why the checkpoint at ``epoch`` is not resumed from, and delete it (it would block the save of
        that epoch when it is recomputed)."""
        if is_writer():
            print(f"{why}: {'trying the one before it' if earlier else 'no earlier checkpoint'}; the epochs after "
                  f"the one resumed from are recomputed", file=sys.stderr, flush=True)
        self._manager.delete(epoch)

    def save(self, epoch: int, state: MemberState, meta: dict) -> None:
        """The full state at ``epoch`` (replacing the previous checkpoint) with ``meta`` (JSON)."""
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(_host_state(state)), meta=ocp.args.JsonSave(meta)))
        faults.maybe_fail("checkpoint")

    def save_epoch_params(self, epoch: int, state: MemberState) -> None:
        """Parameters at ``epoch`` under ``epochs/<epoch>``, kept; skipped when a resumed run already wrote them
        (same epoch, same deterministic parameters)."""
        path = self._absolute / EPOCHS_DIR / str(epoch)
        if not path.exists():
            self._params.save(path, _member_params(state))

    def save_final_params(self, state: MemberState) -> None:
        self._params.save(self._absolute / FINAL_DIR, _member_params(state), force=True)

    def wait_until_saved(self) -> None:
        """Wait for the asynchronous writes started so far (checkpoints, kept parameters) to be on disk."""
        for handle in (self._manager, self._params):
            if handle is not None:
                handle.wait_until_finished()

    def close(self) -> None:
        """Wait for the asynchronous writes, then for every process."""
        self.wait_until_saved()
        for handle in (self._manager, self._params):
            if handle is not None:
                handle.close()
        barrier("jaxmem-rundir-closed")


def _first_sentence(error: Exception) -> str:
    """An error in one short line: TensorStore's messages run on with the whole store specification."""
    text = str(error).strip()
    return text.splitlines()[0].split(". See full", 1)[0][:200] if text else type(error).__name__


def _silence_abandoned_reads() -> None:
    """After a failed restore, Orbax's other reads of that checkpoint finish into a closed event loop, and Python
    prints each as a traceback, long after the one line that reported the checkpoint: keep exactly those quiet
    (for the rest of the process; every other error is printed as before)."""
    global _SILENCED
    if _SILENCED:
        return
    _SILENCED = True

    def abandoned(error, culprit=None) -> bool:
        return (isinstance(error, RuntimeError) and str(error) == "Event loop is closed") or \
            getattr(culprit, "__qualname__", "") == "_read_array_index_and_device_put"

    unraisable_hook, except_hook, thread_hook = sys.unraisablehook, sys.excepthook, threading.excepthook
    sys.unraisablehook = lambda u: None if abandoned(u.exc_value, u.object) else unraisable_hook(u)
    sys.excepthook = lambda kind, error, trace: None if abandoned(error) else except_hook(kind, error, trace)
    threading.excepthook = lambda args: None if abandoned(args.exc_value) else thread_hook(args)


_SILENCED = False


def checkpoint_meta(epoch: int, rows_written: int, history: Sequence[EvalMetrics]) -> dict:
    """What a checkpoint stores beside the state: the epoch, the results rows written, the metric history."""
    stacked = stack_metrics(history)
    return {"epoch": epoch, "results_rows": rows_written,
            "history": {name: column.tolist() for name, column in stacked._asdict().items()}}


def history_from_meta(meta: dict) -> list[EvalMetrics]:
    """The per-epoch metrics ``[M]`` stored by :func:`checkpoint_meta`."""
    dtypes = {"train_loss": np.float32}
    stacked = EvalMetrics(**{name: np.asarray(column, dtypes.get(name, np.int32))
                             for name, column in meta["history"].items()})
    return [jax.tree.map(lambda column: column[e], stacked) for e in range(stacked.train_loss.shape[0])]


def stack_metrics(history: Sequence[EvalMetrics]) -> EvalMetrics:
    """Per-epoch host metrics ``[M]`` stacked to ``[E, M]``."""
    return jax.tree.map(lambda *epochs: np.stack(epochs), *history)


def load_member_params(out_dir: str | Path, epoch: int | str = "final"):
    """Stacked parameters of every member of a run, at ``epoch`` (an int from ``checkpoint_epochs``) or ``"final"``.

    Returns:
      ``(params, batch_stats)`` as host arrays with a leading member axis ``[M, ...]``, whichever number of
      processes and devices wrote them; ``batch_stats`` is ``{}`` for models without BatchNorm.
    """
    out_dir = Path(out_dir)
    path = out_dir / FINAL_DIR if epoch == "final" else out_dir / EPOCHS_DIR / str(int(epoch))
    if not path.exists():
        saved = sorted(int(p.name) for p in (out_dir / EPOCHS_DIR).glob("*") if p.name.isdigit())
        raise FileNotFoundError(f"no parameters for epoch {epoch!r} in {out_dir}; saved epochs: {saved}, "
                                f"and 'final' {'exists' if (out_dir / FINAL_DIR).exists() else 'is missing'}")
    checkpointer = ocp.StandardCheckpointer()
    path = path.absolute()
    # Restored as numpy from the saved shapes, so arrays written by other processes or devices load here too.
    target = jax.tree.map(lambda meta: np.zeros(meta.shape, meta.dtype), checkpointer.metadata(path).item_metadata)
    restored = checkpointer.restore(path, target)
    checkpointer.close()
    return restored["params"], restored.get("batch_stats", {})


# ------------------------------------------------------------------------------ carrying a run elsewhere


def snapshot_run(run_dir: str | Path, dest: str | Path, *, epochs: Iterable[int] = ()) -> Path:
    """Copy into ``dest`` what the run needs to resume on another machine; returns ``dest``.

    That is ``config.json``, ``members.csv``, the newest checkpoint (only that one), ``dynamics.csv`` when present,
    the kept epochs named in ``epochs`` (others are not carried) and, last, the results table up to its last
    finished append (:func:`jaxmem.results.intact_size`): copied after the checkpoint, it holds every row the
    checkpoint counts, and the rows past it are recomputed on resume, identically. Safe while the run trains.
    The copy is made in a temporary folder beside ``dest`` and renamed to it, so an interruption never leaves
    part of one at ``dest`` (a previous snapshot is first renamed aside, then deleted; what a kill leaves beside
    ``dest`` is settled by the next call here or to :func:`restore_snapshot`). ``ValueError`` when
    ``run_dir`` has no ``config.json``, no checkpoint yet, or not every epoch of ``epochs`` kept.
    """
    run_dir, dest, epochs = Path(run_dir), Path(dest), [int(e) for e in epochs]
    if not (run_dir / CONFIG_FILE).is_file():
        raise ValueError(f"{run_dir} is not a training run directory (no {CONFIG_FILE})")
    checkpoints = [int(p.name) for p in (run_dir / CHECKPOINT_DIR).glob("*") if p.name.isdigit() and p.is_dir()]
    if not checkpoints:
        raise ValueError(f"{run_dir} has no checkpoint yet")
    missing = [str(e) for e in epochs if not (run_dir / EPOCHS_DIR / str(e)).is_dir()]
    if missing:
        raise ValueError(f"{run_dir} has no kept epoch {', '.join(missing)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _settle_leftovers(dest)
    temporary = Path(tempfile.mkdtemp(prefix=f"{dest.name}.tmp.", dir=dest.parent))
    try:
        newest = str(max(checkpoints))
        shutil.copytree(run_dir / CHECKPOINT_DIR / newest, temporary / CHECKPOINT_DIR / newest)
        for name in (CONFIG_FILE, MEMBERS_FILE):
            shutil.copy2(run_dir / name, temporary / name)
        for epoch in epochs:
            shutil.copytree(run_dir / EPOCHS_DIR / str(epoch), temporary / EPOCHS_DIR / str(epoch))
        for name in (DYNAMICS_FILE, RESULTS_FILE):
            if (run_dir / name).exists():
                _copy_intact_table(run_dir / name, temporary / name)
        _replace_folder(temporary, dest)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return dest


def _copy_intact_table(table: Path, copy: Path) -> None:
    """``table`` up to its last finished append, never the fragment of one still being written."""
    size, _ = results.intact_size(table)
    with table.open("rb") as source, copy.open("wb") as target:
        target.write(source.read(size))


def _replace_folder(new: Path, dest: Path) -> None:
    """Rename ``new`` to ``dest``; a folder already at ``dest`` is moved aside first and deleted after."""
    previous = None
    if dest.exists():
        previous = Path(tempfile.mkdtemp(prefix=f"{dest.name}.old.", dir=dest.parent))
        os.replace(dest, previous / dest.name)
    os.replace(new, dest)
    if previous is not None:
        shutil.rmtree(previous)


def _settle_leftovers(dest: Path) -> None:
    """Clear what a kill during :func:`snapshot_run` left beside ``dest``: a copy in progress (``dest.tmp.*``,
    perhaps incomplete) is deleted; the previous snapshot moved aside (``dest.old.*/<name>``, complete) is put back
    when ``dest`` is missing (the kill fell between the two renames), else deleted."""
    if not dest.parent.is_dir():
        return
    for old in sorted(dest.parent.glob(f"{dest.name}.old.*"), reverse=True):
        if not dest.exists() and (old / dest.name).is_dir():
            os.replace(old / dest.name, dest)
        shutil.rmtree(old, ignore_errors=True)
    for copy in dest.parent.glob(f"{dest.name}.tmp.*"):
        shutil.rmtree(copy, ignore_errors=True)


def restore_snapshot(src: str | Path, run_dir: str | Path) -> bool:
    """Seed ``run_dir`` from the snapshot ``src`` (:func:`snapshot_run`) when ``run_dir`` holds no run yet (no
    ``config.json``) and ``src`` holds a snapshot (a ``checkpoints`` folder); returns whether it did.

    Rerunning the same training in ``run_dir`` then resumes from the snapshot's checkpoint. ``config.json`` is
    copied last, so a restore cut short is redone by the next call.
    """
    src, run_dir = Path(src), Path(run_dir)
    _settle_leftovers(src)
    if (run_dir / CONFIG_FILE).exists() or not (src / CHECKPOINT_DIR).is_dir():
        return False
    with hold(run_dir):
        shutil.copytree(src, run_dir, dirs_exist_ok=True, ignore=lambda folder, names:
                        [CONFIG_FILE] if Path(folder) == src else [])
        shutil.copy2(src / CONFIG_FILE, run_dir / (CONFIG_FILE + ".tmp"))
        os.replace(run_dir / (CONFIG_FILE + ".tmp"), run_dir / CONFIG_FILE)
    return True
