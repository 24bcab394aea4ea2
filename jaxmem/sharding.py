"""The member axis over a device mesh: placement, per-device programs, sharded init, multi-host setup.

Members are independent, so the only parallelism needed is to split the leading member axis ``[M, ...]`` over a
1-D :class:`jax.sharding.Mesh` with axis ``"members"``: every device holds ``M / n`` members (their state, labels
and keys) and a full copy of the dataset, and runs the single-device vmapped program on its own members with no
communication. JAX does the placement (:class:`~jax.sharding.NamedSharding`) and the per-device programs
(:func:`jax.shard_map`, :func:`on_members`); there is no scheduler here. The sharded epoch is
:func:`jaxmem.train.epoch.make_epoch_fn` with a mesh (this module does not import the training loop).

``M`` must be a multiple of the device count (:func:`check_divisible`): padding with dummy members would train
them and give them result rows, so choose ``M`` (seeds × degrees) or the device list instead.

Multi-host: call :func:`initialize_distributed` first in every process; every process then builds the same host
values (members, labels, dataset) and :func:`shard_members` / :func:`replicate` keep only the local shards.
Device results are global arrays; :func:`gather_members` brings them to every host.
"""
from __future__ import annotations

import os
import pickle
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmem.train.step import DeviceData, MemberState, init_member

MEMBER_AXIS = "members"


def member_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"members"`` over ``devices`` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("member_mesh needs at least one device, got an empty device list")
    return Mesh(np.asarray(devices), (MEMBER_AXIS,))


def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``"members"``, trailing axes whole."""
    return NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(num_members: int, mesh: Mesh) -> None:
    """``ValueError`` unless ``num_members`` splits evenly over the mesh's devices."""
    devices = mesh.devices.size
    if num_members % devices:
        fewer = max(d for d in range(1, devices + 1) if num_members % d == 0)
        raise ValueError(
            f"M = {num_members} members cannot be split evenly over {devices} devices; choose M a multiple of "
            f"{devices} (e.g. {-(-num_members // devices) * devices} members: more seeds or degrees) or a mesh of "
            f"{fewer} devices (member_mesh(jax.devices()[:{fewer}]))")


def _is_key(leaf) -> bool:
    return jnp.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _place(leaf, sharding: NamedSharding):
    """One leaf on ``sharding``; in a multi-process run from the same host value in every process."""
    if _is_key(leaf):
        return jax.random.wrap_key_data(_place(jax.random.key_data(leaf), sharding), impl=jax.random.key_impl(leaf))
    if jax.process_count() == 1 or (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable):
        return jax.device_put(leaf, sharding)
    host = np.asarray(leaf)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_members(tree, mesh: Mesh):
    """Every leaf ``[M, ...]`` split over ``"members"`` (leaf ``i`` of member ``m`` on device ``m // (M / n)``).

    Raises ``ValueError`` for a leaf without a leading axis, leaves with different ``M``, or ``M`` not a multiple
    of the device count.
    """
    leaves = jax.tree.leaves(tree)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes or len(sizes) > 1:
        raise ValueError(f"shard_members needs leaves with the same leading member axis, got leading sizes "
                         f"{sorted(sizes, key=str)}")
    if sizes:
        check_divisible(sizes.pop(), mesh)
    sharding = member_sharding(mesh)
    return jax.tree.map(lambda leaf: _place(leaf, sharding), tree)


def replicate(tree, mesh: Mesh):
    """Every leaf copied whole to every device of the mesh (the shared dataset, scalars)."""
    sharding = replicated_sharding(mesh)
    return jax.tree.map(lambda leaf: _place(leaf, sharding), tree)


def gather_members(tree):
    """Global arrays as host numpy arrays on every process (``process_allgather``; a copy when single-process)."""
    return multihost_utils.process_allgather(tree, tiled=True)


def to_host(tree):
    """Device arrays as host arrays: ``jax.device_get`` when every shard is local, else :func:`gather_members`."""
    if all(getattr(leaf, "is_fully_addressable", True) for leaf in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    return gather_members(tree)


def on_members(function: Callable, mesh: Mesh, num_member_args: int, num_shared_args: int) -> Callable:
    """``function`` run per device on its local members: the first ``num_member_args`` arguments and all outputs
    split over ``"members"``, the remaining ``num_shared_args`` replicated; no communication between devices.

    ``check_vma=False``: the check only concerns collectives (there are none) and it rejects
    ``jax.random.fold_in`` of a per-member typed key by a replicated epoch number (jax 0.10).
    """
    members, shared = PartitionSpec(MEMBER_AXIS), PartitionSpec()
    return jax.shard_map(function, mesh=mesh, in_specs=(members,) * num_member_args + (shared,) * num_shared_args,
                         out_specs=members, check_vma=False)


def sharded_init_members(model: nn.Module, tx: optax.GradientTransformation, keys: jax.Array,
                         sample_x: jax.Array, mesh: Mesh) -> MemberState:
    """Stacked fresh states ``[M]`` created in place on their devices (never all on one device first).

    Same values as :func:`jaxmem.train.epoch.init_members` for the same typed init keys ``[M]``.
    """
    local = jax.vmap(partial(init_member, model, tx), in_axes=(0, None))
    init = jax.jit(on_members(local, mesh, 1, 1))
    return init(shard_members(keys, mesh), replicate(sample_x, mesh))


def place_run(model: nn.Module, tx: optax.GradientTransformation, mesh: Mesh, labels, init_keys: jax.Array,
              train_keys: jax.Array, data: DeviceData) -> tuple[MemberState, jax.Array, jax.Array, DeviceData]:
    """A run's device inputs on the mesh, once: ``(state [M], labels [M, N], train_keys [M], data)``.

    Fresh states come from :func:`sharded_init_members`; labels and keys are split over ``"members"``; the
    dataset is replicated (so the epoch function does not copy it again every epoch).
    """
    return (sharded_init_members(model, tx, init_keys, data.x_train[:1], mesh), shard_members(labels, mesh),
            shard_members(train_keys, mesh), replicate(data, mesh))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """Join a multi-host run: :func:`jax.distributed.initialize`, once per process, before any other JAX call.

    Arguments left out come from ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0, read by JAX),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read here), else from JAX's cluster detection (SLURM, Open MPI,
    Kubernetes, Cloud TPU). Afterwards :func:`jax.devices` lists every process's devices, so :func:`member_mesh`
    spans all hosts. A single-process run needs no call. ``kwargs`` go to :func:`jax.distributed.initialize`
    (e.g. ``local_device_ids``).
    """
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kwargs)


def local_members(num_members: int, mesh: Mesh) -> list[tuple[jax.Device, range]]:
    """``(device, members)`` for each of this process's devices in ``mesh``: the block of ``M / n`` members that
    :func:`shard_members` puts there (device ``i`` of the mesh holds members ``i·M/n … (i+1)·M/n − 1``)."""
    check_divisible(num_members, mesh)
    per_device = num_members // mesh.devices.size
    return [(device, range(i * per_device, (i + 1) * per_device)) for i, device in enumerate(mesh.devices.flat)
            if device.process_index == jax.process_index()]


def allgather_objects(values: list) -> list:
    """Every process's list of picklable ``values``, concatenated in process order, on every process (the rows
    each process computed for its own members). A copy when single-process."""
    if jax.process_count() == 1:
        return list(values)
    payload = np.frombuffer(pickle.dumps(values), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([payload.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[:payload.size] = payload
    gathered = multihost_utils.process_allgather(padded[None], tiled=True)  # [P, max size]
    return [value for row, size in zip(gathered, np.ravel(sizes)) for value in pickle.loads(row[:size].tobytes())]


def distributed_mesh(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> Mesh:
    """:func:`initialize_distributed` (flags, else the environment) and a :func:`member_mesh` over every device
    of every process: what the commands' ``--distributed`` does."""
    initialize_distributed(coordinator_address, num_processes, process_id)
    return member_mesh()


__all__ = [
    "MEMBER_AXIS",
    "allgather_objects",
    "distributed_mesh",
    "local_members",
    "check_divisible",
    "gather_members",
    "initialize_distributed",
    "member_mesh",
    "member_sharding",
    "on_members",
    "place_run",
    "replicate",
    "replicated_sharding",
    "shard_members",
    "sharded_init_members",
    "to_host",
]
