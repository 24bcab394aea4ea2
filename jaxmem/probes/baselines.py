"""The baseline probes besides MASC and the linear probe: NCM, k-NN, LDA, QDA and logistic regression.

Every probe is batched over a leading member axis exactly like :func:`jaxmem.probes.masc.fit`: training features
are [N, D] (shared by all members) or [M, N, D], labels [N] or [M, N] integers in [0, C); a fitted probe is a
NamedTuple pytree whose fields gain a leading [M] axis when the features or the labels have one; ``*_scores``
takes [T, D] (shared) or [M, T, D] features and returns [T, C] or [M, T, C], ``*_predict`` their argmax, int32
[T] or [M, T]. Everything runs in float32
with full-precision (HIGHEST) matmuls. Ties in a decision value go to the lowest class index. A class with no
training samples is never predicted (unless every class is empty, when class 0 is returned).

- NCM: cosine similarity to the *uncentred* class means. A class whose mean is the zero vector is never predicted;
  an all-zero sample scores 0 for every fitted class, so it goes to the lowest-index fitted class.
  Fit N·D·C (one one-hot matmul); scoring T·D·C.
- k-NN (k = 5): cosine distance, uniform votes; the most-voted class wins, ties between equally voted classes go to
  the smallest label (as scikit-learn's ``KNeighborsClassifier(metric="cosine", algorithm="brute")``); neighbours
  at equal distance are taken lowest training index first. An all-zero vector is at cosine distance 1 from
  everything (scikit-learn's convention). The fit keeps the training rows; the scores are the votes. Query rows
  are scored ``chunk`` at a time, so memory is
  M·chunk·N floats beyond the inputs; cost T·N·D·2 flops plus a top-k over N per query.
- LDA: scikit-learn's ``LinearDiscriminantAnalysis()`` (svd solver, priors = class frequencies, tol = 1e-4, the
  scaling of scikit-learn 1.9). The SVD of the std-scaled, class-centred data is taken as the eigendecomposition of
  its D×D scatter (the shared within-class covariance), accumulated in class-pure chunks after centring. A
  direction is kept when its singular value exceeds tol, as in scikit-learn, *and* its eigenvalue exceeds
  D·eps·λ_max (numpy's ``pinv(…, hermitian=True)`` cut-off: below it float32 cannot tell it from zero). So D > N
  gives a pseudo-inverse, never NaN. Fit N·D² + D³; scoring T·D·C.
- QDA: scikit-learn's ``QuadraticDiscriminantAnalysis()`` (reg_param = 0, maximum-likelihood covariance per class,
  priors = class frequencies). Per class the covariance eigenvalues (= S²/N_c from the SVD of the centred class
  rows) give ``rank`` = #{variance > tol = 1e-4}; ``rank_deficient`` flags a class with rank < D. scikit-learn
  1.9 refuses such data (``LinAlgError``; older versions warned "Variables are collinear" and returned NaN or
  garbage). Here every variance is floored at D·eps·λ_max of its class (the all-zero covariance of a one-sample
  class at the smallest normal float), so the scores stay finite, but a deficient class's score is dominated by
  distance off its affine span divided by that floor: **QDA collapses on wide layers** (D ≥ N_c makes every class
  deficient) and its accuracy there measures that artefact, not a Gaussian model. Report the flag with it.
  Fit N·D² + C·D³; scoring T·C·D²·2, ``chunk`` rows at a time.
- Logistic regression: one Dense(D→C) with bias (LeCun-normal kernel, zero bias, as Flax's Dense), softmax
  cross-entropy, Adam, 20 epochs of batch 128 reshuffled every epoch from the key (the last batch of an epoch is
  smaller), no feature scaling. The epoch loop is a ``lax.scan`` inside one jit, vmapped over members.
  Cost epochs·N·D·C·4 flops (logits and the kernel gradient; no gradient flows to the features).

NCM, LDA and QDA are functions of per-class counts, sums and second moments, so each also fits from a streamed
:class:`~jaxmem.probes.gram.GramState` (``*_fit_from_gram``): the centred scatter is then G_c − S_c S_cᵀ/N_c,
formed in the Gram's precision (float64 Grams for exact agreement; in float32 it loses the digits by which a class
mean dominates its spread). The registry of all probes is :mod:`jaxmem.probes.registry`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmem.probes.base import check_finite, precision_context, with_member_axis
from jaxmem.probes.gram import HIGHEST, GramState, chunk_schedule, gram_init, gram_update

DISCRIMINANT_TOL = 1e-4  # scikit-learn's default ``tol`` of LDA (singular values) and QDA (variances)


class NcmProbe(NamedTuple):
    """Nearest class mean; fields may carry a leading member axis [M, ...]."""

    directions: jax.Array  # [C, D] unit class means (0 for an empty class or a zero mean)
    valid: jax.Array  # [C] bool: the class has samples and a non-zero mean


class KnnProbe(NamedTuple):
    """k-NN keeps its training set; fields may carry a leading member axis [M, ...]."""

    features: jax.Array  # [N, D] training rows, shared by all members, or [M, N, D]
    one_hot: jax.Array  # [N, C] or [M, N, C] bool training labels


class LdaProbe(NamedTuple):
    """Linear discriminant analysis; fields may carry a leading member axis [M, ...]."""

    coef: jax.Array  # [C, D] decision value = coef·h + intercept
    intercept: jax.Array  # [C] (−inf for an empty class)
    rank: jax.Array  # [] int32 directions kept from the within-class scatter


class QdaProbe(NamedTuple):
    """Quadratic discriminant analysis; fields may carry a leading member axis [M, ...]."""

    means: jax.Array  # [C, D] class means
    whitening: jax.Array  # [C, D, D] covariance eigenvectors (columns) times variance^(-1/2)
    offset: jax.Array  # [C] −½·Σ log variance + log prior (−inf for an empty class)
    rank: jax.Array  # [C] int32 covariance eigenvalues above tol
    rank_deficient: jax.Array  # [C] bool: a class with samples whose covariance has rank < D


class LogRegProbe(NamedTuple):
    """Multinomial logistic regression; fields may carry a leading member axis [M, ...]."""

    kernel: jax.Array  # [D, C]
    bias: jax.Array  # [C]
    losses: jax.Array  # [E] mean training cross-entropy of each epoch


# ------------------------------------------------------------------------------------------- shared plumbing


def _training_inputs(features, labels, num_classes):
    """(features float32 [N, D] or [M, N, D], shared flag, labels [M, N] numpy, has_member_axis)."""
    has_member_axis = np.ndim(features) == 3 or np.ndim(labels) == 2
    shared, labels = with_member_axis(features, labels, num_classes)
    if labels.shape[1] == 0:
        raise ValueError("features and labels hold no samples; a probe needs at least one")
    features = jnp.asarray(features, jnp.float32)
    check_finite(features)
    return features, shared, labels, has_member_axis


def _unbatched(probe, has_member_axis):
    return probe if has_member_axis else jax.tree.map(lambda a: a[0], probe)


def _eval_features(features, dim):
    features = jnp.asarray(features, jnp.float32)
    if features.ndim not in (2, 3) or features.shape[-1] != dim:
        raise ValueError(f"features must be [T, {dim}] or [M, T, {dim}], got shape {features.shape}")
    return features


def _over_members(score_one):
    """Turn ``score_one(probe, features [T, D], *options)`` into a jitted scorer with an optional member axis."""

    @functools.partial(jax.jit, static_argnames=("members", "shared", "options"))
    def run(probe, features, members, shared, options):
        def one(p, x):
            return score_one(p, x, *options)

        if not members:
            return one(probe, features)
        return jax.vmap(one, in_axes=(0, None if shared else 0))(probe, features)

    def scores(probe, features, field_ndim, dim, options=()):
        members = probe[0].ndim > field_ndim
        features = _eval_features(features, dim)
        if not members and features.ndim == 3:
            raise ValueError("a probe without a member axis scores [T, D] features")
        if members and features.ndim == 3 and features.shape[0] != probe[0].shape[0]:
            raise ValueError(f"probe has {probe[0].shape[0]} members but features have {features.shape[0]}")
        return run(probe, features, members=members, shared=features.ndim == 2, options=options)

    return scores


def _argmax(scores):
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


def _check_chunk(chunk):
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


def _class_sums(features, labels, num_classes, shared):
    """Per-class counts [M, C] (host) and means [M, C, D] (0 for an empty class)."""
    counts = np.stack([np.bincount(y, minlength=num_classes) for y in labels])
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)  # [M, N, C]
    spec = "mnc,nd->mcd" if shared else "mnc,mnd->mcd"
    sums = jnp.einsum(spec, one_hot, features, precision=HIGHEST)
    return counts, sums / jnp.maximum(jnp.asarray(counts, features.dtype), 1)[..., None]


@functools.partial(jax.jit, static_argnames=("num_classes", "shared"))
def _constant_features(features, labels, num_classes, shared):
    """[M, C, D] bool: the feature takes one value over the class (its centred rows are then exactly 0)."""

    def one(x, y):
        high = jax.ops.segment_max(x, y, num_segments=num_classes)
        return high == jax.ops.segment_min(x, y, num_segments=num_classes)

    return jax.vmap(one, in_axes=(None if shared else 0, 0))(features, labels)


@functools.partial(jax.jit, static_argnames=("num_classes", "per_class", "shared"))
def _centred_scatter(features, means, constant, index, chunk_class, num_classes, per_class, shared):
    """Σ (h − μ_y)(h − μ_y)ᵀ per class [M, C, D, D], or summed over classes [M, D, D]; class-pure chunks.

    Features ``constant`` [M, C, D] in a class centre to exactly 0 there (μ_y, a float mean, may miss the value).
    """

    def one(x, mu, is_constant, member_index, member_class):
        state = gram_init(num_classes if per_class else 1, x.shape[-1], x.dtype)

        def step(state, chunk):
            rows_index, c = chunk
            valid = rows_index >= 0
            rows = jnp.where(is_constant[c], 0, x[jnp.where(valid, rows_index, 0)] - mu[c])
            return gram_update(state, rows, c if per_class else 0, valid), None

        state, _ = jax.lax.scan(step, state, (member_index, member_class))
        return state.gram if per_class else state.gram[0]

    return jax.vmap(one, in_axes=(None if shared else 0, 0, 0, 0, 0))(features, means, constant, index, chunk_class)


class ClassMoments(NamedTuple):
    """A fit's validated inputs with their per-class counts and means: what NCM needs, and LDA and QDA start from
    (one :func:`class_moments` serves all three)."""

    features: jax.Array  # [N, D] (shared) or [M, N, D] float32
    shared: bool
    labels: np.ndarray  # [M, N]
    has_member_axis: bool
    num_classes: int
    counts: np.ndarray  # [M, C]
    means: jax.Array  # [M, C, D] (0 for an empty class)


def class_moments(features, labels, num_classes: int) -> ClassMoments:
    """Validate a fit's inputs (features [N, D] or [M, N, D], labels [N] or [M, N]) and take the class means."""
    features, shared, labels, has_member_axis = _training_inputs(features, labels, num_classes)
    counts, means = _class_sums(features, labels, num_classes, shared)
    return ClassMoments(features, shared, labels, has_member_axis, num_classes, counts, means)


def _scatter(moments: ClassMoments, chunk_size, per_class):
    """The centred scatter of the class rows: per class [M, C, D, D] or pooled [M, D, D]."""
    m = moments
    schedule = chunk_schedule(m.labels, m.num_classes, chunk_size)
    constant = _constant_features(m.features, jnp.asarray(m.labels), num_classes=m.num_classes, shared=m.shared)
    return _centred_scatter(
        m.features, m.means, constant, jnp.asarray(schedule.index), jnp.asarray(schedule.chunk_class),
        num_classes=m.num_classes, per_class=per_class, shared=m.shared,
    )


def _centred_from_gram(state: GramState, per_class: bool):
    """(counts [M, C] float32, means [M, C, D], centred scatter [M, C, D, D] or summed [M, D, D], member axis).

    G_c − S_c S_cᵀ/N_c is formed in the Gram's dtype, then cast to float32. A feature whose centred variance in
    a class lies within the rounding bound N_c·eps·(G_c)_ii of the accumulated sums (a feature constant over the
    class, e.g. a never-lit pixel after normalisation) gets exactly zero scatter, as the in-memory fit computes.
    """
    has_member_axis = np.ndim(state.gram) == 4
    with precision_context(np.asarray(state.gram).dtype == np.float64):
        gram, sums = jnp.asarray(state.gram), jnp.asarray(state.sums)
        counts = jnp.asarray(state.count).astype(gram.dtype)
        if not has_member_axis:
            gram, sums, counts = gram[None], sums[None], counts[None]
        means = sums / jnp.maximum(counts, 1)[..., None]
        scatter = gram - means[..., :, None] * sums[..., None, :]
        rounding = counts[..., None] * jnp.finfo(gram.dtype).eps * jnp.diagonal(gram, axis1=-2, axis2=-1)
        constant = jnp.diagonal(scatter, axis1=-2, axis2=-1) <= rounding  # [M, C, D]
        scatter = jnp.where(constant[..., :, None] | constant[..., None, :], 0, scatter)
        if not per_class:
            scatter = scatter.sum(-3)
        moments = [jnp.asarray(a, jnp.float32) for a in (counts, means, scatter)]
    return (*moments, has_member_axis)


def _numerical_floor(eigenvalues):
    """D·eps·λ_max over the last axis: eigenvalues below it are zero to float precision."""
    dim = eigenvalues.shape[-1]
    return dim * jnp.finfo(eigenvalues.dtype).eps * eigenvalues.max(-1)


# ------------------------------------------------------------------------------------------------------ NCM


def ncm_fit(features, labels, num_classes: int) -> NcmProbe:
    """Nearest class mean: unit uncentred class means. features [N, D] or [M, N, D]; labels [N] or [M, N]."""
    return ncm_from_moments(class_moments(features, labels, num_classes))


def ncm_from_moments(moments: ClassMoments) -> NcmProbe:
    """NCM from :func:`class_moments`."""
    return _unbatched(_ncm(jnp.asarray(moments.counts), moments.means), moments.has_member_axis)


def ncm_fit_from_gram(state: GramState) -> NcmProbe:
    """NCM from streamed class sums and counts (``state`` fields [C, ...] or [M, C, ...])."""
    counts, sums = jnp.asarray(state.count), jnp.asarray(state.sums, jnp.float32)
    return _ncm(counts, sums / jnp.maximum(counts, 1)[..., None])


def _ncm(counts, means) -> NcmProbe:
    norms = jnp.linalg.norm(means, axis=-1)
    valid = (counts > 0) & (norms > 0)
    directions = jnp.where(valid[..., None], means / jnp.where(valid, norms, 1)[..., None], 0)
    return NcmProbe(directions, valid)


def _ncm_scores_one(probe: NcmProbe, features):
    norms = jnp.linalg.norm(features, axis=-1, keepdims=True)
    cosine = jnp.matmul(features, probe.directions.T, precision=HIGHEST) / jnp.where(norms > 0, norms, 1)
    return jnp.where(probe.valid, cosine, -jnp.inf)


_ncm_scores = _over_members(_ncm_scores_one)


def ncm_scores(probe: NcmProbe, features) -> jax.Array:
    """Cosine similarity to each class mean: [T, C] or [M, T, C]; −inf for a class never predicted."""
    return _ncm_scores(probe, features, field_ndim=2, dim=probe.directions.shape[-1])


def ncm_predict(probe: NcmProbe, features) -> jax.Array:
    """argmax_c cosine similarity (ties → lowest index): [T] or [M, T] int32."""
    return _argmax(ncm_scores(probe, features))


# ------------------------------------------------------------------------------------------------------ kNN


def _knn_nearest_one(train, queries, k, chunk):
    """Indices [T, k] of the k nearest training rows (cosine) per query, ``chunk`` queries at a time."""
    norms = jnp.linalg.norm(train, axis=-1)
    inverse_norms = jnp.where(norms > 0, 1 / jnp.where(norms > 0, norms, 1), 0)

    def nearest(query):  # [D] -> [k]; lax.map vmaps it over a chunk, so sims are [chunk, N] at most
        # cos(q, t)·‖q‖: the same order over t as the cosine similarity (zero rows: similarity 0, distance 1)
        similarity = jnp.matmul(train, query, precision=HIGHEST) * inverse_norms
        return jax.lax.top_k(similarity, k)[1]  # equal similarities: lowest index first

    return jax.lax.map(nearest, queries, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("k", "chunk", "shared_train", "shared_queries"))
def _knn_nearest(train, queries, k, chunk, shared_train, shared_queries):
    one = functools.partial(_knn_nearest_one, k=k, chunk=chunk)
    if shared_train and shared_queries:
        return one(train, queries)
    in_axes = (None if shared_train else 0, None if shared_queries else 0)
    return jax.vmap(one, in_axes=in_axes)(train, queries)


@jax.jit
def _knn_vote(one_hot, nearest):
    """Votes int32 [..., T, C] of the neighbours ``nearest`` [..., T, k] (or [T, k] for every member)."""
    if one_hot.ndim == 2:
        return one_hot[nearest].sum(-2, dtype=jnp.int32)  # argmax over equal votes: smallest label
    if nearest.ndim == 2:
        return jax.vmap(lambda labels: labels[nearest].sum(-2, dtype=jnp.int32))(one_hot)
    return jax.vmap(lambda labels, index: labels[index].sum(-2, dtype=jnp.int32))(one_hot, nearest)


def knn_fit(features, labels, num_classes: int) -> KnnProbe:
    """k-NN "fit": keep the training rows and one-hot labels. features [N, D] or [M, N, D]; labels [N] or [M, N]."""
    features, _, labels, has_member_axis = _training_inputs(features, labels, num_classes)
    one_hot = jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.bool_)  # [M, N, C]
    return KnnProbe(features, one_hot if has_member_axis else one_hot[0])


def knn_neighbours(train, features, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """Indices of the k nearest rows of ``train`` [N, D] or [M, N, D] (cosine distance) for each query of
    ``features`` [T, D] or [M, T, D]: int32 [T, k] when both are shared, else [M, T, k]; ``chunk`` queries are
    searched together (memory M·chunk·N floats). The search does not depend on labels, so one search serves
    every grouping (:func:`knn_vote`)."""
    train = jnp.asarray(train, jnp.float32)
    n, dim = train.shape[-2], train.shape[-1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the number of training samples), got {k!r}")
    chunk = _check_chunk(chunk)
    queries = _eval_features(features, dim)
    if train.ndim == 3 and queries.ndim == 3 and queries.shape[0] != train.shape[0]:
        raise ValueError(f"training has {train.shape[0]} members but features have {queries.shape[0]}")
    return _knn_nearest(train, queries, k=int(k), chunk=min(chunk, max(queries.shape[-2], 1)),
                        shared_train=train.ndim == 2, shared_queries=queries.ndim == 2)


def knn_vote(probe: KnnProbe, nearest) -> jax.Array:
    """Votes int32 [T, C] or [M, T, C] of the neighbours ``nearest`` (:func:`knn_neighbours`) under the probe's
    labels."""
    if probe.one_hot.ndim == 2 and np.ndim(nearest) == 3:
        raise ValueError("a probe without a member axis votes with [T, k] neighbours")
    return _knn_vote(probe.one_hot, jnp.asarray(nearest))


def knn_scores(probe: KnnProbe, features, *, k: int = 5, chunk: int = 512) -> jax.Array:
    """Votes of the k nearest training rows (cosine distance): int32 [T, C] or [M, T, C].

    ``features``: queries [T, D] (shared by all members) or [M, T, D]; 1 ≤ k ≤ N; ``chunk`` queries are scored
    together (memory M·chunk·N floats).
    """
    members = probe.one_hot.ndim == 3
    if not members and np.ndim(features) == 3:
        raise ValueError("a probe without a member axis scores [T, D] features")
    if members and np.ndim(features) == 3 and np.shape(features)[0] != probe.one_hot.shape[0]:
        raise ValueError(f"training has {probe.one_hot.shape[0]} members but features have {np.shape(features)[0]}")
    return knn_vote(probe, knn_neighbours(probe.features, features, k=k, chunk=chunk))


def knn_predict(train_features, train_labels, features, num_classes: int, k: int = 5, *, chunk: int = 512):
    """k-nearest-neighbour vote under cosine distance.

    Args:
      train_features: [N, D] or [M, N, D]; train_labels: [N] or [M, N] in [0, num_classes).
      features: queries [T, D] (shared by all members) or [M, T, D].
      k: neighbours per query, 1 ≤ k ≤ N.
      chunk: queries scored together (memory M·chunk·N floats).

    Returns:
      int32 predictions [T], or [M, T] when any input has a member axis.
    """
    probe = knn_fit(train_features, train_labels, num_classes)
    if probe.one_hot.ndim == 2 and np.ndim(features) == 3:  # one training set for every member's queries
        probe = probe._replace(one_hot=jnp.broadcast_to(probe.one_hot, (np.shape(features)[0], *probe.one_hot.shape)))
    return _argmax(knn_scores(probe, features, k=k, chunk=chunk))


# ------------------------------------------------------------------------------------------------------ LDA


@jax.jit
def _lda_member(counts, means, scatter):
    """scikit-learn's svd solver from class counts [C], means [C, D] and the within-class scatter [D, D]."""
    n = counts.sum()
    num_present = jnp.sum(counts > 0)
    priors = counts / n
    overall_mean = jnp.matmul(priors, means, precision=HIGHEST)
    std = jnp.sqrt(jnp.diagonal(scatter) / n)
    std = jnp.where(std == 0, 1, std)
    # 1) within-class whitening: eigh of the scatter of sqrt(1/N)·Xc/std = (SVD of that matrix)²
    scaled = scatter / n / jnp.outer(std, std)
    eigenvalues, eigenvectors = jnp.linalg.eigh(scaled)
    singular = jnp.sqrt(jnp.maximum(eigenvalues, 0))
    keep = (singular > DISCRIMINANT_TOL) & (eigenvalues > _numerical_floor(eigenvalues))
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


def lda_fit(features, labels, num_classes: int, *, chunk_size: int = 512) -> LdaProbe:
    """Linear discriminant analysis as scikit-learn's defaults (see the module docstring).

    features [N, D] or [M, N, D]; labels [N] or [M, N]; chunk_size: rows per class-pure scatter chunk.
    """
    return lda_from_moments(class_moments(features, labels, num_classes), chunk_size=chunk_size)


def lda_from_moments(moments: ClassMoments, *, chunk_size: int = 512) -> LdaProbe:
    """LDA from :func:`class_moments` (the pooled within-class scatter is accumulated here)."""
    scatter = _scatter(moments, chunk_size, per_class=False)
    probe = jax.vmap(_lda_member)(jnp.asarray(moments.counts, jnp.float32), moments.means, scatter)
    return _unbatched(probe, moments.has_member_axis)


def lda_fit_from_gram(state: GramState) -> LdaProbe:
    """LDA from streamed moments (``state`` fields [C, ...] or [M, C, ...]); see the module docstring."""
    counts, means, scatter, has_member_axis = _centred_from_gram(state, per_class=False)
    return _unbatched(jax.vmap(_lda_member)(counts, means, scatter), has_member_axis)


def _lda_scores_one(probe: LdaProbe, features):
    return jnp.matmul(features, probe.coef.T, precision=HIGHEST) + probe.intercept


_lda_scores = _over_members(_lda_scores_one)


def lda_scores(probe: LdaProbe, features) -> jax.Array:
    """Decision values (log posterior up to a constant): [T, C] or [M, T, C]."""
    return _lda_scores(probe, features, field_ndim=2, dim=probe.coef.shape[-1])


def lda_predict(probe: LdaProbe, features) -> jax.Array:
    """argmax of the decision values (ties → lowest index): [T] or [M, T] int32."""
    return _argmax(lda_scores(probe, features))


# ------------------------------------------------------------------------------------------------------ QDA


@jax.jit
def _qda_member(counts, means, scatter):
    """Per-class Gaussians from counts [C], means [C, D] and centred scatters [C, D, D]."""
    covariance = scatter / jnp.maximum(counts, 1)[:, None, None]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)
    floor = jnp.maximum(_numerical_floor(eigenvalues), jnp.finfo(eigenvalues.dtype).tiny)
    rank = jnp.sum(eigenvalues > jnp.maximum(DISCRIMINANT_TOL, floor[:, None]), -1).astype(jnp.int32)
    variances = jnp.maximum(eigenvalues, floor[:, None])
    whitening = jnp.where((counts > 0)[:, None, None], eigenvectors * jax.lax.rsqrt(variances)[:, None, :], 0)
    offset = -0.5 * jnp.sum(jnp.log(variances), -1) + jnp.log(counts / counts.sum())
    deficient = (counts > 0) & (rank < means.shape[-1])
    return QdaProbe(means, whitening, offset, rank, deficient)


def qda_fit(features, labels, num_classes: int, *, chunk_size: int = 512) -> QdaProbe:
    """Quadratic discriminant analysis as scikit-learn's defaults; see the module docstring for rank deficiency.

    features [N, D] or [M, N, D]; labels [N] or [M, N]; chunk_size: rows per class-pure scatter chunk.
    ``probe.rank_deficient`` [C] (or [M, C]) flags the classes scikit-learn would refuse.
    """
    return qda_from_moments(class_moments(features, labels, num_classes), chunk_size=chunk_size)


def qda_from_moments(moments: ClassMoments, *, chunk_size: int = 512) -> QdaProbe:
    """QDA from :func:`class_moments` (the per-class scatters are accumulated here)."""
    scatter = _scatter(moments, chunk_size, per_class=True)
    probe = jax.vmap(_qda_member)(jnp.asarray(moments.counts, jnp.float32), moments.means, scatter)
    return _unbatched(probe, moments.has_member_axis)


def qda_fit_from_gram(state: GramState) -> QdaProbe:
    """QDA from streamed moments (``state`` fields [C, ...] or [M, C, ...]); see the module docstring."""
    counts, means, scatter, has_member_axis = _centred_from_gram(state, per_class=True)
    return _unbatched(jax.vmap(_qda_member)(counts, means, scatter), has_member_axis)


def _qda_scores_one(probe: QdaProbe, features, chunk):
    def score_row(h):  # [D] -> [C]; lax.map vmaps it over a chunk of rows
        whitened = jnp.einsum("cd,cde->ce", h - probe.means, probe.whitening, precision=HIGHEST)
        return probe.offset - 0.5 * jnp.sum(whitened**2, -1)

    return jax.lax.map(score_row, features, batch_size=chunk)


_qda_scores = _over_members(_qda_scores_one)


def qda_scores(probe: QdaProbe, features, *, chunk: int = 256) -> jax.Array:
    """Log posterior up to a constant: [T, C] or [M, T, C]; ``chunk`` rows at a time (M·chunk·C·D floats)."""
    chunk = _check_chunk(chunk)
    rows = max(np.shape(features)[-2] if np.ndim(features) >= 2 else 1, 1)
    return _qda_scores(probe, features, field_ndim=2, dim=probe.means.shape[-1], options=(min(chunk, rows),))


def qda_predict(probe: QdaProbe, features, *, chunk: int = 256) -> jax.Array:
    """argmax of the log posterior (ties → lowest index): [T] or [M, T] int32."""
    return _argmax(qda_scores(probe, features, chunk=chunk))


# ---------------------------------------------------------------------------------------------- LogReg


def _logreg_member(features, labels, key, num_classes, epochs, batch_size, learning_rate):
    """Adam on softmax cross-entropy for one member: features [N, D], labels [N] -> LogRegProbe."""
    n, dim = features.shape
    init_key, shuffle_key = jax.random.split(key)
    params = (
        jax.nn.initializers.lecun_normal()(init_key, (dim, num_classes), features.dtype),
        jnp.zeros(num_classes, features.dtype),
    )
    optimizer = optax.adam(learning_rate)
    steps = -(-n // batch_size)

    def loss_fn(params, index):
        valid = index >= 0
        safe = jnp.where(valid, index, 0)
        kernel, bias = params
        logits = jnp.matmul(features[safe], kernel, precision=HIGHEST) + bias
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels[safe])
        return jnp.sum(jnp.where(valid, losses, 0)) / valid.sum()

    def step(carry, index):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, index)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss * jnp.sum(index >= 0)

    def epoch(carry, epoch_index):
        order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch_index), n)
        batches = jnp.pad(order, (0, steps * batch_size - n), constant_values=-1).reshape(steps, batch_size)
        carry, summed = jax.lax.scan(step, carry, batches)
        return carry, summed.sum() / n

    (params, _), losses = jax.lax.scan(epoch, (params, optimizer.init(params)), jnp.arange(epochs))
    return LogRegProbe(params[0], params[1], losses)


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "epochs", "batch_size", "learning_rate", "shared", "shared_key"),
)
def _logreg(features, labels, keys, num_classes, epochs, batch_size, learning_rate, shared, shared_key):
    one = functools.partial(
        _logreg_member, num_classes=num_classes, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate
    )
    in_axes = (None if shared else 0, 0, None if shared_key else 0)
    return jax.vmap(one, in_axes=in_axes)(features, labels, keys)


def logreg_fit(
    features,
    labels,
    num_classes: int,
    key,
    epochs: int = 20,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
) -> LogRegProbe:
    """Train one Dense(D→C) layer with Adam on softmax cross-entropy (see the module docstring).

    Args:
      features: [N, D] or [M, N, D]; labels: [N] or [M, N].
      key: one PRNG key shared by all members (same initialisation and batch order), or a stack [M] of keys.

    Returns:
      A :class:`LogRegProbe`; ``losses`` [E] is each epoch's mean training loss.
    """
    features, shared, labels, has_member_axis = _training_inputs(features, labels, num_classes)
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
    probe = _logreg(
        features, jnp.asarray(labels), key, num_classes=num_classes, epochs=int(epochs),
        batch_size=int(batch_size), learning_rate=float(learning_rate), shared=shared, shared_key=shared_key,
    )
    return _unbatched(probe, has_member_axis)


def _logreg_scores_one(probe: LogRegProbe, features):
    return jnp.matmul(features, probe.kernel, precision=HIGHEST) + probe.bias


_logreg_scores = _over_members(_logreg_scores_one)


def logreg_scores(probe: LogRegProbe, features) -> jax.Array:
    """Logits [T, C] or [M, T, C]."""
    return _logreg_scores(probe, features, field_ndim=2, dim=probe.kernel.shape[-2])


def logreg_predict(probe: LogRegProbe, features) -> jax.Array:
    """argmax of the logits (ties → lowest index): [T] or [M, T] int32."""
    return _argmax(logreg_scores(probe, features))


__all__ = [
    "DISCRIMINANT_TOL",
    "KnnProbe",
    "NcmProbe",
    "LdaProbe",
    "QdaProbe",
    "LogRegProbe",
    "ncm_fit",
    "ncm_fit_from_gram",
    "ncm_from_moments",
    "ClassMoments",
    "class_moments",
    "ncm_scores",
    "ncm_predict",
    "knn_fit",
    "knn_neighbours",
    "knn_vote",
    "knn_scores",
    "knn_predict",
    "lda_fit",
    "lda_fit_from_gram",
    "lda_from_moments",
    "lda_scores",
    "lda_predict",
    "qda_fit",
    "qda_fit_from_gram",
    "qda_from_moments",
    "qda_scores",
    "qda_predict",
    "logreg_fit",
    "logreg_scores",
    "logreg_predict",
]
