"""Per-class uncentred second moments G_c = Σ_{y_i = c} h_i h_iᵀ, accumulated in class-sorted chunks.

The probes of SPEC §4–5 start from G_c. Masking every sample by every class would cost C× the work, so the
samples are visited in class-sorted order, cut into chunks that each hold one class only (the last chunk of a
class is padded with index -1). Each chunk then costs one B·D² product added into a single G_c: the total is
N·D² plus at most C·B padding rows. The same schedule drives the streaming path (activations computed chunk by
chunk from a model) and the in-memory path below, so both call :func:`gram_update`.

Roofline: N·D²·2 flops for the products (symmetric; XLA computes the full square).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


class GramState(NamedTuple):
    """Running per-class second moments (add a leading member axis by stacking)."""

    gram: jax.Array  # [C, D, D] float32/float64
    count: jax.Array  # [C] int32 samples seen per class


class ChunkSchedule(NamedTuple):
    """Class-sorted, class-pure chunks of sample indices (host arrays; leading member axis optional)."""

    index: np.ndarray  # [..., S, B] int32 row indices, -1 = padding
    chunk_class: np.ndarray  # [..., S] int32 class of each chunk


def gram_init(num_classes: int, dim: int, dtype=jnp.float32) -> GramState:
    """Zero accumulators for ``num_classes`` classes of ``dim``-wide activations."""
    return GramState(jnp.zeros((num_classes, dim, dim), dtype), jnp.zeros((num_classes,), jnp.int32))


def gram_update(state: GramState, rows: jax.Array, chunk_class: jax.Array, valid: jax.Array) -> GramState:
    """Add one class-pure chunk. ``rows`` [B, D] (padding rows are zeroed here), ``valid`` [B] bool."""
    rows = jnp.where(valid[:, None], rows, 0).astype(state.gram.dtype)
    update = jnp.matmul(rows.T, rows, precision=HIGHEST)
    return GramState(
        state.gram.at[chunk_class].add(update),
        state.count.at[chunk_class].add(valid.sum(dtype=jnp.int32)),
    )


def chunk_schedule(labels, num_classes: int, chunk_size: int, *, keep=None) -> ChunkSchedule:
    """Schedule for one label vector [N] or a stack [M, N] (members padded to the same chunk count).

    ``keep`` (same shape as ``labels``, bool) restricts the schedule to selected samples.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        keeps = [None] * len(labels) if keep is None else list(np.asarray(keep))
        parts = [chunk_schedule(y, num_classes, chunk_size, keep=k) for y, k in zip(labels, keeps)]
        steps = max(len(p.chunk_class) for p in parts)
        index = np.full((len(parts), steps, chunk_size), -1, np.int32)
        chunk_class = np.zeros((len(parts), steps), np.int32)
        for m, p in enumerate(parts):
            index[m, : len(p.chunk_class)] = p.index
            chunk_class[m, : len(p.chunk_class)] = p.chunk_class
        return ChunkSchedule(index, chunk_class)
    if labels.ndim != 1:
        raise ValueError(f"labels must be [N] or [M, N], got shape {labels.shape}")
    selected = np.ones(labels.shape, bool) if keep is None else np.asarray(keep, bool)
    rows, classes = [], []
    for c in range(num_classes):
        members_of_c = np.flatnonzero((labels == c) & selected).astype(np.int32)
        n_chunks = -(-len(members_of_c) // chunk_size)
        padded = np.full(n_chunks * chunk_size, -1, np.int32)
        padded[: len(members_of_c)] = members_of_c
        rows.append(padded.reshape(n_chunks, chunk_size))
        classes.append(np.full(n_chunks, c, np.int32))
    index = np.concatenate(rows) if rows else np.zeros((0, chunk_size), np.int32)
    chunk_class = np.concatenate(classes) if classes else np.zeros((0,), np.int32)
    if len(chunk_class) == 0:  # keep one all-padding chunk so that scans have a static, non-empty length
        index = np.full((1, chunk_size), -1, np.int32)
        chunk_class = np.zeros((1,), np.int32)
    return ChunkSchedule(index, chunk_class)


def accumulate(state: GramState, features: jax.Array, schedule: ChunkSchedule) -> GramState:
    """Scan one member's schedule over in-memory ``features`` [N, D] (pure; vmap for members)."""

    def step(carry, chunk):
        index, chunk_class = chunk
        valid = index >= 0
        rows = features[jnp.where(valid, index, 0)]
        return gram_update(carry, rows, chunk_class, valid), None

    state, _ = jax.lax.scan(step, state, (jnp.asarray(schedule.index), jnp.asarray(schedule.chunk_class)))
    return state
