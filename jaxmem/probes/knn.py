"""k nearest neighbours (k = 5 in the registry) under cosine distance for ONE member, with uniform votes.

The most-voted class wins; ties between equally voted classes go to the smallest label (as scikit-learn's
``KNeighborsClassifier(metric="cosine", algorithm="brute")``); neighbours at equal distance are taken lowest
training index first. An all-zero vector is at cosine distance 1 from everything (scikit-learn's convention).
The fit keeps the training rows; the scores are the votes. The search does not depend on labels, so one
:func:`neighbours` serves every grouping (:func:`vote`). Queries are searched ``chunk`` at a time, so memory is
chunk·N floats beyond the inputs; cost T·N·D·2 flops plus a top-k over N per query.

Pure and undecorated; :mod:`jaxmem.probes.over_members` adds the member axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes.base import check_chunk
from jaxmem.probes.gram import HIGHEST


class KnnProbe(NamedTuple):
    """One member's k-NN keeps its training set; stacked, ``one_hot`` gains a leading member axis ``[M, ...]``
    (``features`` too, unless every member shares them)."""

    features: jax.Array  # [N, D] training rows
    one_hot: jax.Array  # [N, C] bool training labels


def fit(features: jax.Array, labels: jax.Array, num_classes: int) -> KnnProbe:
    """Keep the training rows ``features`` [N, D] and their one-hot ``labels`` [N]."""
    return KnnProbe(features, jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_))


def neighbours(train: jax.Array, queries: jax.Array, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """Indices int32 [T, k] of the k nearest rows of ``train`` [N, D] (cosine) per row of ``queries`` [T, D]."""
    n = train.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the number of training samples), got {k!r}")
    chunk = check_chunk(chunk)
    norms = jnp.linalg.norm(train, axis=-1)
    inverse_norms = jnp.where(norms > 0, 1 / jnp.where(norms > 0, norms, 1), 0)

    def nearest(query):  # [D] -> [k]; lax.map vmaps it over a chunk, so similarities are [chunk, N] at most
        # cos(q, t)·‖q‖: the same order over t as the cosine similarity (zero rows: similarity 0, distance 1)
        similarity = jnp.matmul(train, query, precision=HIGHEST) * inverse_norms
        return jax.lax.top_k(similarity, int(k))[1]  # equal similarities: lowest index first

    return jax.lax.map(nearest, queries, batch_size=min(chunk, max(queries.shape[0], 1)))


def vote(probe: KnnProbe, nearest: jax.Array) -> jax.Array:
    """Votes int32 [T, C] of the neighbours ``nearest`` [T, k] (:func:`neighbours`) under the probe's labels."""
    return probe.one_hot[nearest].sum(-2, dtype=jnp.int32)  # argmax over equal votes: smallest label


def scores(probe: KnnProbe, queries: jax.Array, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """Votes int32 [T, C] of the k nearest training rows of each of ``queries`` [T, D]."""
    return vote(probe, neighbours(probe.features, queries, k=k, chunk=chunk))


__all__ = ["KnnProbe", "fit", "neighbours", "scores", "vote"]
