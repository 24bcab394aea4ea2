"""Quadratic discriminant analysis (QDA) for ONE member, as scikit-learn's ``QuadraticDiscriminantAnalysis()``.

reg_param = 0, maximum-likelihood covariance per class, priors = class frequencies. Per class the covariance
eigenvalues (= S²/N_c from the SVD of the centred class rows) give ``rank`` = #{variance > tol = 1e-4};
``rank_deficient`` flags a class with rank < D. scikit-learn 1.9 refuses such data (``LinAlgError``; older versions
warned "Variables are collinear" and returned NaN or garbage). Here every variance is floored at D·eps·λ_max of its
class (the all-zero covariance of a one-sample class at the smallest normal float), so the scores stay finite, but
a deficient class's score is dominated by distance off its affine span divided by that floor: **QDA collapses on
wide layers** (D ≥ N_c makes every class deficient) and its accuracy there measures that artefact, not a Gaussian
model. Report the flag with it. An empty class scores −inf (ties → lowest index).

Fit N·D² + C·D³; scoring T·C·D²·2 flops, ``chunk`` rows at a time (chunk·C·D floats). Pure and undecorated;
:mod:`jaxmem.probes.over_members` adds the member axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmem.probes.base import check_chunk
from jaxmem.probes.gram import HIGHEST, GramState
from jaxmem.probes.moments import (DISCRIMINANT_TOL, ClassMoments, centred_from_gram, centred_scatter,
                                   class_moments, numerical_floor)


class QdaProbe(NamedTuple):
    """One member's QDA; stacked, every field gains a leading member axis ``[M, ...]``."""

    means: jax.Array  # [C, D] class means
    whitening: jax.Array  # [C, D, D] covariance eigenvectors (columns) times variance^(-1/2)
    offset: jax.Array  # [C] −½·Σ log variance + log prior (−inf for an empty class)
    rank: jax.Array  # [C] int32 covariance eigenvalues above tol
    rank_deficient: jax.Array  # [C] bool: a class with samples whose covariance has rank < D


def fit(features: jax.Array, labels: jax.Array, num_classes: int, *, chunk_size: int = 512) -> QdaProbe:
    """QDA of ``features`` [N, D] float32 under ``labels`` [N]; ``chunk_size``: rows per class-pure chunk
    of the per-class scatters."""
    return fit_from_moments(features, labels, class_moments(features, labels, num_classes), chunk_size=chunk_size)


def fit_from_moments(features: jax.Array, labels: jax.Array, moments: ClassMoments, *,
                     chunk_size: int = 512) -> QdaProbe:
    """QDA from the class moments the probing engine shares (the per-class scatters are accumulated here)."""
    scatter = centred_scatter(features, labels, moments, per_class=True, chunk_size=chunk_size)
    return fit_from_scatter(moments, scatter)


def fit_from_gram(state: GramState) -> QdaProbe:
    """QDA from one member's streamed moments (:func:`~jaxmem.probes.moments.centred_from_gram`)."""
    return fit_from_scatter(*centred_from_gram(state, per_class=True))


def fit_from_scatter(moments: ClassMoments, scatter: jax.Array) -> QdaProbe:
    """Per-class Gaussians from the class moments and the centred scatters [C, D, D]."""
    counts, means = moments
    covariance = scatter / jnp.maximum(counts, 1)[:, None, None]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
    floor = jnp.maximum(numerical_floor(eigenvalues), jnp.finfo(eigenvalues.dtype).tiny)
    rank = jnp.sum(eigenvalues > jnp.maximum(DISCRIMINANT_TOL, floor[:, None]), -1).astype(jnp.int32)
    variances = jnp.maximum(eigenvalues, floor[:, None])
    whitening = jnp.where((counts > 0)[:, None, None], eigenvectors * jax.lax.rsqrt(variances)[:, None, :], 0)
    offset = -0.5 * jnp.sum(jnp.log(variances), -1) + jnp.log(counts / counts.sum())
    deficient = (counts > 0) & (rank < means.shape[-1])
    return QdaProbe(means, whitening, offset, rank, deficient)


def scores(probe: QdaProbe, features: jax.Array, *, chunk: int = 256) -> jax.Array:
    """Log posterior up to a constant [T, C] of ``features`` [T, D], ``chunk`` rows at a time."""

    def score_row(h):  # [D] -> [C]; lax.map vmaps it over a chunk of rows
        whitened = jnp.einsum("cd,cde->ce", h - probe.means, probe.whitening, precision=HIGHEST)
        return probe.offset - 0.5 * jnp.sum(whitened**2, -1)

    return jax.lax.map(score_row, features, batch_size=min(check_chunk(chunk), max(features.shape[0], 1)))


__all__ = ["QdaProbe", "fit", "fit_from_gram", "fit_from_moments", "fit_from_scatter", "scores"]
