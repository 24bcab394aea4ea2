"""Per-class counts, means and centred scatters of ONE member: what NCM, LDA and QDA are functions of.

Pure and undecorated; :mod:`jaxmem.probes.over_members` adds the member axis. Everything runs in float32 with
full-precision (HIGHEST) matmuls, except :func:`centred_from_gram`, which works in the Gram's dtype.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmem.probes.gram import HIGHEST, ChunkSchedule, GramState, gram_init, gram_update

DISCRIMINANT_TOL = 1e-4  # scikit-learn's default ``tol`` of LDA (singular values) and QDA (variances)


class ClassMoments(NamedTuple):
    """One member's class counts and means; stacked, every field gains a leading member axis ``[M, ...]``."""

    counts: jax.Array  # [C] float32 training samples per class
    means: jax.Array  # [C, D] float32 class means (0 for an empty class)


def class_moments(features: jax.Array, labels: jax.Array, num_classes: int) -> ClassMoments:
    """Counts and means of ``features`` [N, D] per class of ``labels`` [N] (one one-hot product, N·C·D·2 flops)."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)  # [N, C]
    counts = jnp.bincount(labels, length=num_classes).astype(features.dtype)
    sums = jnp.matmul(one_hot.T, features, precision=HIGHEST)
    return ClassMoments(counts, sums / jnp.maximum(counts, 1)[:, None])


def _constant_features(features: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """[C, D] bool: the feature takes one value over the class (its centred rows are then exactly 0)."""
    high = jax.ops.segment_max(features, labels, num_segments=num_classes)
    return high == jax.ops.segment_min(features, labels, num_segments=num_classes)


def class_chunks(labels: jax.Array, num_classes: int, chunk_size: int) -> ChunkSchedule:
    """:func:`~jaxmem.probes.gram.chunk_schedule` of one member's ``labels`` [N], traceable: the same class-pure
    chunks in the same order (class by class, rows in index order, -1 padding), then all-padding chunks of class 0
    up to the static count ⌈N/B⌉ + C."""
    n = labels.shape[0]
    counts = jnp.bincount(labels, length=num_classes)
    chunks = -(-counts // chunk_size)
    chunk_end = jnp.cumsum(chunks)  # [C] one past each class's last chunk
    step = jnp.arange(-(-n // chunk_size) + num_classes)
    chunk_class = jnp.searchsorted(chunk_end, step, side="right")  # C past the last chunk
    c = jnp.minimum(chunk_class, num_classes - 1)
    position = (step - chunk_end[c] + chunks[c])[:, None] * chunk_size + jnp.arange(chunk_size)  # [S, B] in class
    valid = (chunk_class < num_classes)[:, None] & (position < counts[c][:, None])
    row = (jnp.cumsum(counts) - counts)[c][:, None] + position  # in the class-sorted order
    index = jnp.where(valid, jnp.argsort(labels, stable=True)[jnp.minimum(row, n - 1)], -1)
    return ChunkSchedule(index.astype(jnp.int32), jnp.where(chunk_class < num_classes, chunk_class, 0))


def centred_scatter(features: jax.Array, labels: jax.Array, moments: ClassMoments, *, per_class: bool,
                    chunk_size: int) -> jax.Array:
    """Σ (h − μ_y)(h − μ_y)ᵀ per class [C, D, D], or summed over classes [D, D].

    Rows are centred and added one class-pure chunk of ``chunk_size`` rows at a time (:func:`class_chunks`), so
    memory is B·D beyond the result and the work N·D² plus at most C·B padding rows. Features constant over a class
    centre to exactly 0 there (μ_y, a float mean, may miss the value).
    """
    num_classes = moments.means.shape[0]
    constant = _constant_features(features, labels, num_classes)
    schedule = class_chunks(labels, num_classes, chunk_size)
    state = gram_init(num_classes if per_class else 1, features.shape[-1], features.dtype)

    def step(state, chunk):
        rows_index, c = chunk
        valid = rows_index >= 0
        rows = jnp.where(constant[c], 0, features[jnp.where(valid, rows_index, 0)] - moments.means[c])
        return gram_update(state, rows, c if per_class else 0, valid), None

    state, _ = jax.lax.scan(step, state, schedule)
    return state.gram if per_class else state.gram[0]


def centred_from_gram(state: GramState, *, per_class: bool) -> tuple[ClassMoments, jax.Array]:
    """Float32 moments and centred scatter (per class [C, D, D] or summed [D, D]) from one member's streamed Gram.

    G_c − S_c S_cᵀ/N_c is formed in the Gram's dtype (float64 Grams for exact agreement; in float32 it loses the
    digits by which a class mean dominates its spread), then cast to float32. A feature whose centred variance in
    a class lies within the rounding bound N_c·eps·(G_c)_ii of the accumulated sums (a feature constant over the
    class, e.g. a never-lit pixel after normalisation) gets exactly zero scatter, as :func:`centred_scatter` does.
    """
    gram, sums = state.gram, state.sums
    counts = state.count.astype(gram.dtype)
    means = sums / jnp.maximum(counts, 1)[:, None]
    scatter = gram - means[:, :, None] * sums[:, None, :]
    rounding = counts[:, None] * jnp.finfo(gram.dtype).eps * jnp.diagonal(gram, axis1=-2, axis2=-1)
    constant = jnp.diagonal(scatter, axis1=-2, axis2=-1) <= rounding  # [C, D]
    scatter = jnp.where(constant[:, :, None] | constant[:, None, :], 0, scatter)
    if not per_class:
        scatter = scatter.sum(0)
    return ClassMoments(counts.astype(jnp.float32), means.astype(jnp.float32)), scatter.astype(jnp.float32)


def numerical_floor(eigenvalues: jax.Array) -> jax.Array:
    """D·eps·λ_max over the last axis: eigenvalues below it are zero to float precision."""
    dim = eigenvalues.shape[-1]
    return dim * jnp.finfo(eigenvalues.dtype).eps * eigenvalues.max(-1)


__all__ = ["DISCRIMINANT_TOL", "ClassMoments", "centred_from_gram", "centred_scatter", "class_chunks",
           "class_moments", "numerical_floor"]
