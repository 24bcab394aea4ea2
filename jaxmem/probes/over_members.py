"""The member axis of the baseline probes, added in one place: every ``jax.vmap`` of NCM, k-NN, LDA, QDA and
logistic regression is here.

Each family (:mod:`.ncm`, :mod:`.knn`, :mod:`.lda`, :mod:`.qda`, :mod:`.logreg`) is written for ONE member. This
module validates the inputs at the boundary and maps the one-member functions over a leading member axis, one jit
per function: training features are [N, D], shared by all members (``in_axes=None``, never copied M times), or
[M, N, D]; labels [N] or [M, N] integers in [0, C). A fitted probe's fields gain a leading [M] axis when the
features or the labels have one. Scored features are [T, D] (shared) or [M, T, D] and give [T, C] or [M, T, C];
a probe without a member axis scores [T, D] only. Chunked scoring (QDA, the k-NN search) stays chunked per member,
so memory is M·chunk·C·D (QDA) or M·chunk·N (k-NN) floats beyond the inputs. The registry
(:mod:`jaxmem.probes.registry`) builds every baseline's protocol from these functions; the probing engine shares
:func:`class_moments` between NCM, LDA and QDA.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes import knn, logreg, moments
from jaxmem.probes.base import check_finite, precision_context, with_member_axis


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _mapped(function: Callable, options: tuple, in_axes, out_axes, *args):
    """``function(*args, **dict(options))`` vmapped over the ``in_axes`` of ``args``; a plain call when no
    argument has a member axis (``in_axes`` None)."""
    one = functools.partial(function, **dict(options))
    if in_axes is None:
        return one(*args)
    return jax.vmap(one, in_axes=in_axes, out_axes=out_axes)(*args)


class Training(NamedTuple):
    """Validated training inputs of every member with their class moments (NCM, LDA and QDA start from them)."""

    features: jax.Array  # [N, D] (shared) or [M, N, D] float32
    labels: np.ndarray  # [M, N] int
    shared: bool  # features without a member axis, shared by all members
    has_member_axis: bool  # the caller's features or labels had one
    num_classes: int
    moments: moments.ClassMoments  # counts [M, C], means [M, C, D]


def _inputs(features, labels, num_classes: int) -> tuple[jax.Array, bool, np.ndarray, bool]:
    """(features float32, shared, labels [M, N], has_member_axis) after validation."""
    has_member_axis = np.ndim(features) == 3 or np.ndim(labels) == 2
    shared, labels = with_member_axis(features, labels, num_classes)
    if labels.shape[1] == 0:
        raise ValueError("features and labels hold no samples; a probe needs at least one")
    features = jnp.asarray(features, jnp.float32)
    check_finite(features)
    return features, shared, labels, has_member_axis


def _unbatched(probe, has_member_axis: bool):
    return probe if has_member_axis else jax.tree.map(lambda a: a[0], probe)


def fit(fit_one: Callable, features, labels, num_classes: int, **options):
    """``fit_one(features [N, D], labels [N], num_classes, **options)`` (e.g. :func:`.lda.fit`) for every member."""
    features, shared, labels, has_member_axis = _inputs(features, labels, num_classes)
    probe = _mapped(fit_one, (("num_classes", num_classes), *options.items()), (None if shared else 0, 0), 0,
                    features, jnp.asarray(labels))
    return _unbatched(probe, has_member_axis)


def class_moments(features, labels, num_classes: int) -> Training:
    """Validate a fit's inputs and take every member's class counts and means (:func:`.moments.class_moments`)."""
    features, shared, labels, has_member_axis = _inputs(features, labels, num_classes)
    stats = _mapped(moments.class_moments, (("num_classes", num_classes),), (None if shared else 0, 0), 0,
                    features, jnp.asarray(labels))
    return Training(features, labels, shared, has_member_axis, num_classes, stats)


def fit_from_moments(from_moments_one: Callable, training: Training, **options):
    """``from_moments_one(moments)`` (:func:`.ncm.fit_from_moments`), or with ``options`` (the scatter's
    ``chunk_size``) ``from_moments_one(features, labels, moments, **options)`` (LDA, QDA), for every member."""
    if options:
        args = (training.features, jnp.asarray(training.labels), training.moments)
        in_axes = (None if training.shared else 0, 0, 0)
    else:
        args, in_axes = (training.moments,), (0,)
    return _unbatched(_mapped(from_moments_one, tuple(options.items()), in_axes, 0, *args), training.has_member_axis)


def fit_from_gram(from_gram_one: Callable, state):
    """``from_gram_one(state)`` (e.g. :func:`.lda.fit_from_gram`) for a streamed
    :class:`~jaxmem.probes.gram.GramState` with fields [M, C, ...] (or [C, ...], one member); float64 Grams are
    centred in float64."""
    with precision_context(np.asarray(state.gram).dtype == np.float64):
        return _mapped(from_gram_one, (), 0 if np.ndim(state.gram) == 4 else None, 0, state)


def _check_queries(features, dim: int, members: int | None) -> jax.Array:
    """Scored ``features`` [T, D] or [M, T, D] as float32; ``members``: the probe's M (None: no member axis)."""
    features = jnp.asarray(features, jnp.float32)
    if features.ndim not in (2, 3) or features.shape[-1] != dim:
        raise ValueError(f"features must be [T, {dim}] or [M, T, {dim}], got shape {features.shape}")
    if features.ndim == 3 and members is None:
        raise ValueError("a probe without a member axis scores [T, D] features")
    if features.ndim == 3 and features.shape[0] != members:
        raise ValueError(f"probe has {members} members but features have {features.shape[0]}")
    return features


def scores(score_one: Callable, probe, features, **options) -> jax.Array:
    """``score_one(probe, features [T, D], **options)`` (NCM, LDA, QDA, logistic regression) for every member.

    Each of these probes' first field is one member's [C, D] matrix ([D, C] for logistic regression's kernel), so
    a third axis is the members'.
    """
    first = probe[0]
    members = first.shape[0] if first.ndim == 3 else None
    dim = first.shape[-2] if isinstance(probe, logreg.LogRegProbe) else first.shape[-1]
    features = _check_queries(features, dim, members)
    in_axes = None if members is None else (0, None if features.ndim == 2 else 0)
    return _mapped(score_one, tuple(options.items()), in_axes, 0, probe, features)


# ------------------------------------------------------------------------------------- k-NN, logistic regression


def _axis(array) -> int | None:
    """0 for a stack of members' [M, rows, ·] arrays, None for one [rows, ·] array shared by all."""
    return 0 if array.ndim == 3 else None


def knn_fit(features, labels, num_classes: int) -> knn.KnnProbe:
    """:func:`.knn.fit` for every member; training features shared by all members stay [N, D]."""
    features, shared, labels, has_member_axis = _inputs(features, labels, num_classes)
    out_axes = knn.KnnProbe(None if shared else 0, 0)
    probe = _mapped(knn.fit, (("num_classes", num_classes),), (None if shared else 0, 0), out_axes, features,
                    jnp.asarray(labels))
    return probe if has_member_axis else knn.KnnProbe(probe.features, probe.one_hot[0])


def knn_neighbours(train, features, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """:func:`.knn.neighbours` of ``features`` [T, D] or [M, T, D] among ``train`` [N, D] or [M, N, D]: int32
    [T, k] when both are shared, else [M, T, k]."""
    train = jnp.asarray(train, jnp.float32)
    members = train.shape[0] if train.ndim == 3 else None
    queries = jnp.asarray(features, jnp.float32)
    if queries.ndim not in (2, 3) or queries.shape[-1] != train.shape[-1]:
        raise ValueError(f"features must be [T, {train.shape[-1]}] or [M, T, {train.shape[-1]}], "
                         f"got shape {queries.shape}")
    if members is not None and queries.ndim == 3 and queries.shape[0] != members:
        raise ValueError(f"training has {members} members but features have {queries.shape[0]}")
    in_axes = None if train.ndim == 2 and queries.ndim == 2 else (_axis(train), _axis(queries))
    return _mapped(knn.neighbours, (("k", k), ("chunk", chunk)), in_axes, 0, train, queries)


def knn_vote(probe: knn.KnnProbe, nearest) -> jax.Array:
    """:func:`.knn.vote` of ``nearest`` [T, k] (shared) or [M, T, k] for every member: int32 [T, C] or
    [M, T, C]."""
    nearest = jnp.asarray(nearest)
    if probe.one_hot.ndim == 2 and nearest.ndim == 3:
        raise ValueError("a probe without a member axis votes with [T, k] neighbours")
    in_axes = None if probe.one_hot.ndim == 2 else (knn.KnnProbe(_axis(probe.features), 0), _axis(nearest))
    return _mapped(knn.vote, (), in_axes, 0, probe, nearest)


def knn_scores(probe: knn.KnnProbe, features, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """Votes int32 [T, C] or [M, T, C] of the k nearest training rows: one search (:func:`knn_neighbours`),
    then every member's vote."""
    members = probe.one_hot.shape[0] if probe.one_hot.ndim == 3 else None
    if np.ndim(features) == 3 and members is None:
        raise ValueError("a probe without a member axis scores [T, D] features")
    if np.ndim(features) == 3 and np.shape(features)[0] != members:
        raise ValueError(f"training has {members} members but features have {np.shape(features)[0]}")
    return knn_vote(probe, knn_neighbours(probe.features, features, k=k, chunk=chunk))


def knn_predict(train_features, train_labels, features, num_classes: int, k: int = 5, *, chunk: int = 512):
    """int32 predictions [T], or [M, T] when any input has a member axis, of the k-NN vote (argmax, ties →
    smallest label)."""
    probe = knn_fit(train_features, train_labels, num_classes)
    if probe.one_hot.ndim == 2 and np.ndim(features) == 3:  # one training set for every member's queries
        probe = probe._replace(one_hot=jnp.broadcast_to(probe.one_hot, (np.shape(features)[0], *probe.one_hot.shape)))
    return jnp.argmax(knn_scores(probe, features, k=k, chunk=chunk), axis=-1).astype(jnp.int32)


def logreg_fit(features, labels, num_classes: int, key, epochs: int = 20, batch_size: int = 128,
               learning_rate: float = 1e-3) -> logreg.LogRegProbe:
    """:func:`.logreg.fit` for every member.

    Args:
      features: [N, D] or [M, N, D]; labels: [N] or [M, N].
      key: one PRNG key shared by all members (same initialisation and batch order), or a stack [M] of keys.
      epochs, batch_size, learning_rate: the optimisation.

    Returns:
      A :class:`~jaxmem.probes.logreg.LogRegProbe`; ``losses`` [E] is each epoch's mean training loss.
    """
    features, shared, labels, has_member_axis = _inputs(features, labels, num_classes)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    key = jnp.asarray(key)
    key_ndim = 0 if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else 1
    if key.ndim not in (key_ndim, key_ndim + 1):
        raise ValueError(f"key must be one PRNG key or a stack [M] of keys, got shape {key.shape}")
    shared_key = key.ndim == key_ndim
    if not shared_key:
        if has_member_axis and key.shape[0] != labels.shape[0]:
            raise ValueError(f"key has {key.shape[0]} members but the training data has {labels.shape[0]}")
        labels = np.broadcast_to(labels, (key.shape[0], labels.shape[1]))
        has_member_axis = True
    options = (("num_classes", num_classes), ("epochs", int(epochs)), ("batch_size", int(batch_size)),
               ("learning_rate", float(learning_rate)))
    in_axes = (None if shared_key else 0, None if shared else 0, 0)
    return _unbatched(_mapped(logreg.fit, options, in_axes, 0, key, features, jnp.asarray(labels)), has_member_axis)


__all__ = ["Training", "class_moments", "fit", "fit_from_gram", "fit_from_moments", "knn_fit", "knn_neighbours",
           "knn_predict", "knn_scores", "knn_vote", "logreg_fit", "scores"]
