"""Experiments over a member mesh: every device probes its own members, and every process gets all the rows.

Training splits the member axis over a :func:`jaxmem.sharding.member_mesh` (:func:`jaxmem.train.fit_members` with
``mesh``); probing afterwards is split the same way: the members that device ``i`` trained (the block
:func:`jaxmem.sharding.local_members` names) are probed on device ``i``, one thread per local device, and the rows
of all processes are gathered so that process 0 can write them. A member's rows do not depend on which other
members share its device, up to float rounding (MASC: the scoring width and the padding of dual problems follow
the members probed together; predictions are the same).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import jax
from jax.sharding import Mesh

from jaxmem import sharding


def probe_on_mesh(probe: Callable[[Sequence[int]], list[dict]], num_members: int, mesh: Mesh) -> list[dict]:
    """``probe(member_ids)`` on each of this process's devices for the members it holds; all processes' rows.

    Args:
      probe: rows (dicts with global ``member`` indices) of the given members, computed on the default device.
      num_members: ``M``, a multiple of the mesh's device count.
      mesh: the mesh the members were trained on.

    Returns:
      The rows of every member, grouped by device in mesh order, on every process.
    """

    def on_device(local: tuple[jax.Device, range]) -> list[dict]:
        device, member_ids = local
        with jax.default_device(device):
            return probe(list(member_ids))

    local = sharding.local_members(num_members, mesh)
    with ThreadPoolExecutor(len(local)) as pool:  # devices work at once; each compiles its own programs
        parts = list(pool.map(on_device, local))
    return sharding.allgather_objects([row for part in parts for row in part])
