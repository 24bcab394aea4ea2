"""The paper-2 linear probe (docs/methods.md): per class, the leading eigenvector of the uncentred Gram; no bias.

Per class c, with grouping labels g: v_c = the unit eigenvector of the largest eigenvalue of G_c = X_cᵀX_c (the
same uncentred G_c as MASC; never mean-centre), its sign fixed so that the mean of v_cᵀh over ALL training
samples (every class) is ≥ 0, i.e. v_cᵀμ ≥ 0 for the training mean μ. A sample scores v_cᵀh per class and is
predicted as argmax_c v_cᵀh (ties → lowest index). Stacked as rows the vectors are a bias-free Dense kernel
[D, C] = vectorsᵀ, which :mod:`jaxmem.editing` puts into a model's last layer.

Degenerate cases (documented behaviour, tested):
- a class with no samples, or whose activations are all zero, gets v_c = 0 and scores 0 for every sample, so it
  is predicted only where no fitted class scores above 0 (ties → lowest index). For non-negative (post-ReLU)
  features G_c is entrywise non-negative, so v_c is non-negative (Perron–Frobenius; up to rounding, barring a
  repeated top eigenvalue) and every score is ≥ 0: such a class then wins only where every fitted class scores
  exactly 0 and no lower-index class ties. For signed features (the normalised ``input`` layer) it also wins
  wherever every fitted class scores below 0;
- an all-zero sample scores 0 for every class and is predicted as class 0.

Speed. Fit = Gram (N·D²) + one eigh per class (C·D³), or the dual N_c×N_c problem (N_c²·D + N_c³) for classes
with fewer samples than dimensions — MASC's own machinery (:mod:`jaxmem.probes.gram`). Scoring T samples is one
matmul, T·D·C·2 flops. ``precision="exact"`` runs in float64; ``"fast"`` in float32 with full-precision
(HIGHEST) matmuls.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes.base import precision_context
from jaxmem.probes.gram import HIGHEST, ClassSpectra, GramState
from jaxmem.probes.masc import Spectra, class_spectra, gram_spectra


class LinearProbe(NamedTuple):
    """A fitted linear probe; ``vectors`` may carry a leading member axis [M, C, D]."""

    vectors: jax.Array  # [C, D] unit leading eigenvector per class (rows); 0 for an empty or all-zero class


def _leading(values: jax.Array, vectors: jax.Array) -> jax.Array:
    """Leading eigenvector [..., D] from descending ``values`` [..., R] and columns [..., D, R]; 0 where λ₁ ≤ 0."""
    return jnp.where(values[..., :1] > 0, vectors[..., 0], 0)


def _scatter_leading(vectors: jax.Array, part: ClassSpectra) -> jax.Array:
    """``vectors`` [M, C, D] with the leading eigenvectors of ``part``'s (member, class) pairs set."""
    if part.values is None:
        return vectors
    return vectors.at[part.member, part.cls].set(_leading(part.values, part.vectors))


@jax.jit
def _orient(vectors: jax.Array, mean_feature: jax.Array) -> jax.Array:
    """Flip each row v_c of ``vectors`` [..., C, D] so that v_cᵀμ ≥ 0 for the training mean μ [..., D]."""
    projection = jnp.sum(vectors * mean_feature[..., None, :], -1)
    return jnp.where(projection[..., None] < 0, -vectors, vectors)


def fit(
    features,
    labels,
    num_classes: int,
    precision: str = "fast",
    *,
    chunk_size: int = 512,
    dual: str | bool = "auto",
) -> LinearProbe:
    """Fit one leading direction per class (and per member).

    Args:
      features: [N, D] training activations shared by all members, or [M, N, D] per member.
      labels: [N] or [M, N] integer grouping labels (corrupted or true) in [0, num_classes).
      num_classes: C.
      precision: "fast" (float32) or "exact" (float64).
      chunk_size: rows per class-pure Gram chunk (see :mod:`jaxmem.probes.gram`).
      dual: "auto" solves the N_c×N_c dual problem for classes with 0 < N_c < D; True/False force it on/off.

    Returns:
      A :class:`LinearProbe`, vectors [C, D], or [M, C, D] when features or labels have a member axis. The sign
      rule uses each member's own training mean (the mean over all N samples, whatever their labels).
    """
    return fit_from_spectra(class_spectra(features, labels, num_classes, precision, chunk_size=chunk_size, dual=dual))


def fit_from_gram(state: GramState, mean_feature=None, precision: str = "fast") -> LinearProbe:
    """Fit from accumulated second moments (the streaming path; primal problem for every class).

    Args:
      state: per-class Grams, gram [C, D, D] or [M, C, D, D] (an empty class has G = 0).
      mean_feature: [D] or [M, D] mean activation over ALL training samples, for the sign rule; None: from the
        state's class sums and counts.
      precision: "fast" (float32) or "exact" (float64).
    """
    spectra = gram_spectra(state, precision)
    if mean_feature is not None:
        with precision_context(precision == "exact"):
            mean_feature = jnp.asarray(mean_feature, spectra.mean_feature.dtype)
        dim, batch = spectra.dim, np.shape(state.gram)[:-3]
        if mean_feature.shape not in ((dim,), (*batch, dim)):
            raise ValueError(f"mean_feature must be [{dim}] or {[*batch, dim]} to match gram "
                             f"{np.shape(state.gram)}, got shape {mean_feature.shape}")
        spectra = spectra._replace(mean_feature=mean_feature)
    return fit_from_spectra(spectra)


def fit_from_spectra(spectra: Spectra) -> LinearProbe:
    """The linear probe from shared :class:`~jaxmem.probes.masc.Spectra` (the leading eigenvectors)."""
    dtype = spectra.mean_feature.dtype
    with precision_context(dtype == np.float64):
        vectors = jnp.zeros((*spectra.counts.shape, spectra.dim), dtype)
        for part in (spectra.primal, spectra.dual):
            vectors = _scatter_leading(vectors, part)
        vectors = _orient(vectors, jnp.asarray(spectra.mean_feature, dtype))
    return LinearProbe(vectors if spectra.has_member_axis else vectors[0])


@jax.jit
def _scores(vectors: jax.Array, features: jax.Array) -> jax.Array:
    return jnp.matmul(features, jnp.swapaxes(vectors, -1, -2), precision=HIGHEST)


def scores(probe: LinearProbe, features) -> jax.Array:
    """v_cᵀh per sample and class: features @ vectorsᵀ, [T, C], or [M, T, C] for a probe with a member axis.

    ``features`` is [T, D] (shared by all members) or [M, T, D]. Empty classes score 0.
    """
    with precision_context(probe.vectors.dtype == np.float64):
        vectors = probe.vectors
        features = jnp.asarray(features, vectors.dtype)
        dim = vectors.shape[-1]
        if features.ndim not in (2, 3) or features.shape[-1] != dim:
            raise ValueError(f"features must be [T, {dim}] or [M, T, {dim}], got shape {features.shape}")
        if vectors.ndim == 2 and features.ndim != 2:
            raise ValueError(f"a probe without a member axis scores [T, {dim}] features, got shape {features.shape}")
        if features.ndim == 3 and features.shape[0] != vectors.shape[0]:
            raise ValueError(f"probe has {vectors.shape[0]} members but features have {features.shape[0]}")
        return _scores(vectors, features)


def predict(probe: LinearProbe, features) -> jax.Array:
    """Predicted class per sample, argmax_c v_cᵀh (ties → lowest class index): [T] or [M, T] int32."""
    with precision_context(probe.vectors.dtype == np.float64):
        return jnp.argmax(scores(probe, features), axis=-1).astype(jnp.int32)


__all__ = ["LinearProbe", "fit", "fit_from_gram", "fit_from_spectra", "predict", "scores"]
