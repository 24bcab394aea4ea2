"""Deterministic fault injection, for the tests of what a run survives (``tests/test_faults.py``).

``JAXMEM_FAULT=<point>[@<n>]`` ends the process at once (``os._exit(137)``, the status of a SIGKILL: no cleanup,
no flushing, no ``finally``) at its ``n``-th arrival (default the first) at the named point. Unset, each point
costs one environment lookup. The points (:data:`POINTS`) are where an interruption would hurt most.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Callable

FAULT_ENV = "JAXMEM_FAULT"
POINTS = {
    "epoch": "after an epoch's rows are appended, before its checkpoint",
    "checkpoint": "while a checkpoint is being written (before Orbax commits it)",
    "append": "inside an append of rows, after part of the batch is on disk",
    "probe": "between two probing passes of jaxmem run, after the first one's rows are appended",
    "dynamics": "between two probed epochs of jaxmem dynamics, after the first one's rows are appended",
}
_arrivals: Counter = Counter()


def maybe_fail(point: str, before: Callable[[], object] | None = None) -> None:
    """End the process here if ``JAXMEM_FAULT`` names ``point`` and this is its chosen arrival; ``before`` runs
    first (e.g. writing part of a batch)."""
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition("@")
    if name not in POINTS:
        raise ValueError(f"{FAULT_ENV}={wanted!r}: unknown point {name!r}; points: {', '.join(POINTS)}")
    if name != point:
        return
    _arrivals[point] += 1
    if _arrivals[point] == int(count or 1):
        if before is not None:
            before()
        os._exit(137)
