"""Label corruption, the papers' experimental variable: the rules that turn true labels into each member's
training labels.

:func:`corrupt_labels` is the reference rule (numpy legacy RNG, seed 42, the same labels for every run);
:func:`corrupt_labels_per_member` is the independent JAX rule (one PRNG stream per member seed) and
:func:`pairflip_labels_per_member` its asymmetric twin (c -> c+1 mod K); :func:`member_train_labels` builds the
``[M, N]`` training labels of a member grid from any rule. Corruption depends on sample order (see
:func:`jaxmem.data.load_dataset`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import LABEL_RULES, MemberSpec
from jaxmem.data.loading import Dataset, dataset_info

REFERENCE_SEED = 42  # the reference rule: np.random.seed(42)
# Datasets whose reference corruption uses `rand < p` instead of `rand <= p`.
_STRICT_REFERENCE = frozenset({"tiny_imagenet"})


def reference_strict(name: str) -> bool:
    """Whether the reference corruption of ``name`` uses ``rand < p`` (True only for tiny_imagenet)."""
    dataset_info(name)
    return name in _STRICT_REFERENCE


def _check_labels(labels, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array [N], got {labels.dtype} {labels.shape}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found range [{labels.min()}, {labels.max()}]")
    return labels


def _check_fraction(fraction) -> float:
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:  # also rejects NaN
        raise ValueError(f"corruption fraction must be in [0, 1], got {fraction}")
    return fraction


def corrupt_labels(labels, fraction: float, num_classes: int, seed: int = REFERENCE_SEED, *,
                   strict: bool = False) -> np.ndarray:
    """The reference label corruption on labels ``[N]`` in original order.

    Equivalent to ``np.random.seed(seed); mask = np.random.rand(N) <= fraction;
    labels[mask] = np.random.choice(num_classes, mask.sum())`` but with a private ``RandomState(seed)``, so the
    global numpy RNG is left alone. New labels are uniform over all classes (they may equal the true one).
    ``strict=True`` uses ``rand < fraction`` (the tiny_imagenet variant, see :func:`reference_strict`).
    ``fraction == 0`` draws nothing and returns an unchanged copy. The input is never modified.

    Returns:
      ``int32 [N]`` corrupted labels.
    """
    labels = _check_labels(labels, num_classes)
    fraction = _check_fraction(fraction)
    corrupted = labels.astype(np.int32, copy=True)
    if fraction == 0.0:
        return corrupted
    rng = np.random.RandomState(seed)
    draws = rng.rand(labels.shape[0])
    mask = draws < fraction if strict else draws <= fraction
    corrupted[mask] = rng.choice(num_classes, mask.sum())
    return corrupted


# fold_in tag of the per-member label-noise stream: member key = fold_in(jax.random.key(seed), tag), so the
# label noise is independent of whatever the trainer draws from jax.random.key(seed) itself.
LABEL_NOISE_TAG = 0x6C61626C  # "labl"


def _corrupt_one_member(labels: jax.Array, fraction: jax.Array, seed: jax.Array, num_classes: int) -> jax.Array:
    key = jax.random.fold_in(jax.random.key(seed), LABEL_NOISE_TAG)
    mask_key, class_key = jax.random.split(key)
    mask = jax.random.uniform(mask_key, labels.shape) < fraction
    new_labels = jax.random.randint(class_key, labels.shape, 0, num_classes, dtype=jnp.int32)
    return jnp.where(mask, new_labels, labels)


@functools.partial(jax.jit, static_argnames="num_classes")
def _corrupt_members(labels, fractions, seeds, num_classes: int) -> jax.Array:
    one = functools.partial(_corrupt_one_member, labels, num_classes=num_classes)
    return jax.vmap(one)(fractions, seeds)


def _member_draw_inputs(labels, fractions, seeds, num_classes):
    """Validated (labels [N], fractions [M], seeds [M]) of a per-member rule."""
    labels = _check_labels(labels, num_classes)
    fractions = np.asarray(fractions, np.float64).reshape(-1)
    seeds = np.asarray(seeds).reshape(-1)
    if fractions.shape != seeds.shape:
        raise ValueError(f"need one seed per fraction, got {fractions.size} fractions and {seeds.size} seeds")
    for fraction in fractions:
        _check_fraction(fraction)
    if not np.issubdtype(seeds.dtype, np.integer) or (seeds.size and (seeds.min() < 0 or seeds.max() >= 2**31)):
        raise ValueError(f"seeds must be integers in [0, 2**31), got {seeds.tolist()}")
    return labels, fractions, seeds


def corrupt_labels_per_member(labels, fractions: Sequence[float], seeds: Sequence[int], num_classes: int) -> jax.Array:
    """The independent per-member corruption rule: every member draws its own noise from its seed.

    Member ``m`` uses ``key = jax.random.fold_in(jax.random.key(seeds[m]), LABEL_NOISE_TAG)`` split into
    ``(mask_key, class_key)``; position ``i`` is replaced when ``uniform(mask_key)[i] < fractions[m]`` (so
    ``p = 0`` changes nothing and ``p = 1`` everything) by ``randint(class_key)[i]`` uniform over all
    ``num_classes`` classes. Batched over members with ``jax.vmap``.

    Args:
      labels: ``[N]`` true labels in ``[0, num_classes)``.
      fractions: ``[M]`` corruption degrees in ``[0, 1]``.
      seeds: ``[M]`` member seeds in ``[0, 2**31)``.

    Returns:
      ``int32 [M, N]`` corrupted labels.
    """
    labels, fractions, seeds = _member_draw_inputs(labels, fractions, seeds, num_classes)
    return _corrupt_members(jnp.asarray(labels, jnp.int32), jnp.asarray(fractions, jnp.float32),
                            jnp.asarray(seeds, jnp.int32), num_classes=int(num_classes))


def _pairflip_one_member(labels: jax.Array, fraction: jax.Array, seed: jax.Array, num_classes: int) -> jax.Array:
    mask_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(seed), LABEL_NOISE_TAG))
    mask = jax.random.uniform(mask_key, labels.shape) < fraction
    return jnp.where(mask, (labels + 1) % num_classes, labels)


@functools.partial(jax.jit, static_argnames="num_classes")
def _pairflip_members(labels, fractions, seeds, num_classes: int) -> jax.Array:
    one = functools.partial(_pairflip_one_member, labels, num_classes=num_classes)
    return jax.vmap(one)(fractions, seeds)


def pairflip_labels_per_member(labels, fractions: Sequence[float], seeds: Sequence[int], num_classes: int) -> jax.Array:
    """Pair-flip (asymmetric) noise: class c becomes (c + 1) mod K with probability ``fractions[m]``.

    Member ``m`` flips position ``i`` where ``uniform(mask_key)[i] < fractions[m]``, ``mask_key`` being the first
    key of ``split(fold_in(jax.random.key(seeds[m]), LABEL_NOISE_TAG))``: the positions the per-member uniform
    rule would redraw. Arguments and result as :func:`corrupt_labels_per_member`.
    """
    labels, fractions, seeds = _member_draw_inputs(labels, fractions, seeds, num_classes)
    return _pairflip_members(jnp.asarray(labels, jnp.int32), jnp.asarray(fractions, jnp.float32),
                             jnp.asarray(seeds, jnp.int32), num_classes=int(num_classes))


def member_train_labels(dataset: Dataset, members: Sequence[MemberSpec]) -> np.ndarray:
    """Training labels ``int32 [M, N]`` of each member, by its ``label_rule``, from ``dataset.train_labels`` (a
    user's labels, :func:`with_train_labels`) or else ``y_train``.

    ``"reference"``: :func:`corrupt_labels` with seed 42 (strict for tiny_imagenet), the same for every seed of
    a degree. ``"per_member"``: :func:`corrupt_labels_per_member` with the member's own seed. ``"pairflip"``:
    :func:`pairflip_labels_per_member` with the member's own seed.
    """
    if not members:
        raise ValueError("members is empty; need at least one MemberSpec")
    wrong = sorted({m.dataset for m in members} - {dataset.name})
    if wrong:
        raise ValueError(f"members name dataset(s) {wrong} but the dataset given is {dataset.name!r}")
    given = [m for m in members if m.label_rule not in LABEL_RULES]
    if given:
        raise ValueError(f"label rule {given[0].label_rule!r} draws no labels; members train with one of {LABEL_RULES}")
    base = dataset.y_train if dataset.train_labels is None else dataset.train_labels
    out = np.empty((len(members), base.shape[0]), np.int32)
    reference = {}
    for i, member in enumerate(members):
        if member.label_rule == "reference":
            if member.degree not in reference:
                reference[member.degree] = corrupt_labels(base, member.degree, dataset.num_classes,
                                                          REFERENCE_SEED, strict=reference_strict(dataset.name))
            out[i] = reference[member.degree]
    for rule, draw in (("per_member", corrupt_labels_per_member), ("pairflip", pairflip_labels_per_member)):
        chosen = [i for i, m in enumerate(members) if m.label_rule == rule]
        if chosen:
            out[chosen] = np.asarray(draw(base, [members[i].degree for i in chosen],
                                          [members[i].seed for i in chosen], dataset.num_classes))
    return out


def subspace_grouping(dataset: Dataset, members: Sequence[MemberSpec], kinds: Sequence[str]) -> dict:
    """Grouping labels ``[M, N]`` per subspace kind (the MASC variants of docs/methods.md).

    ``"corrupted"``: each member's own training labels; ``"true"``: the true labels; ``"corrupted@q"``: the labels
    each member's rule and seed give at degree q (the clean-model variant: a model trained at p = 0 probed with
    subspaces from labels corrupted at q).
    """
    grouping = {}
    for kind in kinds:
        if kind == "corrupted":
            grouping[kind] = member_train_labels(dataset, members)
        elif kind == "true":
            grouping[kind] = np.broadcast_to(dataset.y_train, (len(members), len(dataset.y_train)))
        elif kind.startswith("corrupted@"):
            degree = float(kind.removeprefix("corrupted@"))
            grouping[kind] = member_train_labels(dataset, [dataclasses.replace(m, degree=degree) for m in members])
        else:
            raise ValueError(f"unknown subspace labels {kind!r}: use 'corrupted', 'true' or 'corrupted@<degree>'")
    return grouping
