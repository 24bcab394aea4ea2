"""Nearest class mean (NCM) for ONE member: cosine similarity to the *uncentred* class means.

A class with no samples or a zero mean vector is never predicted; an all-zero sample scores 0 for every fitted
class, so it goes to the lowest-index fitted class (ties → lowest index). Fit N·D·C·2 flops (one one-hot product);
scoring T·D·C·2. Pure and undecorated; :mod:`jaxmem.probes.over_members` adds the member axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmem.probes.gram import HIGHEST, GramState
from jaxmem.probes.moments import ClassMoments, class_moments


class NcmProbe(NamedTuple):
    """One member's NCM; stacked, every field gains a leading member axis ``[M, ...]``."""

    directions: jax.Array  # [C, D] unit class means (0 for an empty class or a zero mean)
    valid: jax.Array  # [C] bool: the class has samples and a non-zero mean


def fit(features: jax.Array, labels: jax.Array, num_classes: int) -> NcmProbe:
    """Unit class means of ``features`` [N, D] float32 under ``labels`` [N] in [0, num_classes)."""
    return fit_from_moments(class_moments(features, labels, num_classes))


def fit_from_moments(moments: ClassMoments) -> NcmProbe:
    """NCM from the class counts and means (shared with LDA and QDA by the probing engine)."""
    norms = jnp.linalg.norm(moments.means, axis=-1)
    valid = (moments.counts > 0) & (norms > 0)
    directions = jnp.where(valid[:, None], moments.means / jnp.where(valid, norms, 1)[:, None], 0)
    return NcmProbe(directions, valid)


def fit_from_gram(state: GramState) -> NcmProbe:
    """NCM from streamed class sums and counts (the Grams are not needed); the sums are used in float32."""
    counts, sums = state.count.astype(jnp.float32), state.sums.astype(jnp.float32)
    return fit_from_moments(ClassMoments(counts, sums / jnp.maximum(counts, 1)[:, None]))


def scores(probe: NcmProbe, features: jax.Array) -> jax.Array:
    """Cosine similarity [T, C] of ``features`` [T, D] to each class mean; −inf for a class never predicted."""
    norms = jnp.linalg.norm(features, axis=-1, keepdims=True)
    cosine = jnp.matmul(features, probe.directions.T, precision=HIGHEST) / jnp.where(norms > 0, norms, 1)
    return jnp.where(probe.valid, cosine, -jnp.inf)


__all__ = ["NcmProbe", "fit", "fit_from_gram", "fit_from_moments", "scores"]
