"""Per-class uncentred second moments G_c = Σ_{y_i = c} h_i h_iᵀ (with the class sums and counts), accumulated in
class-sorted chunks, and the per-class eigenproblems that MASC and the linear probe solve on them.

The probes start from G_c. Masking every sample by every class would cost C× the work, so the
samples are visited in class-sorted order, cut into chunks that each hold one class only (the last chunk of a
class is padded with index -1). Each chunk then costs one B·D² product added into a single G_c: the total is
N·D² plus at most C·B padding rows. The same schedule drives the streaming path (activations computed chunk by
chunk from a model) and the in-memory path below, so both call :func:`gram_update`.

Roofline: N·D²·2 flops for the products (symmetric; XLA computes the full square).

Eigenproblems: :func:`primal_spectra` takes the D×D eigendecomposition of G_c; :func:`dual_spectra` the N_c×N_c
one of X_c X_cᵀ for classes with fewer samples than dimensions (same nonzero spectrum, U = Xᵀ V Λ^{-1/2}).
Both solve the eigenproblem in float64 whatever the features' dtype (:func:`accurate_spectrum`): a float32 eigh has
absolute errors ≈ ε₃₂·λ₁, and the kept subspace's edge sits at eigenvalues ~10⁻⁴·λ₁ that lie ~10⁻⁶·λ₁ apart (the
uncentred mean direction dominates λ₁), so a float32 eigh rotates the basis across the edge by a few percent; the
float32 Gram itself (relative error ≈ 10⁻⁶) is accurate enough (docs/methods.md, "Precision").
"""
from __future__ import annotations

from typing import NamedTuple

import functools

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST


class GramState(NamedTuple):
    """Running per-class moments (add a leading member axis by stacking)."""

    gram: jax.Array  # [C, D, D] float32/float64 uncentred second moments
    count: jax.Array  # [C] int32 samples seen per class
    sums: jax.Array  # [C, D] sum of the samples of each class


class ChunkSchedule(NamedTuple):
    """Class-sorted, class-pure chunks of sample indices (host arrays; leading member axis optional)."""

    index: np.ndarray  # [..., S, B] int32 row indices, -1 = padding
    chunk_class: np.ndarray  # [..., S] int32 class of each chunk


def gram_init(num_classes: int, dim: int, dtype=jnp.float32) -> GramState:
    """Zero accumulators for ``num_classes`` classes of ``dim``-wide activations."""
    return GramState(jnp.zeros((num_classes, dim, dim), dtype), jnp.zeros((num_classes,), jnp.int32),
                     jnp.zeros((num_classes, dim), dtype))


def gram_update(state: GramState, rows: jax.Array, chunk_class: jax.Array, valid: jax.Array) -> GramState:
    """Add one class-pure chunk. ``rows`` [B, D] (padding rows are zeroed here), ``valid`` [B] bool."""
    rows = jnp.where(valid[:, None], rows, 0).astype(state.gram.dtype)
    update = jnp.matmul(rows.T, rows, precision=HIGHEST)
    return GramState(
        state.gram.at[chunk_class].add(update),
        state.count.at[chunk_class].add(valid.sum(dtype=jnp.int32)),
        state.sums.at[chunk_class].add(rows.sum(0)),
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


@functools.partial(jax.jit, static_argnames=("num_classes", "dim", "shared"))
def accumulate_members(features, schedule: ChunkSchedule, num_classes: int, dim: int, shared: bool) -> GramState:
    """:func:`accumulate` for every member: features [N, D] (``shared``) or [M, N, D], schedule [M, S, B]."""
    init = gram_init(num_classes, dim, features.dtype)
    one = lambda x, index, chunk_class: accumulate(init, x, ChunkSchedule(index, chunk_class))  # noqa: E731
    return jax.vmap(one, in_axes=(None if shared else 0, 0, 0))(features, schedule.index, schedule.chunk_class)


# --------------------------------------------------------------------------------------------- eigenproblems


@jax.jit
def spectrum(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Descending eigenvalues [..., D] and matching eigenvector columns [..., D, D] of symmetric ``gram``."""
    values, vectors = jnp.linalg.eigh(gram, symmetrize_input=False)  # LAPACK reads one triangle
    return values[..., ::-1], vectors[..., ::-1]


def accurate_spectrum(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`spectrum` solved in float64 and returned in ``gram``'s dtype (float32 in fast mode)."""
    with jax.enable_x64(True):
        values, vectors = spectrum(jnp.asarray(gram, jnp.float64))
        return values.astype(gram.dtype), vectors.astype(gram.dtype)


@jax.jit
def _dual_kernel(rows: jax.Array) -> jax.Array:
    return jnp.matmul(rows, jnp.swapaxes(rows, 1, 2), precision=HIGHEST)


@jax.jit
def _dual_basis(rows: jax.Array, values: jax.Array, vectors: jax.Array) -> tuple[jax.Array, jax.Array]:
    # U = Xᵀ V Λ^{-1/2}; directions with (numerically) zero eigenvalue are not spanned by the class.
    tol = values[:, :1] * rows.shape[-1] * jnp.finfo(rows.dtype).eps
    scale = jnp.where(values > tol, jax.lax.rsqrt(jnp.maximum(values, tol)), 0)
    basis = jnp.matmul(jnp.swapaxes(rows, 1, 2), vectors, precision=HIGHEST) * scale[:, None, :]
    return jnp.maximum(values, 0), basis


def dual_spectrum(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Dual problem for rows [P, Nmax, D] (zero-padded): eigenvalues [P, Nmax] and unit U columns [P, D, Nmax]."""
    return _dual_basis(rows, *accurate_spectrum(_dual_kernel(rows)))


class ClassSpectra(NamedTuple):
    """Eigenproblems of selected (member, class) pairs P; ``values``/``vectors`` are None when P is empty."""

    member: np.ndarray  # [P] int
    cls: np.ndarray  # [P] int
    values: jax.Array | None  # [P, R] descending eigenvalues
    vectors: jax.Array | None  # [P, D, R] unit eigenvector columns


def primal_spectra(features, shared: bool, labels, selected, num_classes: int, chunk_size: int) -> ClassSpectra:
    """D×D eigenproblems of the Grams of the ``selected`` [M, C] pairs; features [N, D] or [M, N, D]."""
    pm, pc = np.nonzero(selected)
    if len(pm) == 0:
        return ClassSpectra(pm, pc, None, None)
    keep = selected[np.arange(len(labels))[:, None], labels]  # [M, N] samples of selected classes
    schedule = chunk_schedule(labels, num_classes, chunk_size, keep=keep)
    grams = accumulate_members(features, schedule, num_classes, features.shape[-1], shared)
    return ClassSpectra(pm, pc, *accurate_spectrum(grams.gram[pm, pc]))


def dual_spectra(features, shared: bool, labels, counts, selected) -> ClassSpectra:
    """N_c×N_c eigenproblems (:func:`dual_spectrum`) of the ``selected`` [M, C] non-empty pairs."""
    dm, dc = np.nonzero(selected)
    if len(dm) == 0:
        return ClassSpectra(dm, dc, None, None)
    longest = int(counts[dm, dc].max())
    index = np.full((len(dm), longest), -1, np.int64)
    for i, (m, c) in enumerate(zip(dm, dc)):
        rows_of_c = np.flatnonzero(labels[m] == c)
        index[i, : len(rows_of_c)] = rows_of_c
    safe = np.maximum(index, 0)
    rows = features[safe] if shared else features[dm[:, None], safe]
    rows = jnp.where(jnp.asarray(index >= 0)[..., None], rows, 0)
    return ClassSpectra(dm, dc, *dual_spectrum(rows))
