"""Linear discriminant analysis (LDA) for ONE member, as scikit-learn's ``LinearDiscriminantAnalysis()``.

The svd solver, priors = class frequencies, tol = 1e-4, the scaling of scikit-learn 1.9. The SVD of the
std-scaled, class-centred data is taken as the eigendecomposition of its D×D scatter (the shared within-class
covariance), accumulated in class-pure chunks after centring. A direction is kept when its singular value exceeds
tol, as in scikit-learn, *and* its eigenvalue exceeds D·eps·λ_max (numpy's ``pinv(…, hermitian=True)`` cut-off:
below it float32 cannot tell it from zero). So D > N gives a pseudo-inverse, never NaN. An empty class scores −inf
(ties → lowest index). Fit N·D² + D³; scoring T·D·C·2 flops.

Pure and undecorated; :mod:`jaxmem.probes.over_members` adds the member axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmem.probes.gram import HIGHEST, GramState
from jaxmem.probes.moments import (DISCRIMINANT_TOL, ClassMoments, centred_from_gram, centred_scatter,
                                   class_moments, numerical_floor)


class LdaProbe(NamedTuple):
    """One member's LDA; stacked, every field gains a leading member axis ``[M, ...]``."""

    coef: jax.Array  # [C, D] decision value = coef·h + intercept
    intercept: jax.Array  # [C] (−inf for an empty class)
    rank: jax.Array  # [] int32 directions kept from the within-class scatter


def fit(features: jax.Array, labels: jax.Array, num_classes: int, *, chunk_size: int = 512) -> LdaProbe:
    """LDA of ``features`` [N, D] float32 under ``labels`` [N]; ``chunk_size``: rows per class-pure chunk
    of the within-class scatter."""
    return fit_from_moments(features, labels, class_moments(features, labels, num_classes), chunk_size=chunk_size)


def fit_from_moments(features: jax.Array, labels: jax.Array, moments: ClassMoments, *,
                     chunk_size: int = 512) -> LdaProbe:
    """LDA from the class moments the probing engine shares (the within-class scatter is accumulated here)."""
    scatter = centred_scatter(features, labels, moments, per_class=False, chunk_size=chunk_size)
    return fit_from_scatter(moments, scatter)


def fit_from_gram(state: GramState) -> LdaProbe:
    """LDA from one member's streamed moments (:func:`~jaxmem.probes.moments.centred_from_gram`)."""
    return fit_from_scatter(*centred_from_gram(state, per_class=False))


def fit_from_scatter(moments: ClassMoments, scatter: jax.Array) -> LdaProbe:
    """scikit-learn's svd solver from the class moments and the within-class scatter [D, D]."""
    counts, means = moments
    n = counts.sum()
    num_present = jnp.sum(counts > 0).astype(counts.dtype)
    priors = counts / n
    overall_mean = jnp.matmul(priors, means, precision=HIGHEST)
    std = jnp.sqrt(jnp.diagonal(scatter) / n)
    std = jnp.where(std == 0, 1, std)
    # 1) within-class whitening: eigh of the scatter of sqrt(1/N)·Xc/std = (SVD of that matrix)²
    scaled = scatter / n / jnp.outer(std, std)
    eigenvalues, eigenvectors = jnp.linalg.eigh(scaled)
    singular = jnp.sqrt(jnp.maximum(eigenvalues, 0))
    keep = (singular > DISCRIMINANT_TOL) & (eigenvalues > numerical_floor(eigenvalues))
    scalings = eigenvectors / std[:, None] * jnp.where(keep, 1 / jnp.where(keep, singular, 1), 0)
    # 2) between-class directions among the whitened, prior-weighted centred means
    between_scale = jnp.where(num_present > 1, 1 / jnp.maximum(num_present - 1, 1), 1.0)
    centred_means = means - overall_mean
    weighted = jnp.sqrt(n * priors * between_scale)[:, None] * centred_means
    _, singular2, vt = jnp.linalg.svd(jnp.matmul(weighted, scalings, precision=HIGHEST), full_matrices=False)
    keep2 = singular2 > DISCRIMINANT_TOL * singular2[0]
    directions = jnp.matmul(scalings, vt.T * keep2, precision=HIGHEST)  # [D, min(C, D)]
    projected = jnp.matmul(centred_means, directions, precision=HIGHEST)
    coef = jnp.matmul(projected, directions.T, precision=HIGHEST)
    shift = jnp.matmul(coef, overall_mean, precision=HIGHEST)
    intercept = -0.5 * jnp.sum(projected**2, -1) + jnp.log(priors) - shift
    return LdaProbe(coef, intercept, keep.sum().astype(jnp.int32))


def scores(probe: LdaProbe, features: jax.Array) -> jax.Array:
    """Decision values (log posterior up to a constant) [T, C] of ``features`` [T, D]."""
    return jnp.matmul(features, probe.coef.T, precision=HIGHEST) + probe.intercept


__all__ = ["LdaProbe", "fit", "fit_from_gram", "fit_from_moments", "fit_from_scatter", "scores"]
