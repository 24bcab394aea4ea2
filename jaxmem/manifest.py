"""What a run directory records beyond its training, and who may write it.

* **The manifest** (in ``config.json``, beside the training configuration): for each stage that adds rows to the
  run (``probing``, ``relabel``, ``labels``, ``cost``), its spec split in two: the ``identity``, settings that
  change what an existing row means (MASC's variance, a split seed), which every later call must repeat; and the
  ``requests``, settings that only add rows (probes, layers, subspace kinds), kept as a list. A stage looks up the
  rows it already has by the columns that tell its rows apart and computes only the missing ones;
  :func:`record_stage` refuses a changed identity in one line naming the field and the way out.
* **The lock**: :func:`hold` takes an advisory lock on ``<run>/.jaxmem.lock`` for as long as a process writes the
  run (the kernel releases it when the process ends, killed or not); a second writer stops with
  :class:`RunDirBusy` naming the holder. The holder first cuts off what an earlier writer killed mid-append left
  at the end of ``results.csv``, so that no reader, jaxmem's or ``pandas.read_csv``, sees a fragment.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
from pathlib import Path

import jax

from jaxmem import results

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.csv"
LOCK_FILE = ".jaxmem.lock"

_held: dict[Path, list] = {}  # run directory -> [open lock file, depth]: re-entrant within one process


class RunDirBusy(ValueError):
    """Another process holds the run directory."""


def is_writer() -> bool:
    """Whether this process writes run files: process 0 of a multi-process run, always when single-process."""
    return jax.process_index() == 0


@contextlib.contextmanager
def hold(out_dir: str | Path, *, wait: bool = False):
    """Hold ``out_dir`` for writing (created if missing) for the duration of the block; re-entrant within the
    process, a no-op on processes other than the writer. When another process holds it: :class:`RunDirBusy`, or
    with ``wait`` block until it is free (for short writes several processes share, e.g. a sweep's combined
    table)."""
    if not is_writer():
        yield
        return
    key = Path(out_dir).absolute()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    key.mkdir(parents=True, exist_ok=True)
    handle = (key / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunDirBusy(f"{out_dir} is being written by {holder}: wait for it to end, or use another --out "
                         f"(out_dir)") from None
    handle.seek(0)
    handle.truncate()
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {since} ({' '.join(sys.argv)[:200]})")
    handle.flush()
    _held[key] = [handle, 1]
    try:
        results.drop_unfinished(key / RESULTS_FILE)  # the one writer now: any uncommitted tail is a fragment
        yield
    finally:
        del _held[key]
        handle.close()  # releases the lock


def holding(parameter: str = "out_dir"):
    """Decorator: the function runs holding (:func:`hold`) the run directory passed as its ``parameter``."""
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def held(*args, **kwargs):
            with hold(signature.bind(*args, **kwargs).arguments[parameter]):
                return function(*args, **kwargs)
        return held
    return decorate


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``"field: saved in the run, current now"`` for every leaf of two configuration dicts that differs; a key
    missing from ``saved`` (a setting added after the run was made) is not a difference."""
    differing = []
    for key, value in current.items():
        name = f"{prefix}{key}"
        if key not in saved:
            continue
        if isinstance(value, dict) and isinstance(saved[key], dict):
            differing += config_differences(saved[key], value, f"{name}.")
        elif saved[key] != value:
            shown = (lambda v: len(v) if key == "members" else repr(v))
            differing.append(f"{name}: {shown(saved[key])} in the run, {shown(value)} now")
    return differing


def record_stage(out_dir: str | Path, stage: str, identity: dict, request: dict, *, way_out: str) -> None:
    """Keep ``stage``'s spec in the run's ``config.json``: its ``identity`` must match the one recorded by an
    earlier call (else ``ValueError`` naming each differing field, then ``way_out``); ``request`` joins the list
    of requests. Only the writer process writes."""
    path = Path(out_dir) / CONFIG_FILE
    if not is_writer():
        return
    config = json.loads(path.read_text())
    identity, request = json.loads(json.dumps(identity)), json.loads(json.dumps(request))
    saved = config.get(stage)
    if saved is not None:
        differing = config_differences(saved["identity"], identity)
        if differing:
            raise ValueError(f"{out_dir} holds {stage} rows made with other settings ({'; '.join(differing)}): "
                             f"{way_out}")
    requests = (saved or {}).get("requests", [])
    if request not in requests:
        requests.append(request)
    config[stage] = {"identity": {**(saved or {}).get("identity", {}), **identity}, "requests": requests}
    path.write_text(json.dumps(config, indent=2))


def forget_stage(out_dir: str | Path, stage: str) -> None:
    """Drop ``stage``'s spec from the run's manifest (its rows are being deleted: the next call starts over).
    Only the writer process writes."""
    path = Path(out_dir) / CONFIG_FILE
    if not is_writer() or not path.exists():
        return
    config = json.loads(path.read_text())
    if config.pop(stage, None) is not None:
        path.write_text(json.dumps(config, indent=2))


def record_probing(out_dir: str | Path, probing) -> None:
    """Keep a :class:`~jaxmem.config.ProbeSpec` in the manifest as the ``probing`` stage: its ``identity``
    (MASC's variance, precision, BatchNorm mode) must match an earlier probing of the run; each ``request``
    (probes, variances, subspace kinds) is appended."""
    record_stage(out_dir, "probing", probing.identity, probing.request,
                 way_out="use a new --out, or add MASC at another variance with --sensitivity")
