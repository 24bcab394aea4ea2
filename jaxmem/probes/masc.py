"""MASC, the Minimum Angle Subspace Classifier (docs/methods.md), batched over classes and a leading member axis.

Per class c, with grouping labels g: G_c = X_cᵀX_c (uncentred: the reference's ±-augmented covariance equals it up
to scale; never mean-centre). Its eigenvalues λ₁ ≥ λ₂ ≥ … give r_j = (λ₁+…+λ_j)/Σλ and, for a variance fraction
0 < n < 1, k = #{j : r_j ≤ n} + 1 components (the "+1" is the reference's rule); an integer n ≥ 1 keeps the top n.
A sample h gets cos²θ_c = ‖U_c h‖²/‖h‖² and the prediction argmax_c cos²θ_c = argmin_c θ_c (ties → lowest index).

Degenerate cases (all documented behaviour, tested):
- a class with no samples, or whose activations are all zero, has k = 0: it scores −inf and is never predicted
  (unless every class is empty, when class 0 is returned); its angles are NaN;
- an all-zero sample h (possible after ReLU) has cos² = 0 for every non-empty class, so it is predicted as the
  lowest-index non-empty class, and its angles are NaN (the reference's 0/0 gives NaN and ``argmin`` → class 0);
- D = 1: every non-empty class spans the whole line, all classes tie and the lowest index wins;
- k hitting D: k is clipped to D (then cos² = 1 for every h, the class is uninformative).

Speed. Fit = Gram (N·D²) + one eigh per class (C·D³; or the dual N_c×N_c problem, N_c²·D + N_c³, for classes
with fewer samples than dimensions). Scoring T samples needs ‖U_c h‖² for W = max_c min(k_c, D − k_c) columns
per class, since ‖U_c h‖² = ‖h‖² − ‖U_⊥ h‖² when k > D/2: T·D·C·W·2 flops, one matmul against the stacked
bases. ``precision="exact"`` runs every step in float64 (reproduces the numpy reference's predictions);
``"fast"`` runs in float32 with full-precision (HIGHEST) matmuls.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import check_variance
from jaxmem.probes.base import check_precision, precision_context, prepare_fit
from jaxmem.probes.gram import (HIGHEST, ClassSpectra, GramState, accurate_spectrum, dual_spectra, primal_spectra,
                                spectrum)


class MascProbe(NamedTuple):
    """A fitted MASC probe; every field may carry a leading member axis [M, ...]."""

    basis: jax.Array  # [C, D, W] scoring columns: the top-k eigenvectors, or the complement's (zero-padded)
    complement: jax.Array  # [C] bool: cos² = 1 − ‖basisᵀh‖²/‖h‖² (chosen when k > D/2)
    num_components: jax.Array  # [C] int32 k (0 for an empty or all-zero class)
    eigenvalues: jax.Array  # [C, D] descending spectrum of G_c (zero-padded for the dual problem)


# ----------------------------------------------------------------------------------------------- validation


def _in_probe_precision(function):
    """Run a function of (probe, ...) with float64 enabled when the probe was fitted in exact mode."""

    @functools.wraps(function)
    def wrapped(probe, *args, **kwargs):
        with precision_context(probe.basis.dtype == np.float64):
            return function(probe, *args, **kwargs)

    return wrapped


# -------------------------------------------------------------------------------------------- pure kernels


def num_components(eigenvalues: jax.Array, count: jax.Array, variance) -> jax.Array:
    """The k rule on descending ``eigenvalues`` [..., R]; 0 where ``count`` is 0 or Σλ = 0."""
    rank_limit = eigenvalues.shape[-1]
    total = eigenvalues.sum(-1)
    if isinstance(variance, int):
        k = jnp.full(total.shape, min(variance, rank_limit), jnp.int32)
    else:
        ratios = jnp.cumsum(eigenvalues, -1) / total[..., None]
        # "+1": the reference keeps the first component whose cumulative ratio exceeds n.
        k = jnp.minimum(jnp.sum(ratios <= variance, -1, dtype=jnp.int32) + 1, rank_limit)
    return jnp.where((count > 0) & (total > 0), k, 0)


@functools.partial(jax.jit, static_argnames="width")
def select_basis(vectors: jax.Array, k: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Scoring columns [P, D, W] from descending eigenvectors [P, D, D]: top-k, or the D−k complement."""
    dim = vectors.shape[-1]
    complement = (dim - k) < k
    j = jnp.arange(width)
    columns = jnp.where(complement[:, None], dim - width + j, j)  # complement: the W smallest directions
    keep = jnp.where(complement[:, None], columns >= k[:, None], columns < k[:, None])
    basis = jnp.take_along_axis(vectors, columns[:, None, :], axis=2) * keep[:, None, :]
    return basis, complement


@functools.partial(jax.jit, static_argnames=("chunk",))
def _scores(probe: MascProbe, features: jax.Array, chunk: int) -> jax.Array:
    """cos²θ [T, C] for one member: features [T, D]; rows are scored ``chunk`` at a time, each chunk with one
    matmul against the stacked bases of all classes."""
    num_classes, dim, width = probe.basis.shape
    stacked = jnp.transpose(probe.basis, (1, 0, 2)).reshape(dim, num_classes * width)

    def score_row(h):  # [D] -> [C]; vmapped over a chunk by lax.map
        projected = jnp.matmul(h, stacked, precision=HIGHEST).reshape(num_classes, width)
        captured = jnp.sum(projected * projected, -1)
        norm2 = jnp.dot(h, h, precision=HIGHEST)
        inside = jnp.where(probe.complement, norm2 - captured, captured)
        cos2 = jnp.where(norm2 > 0, inside / jnp.where(norm2 > 0, norm2, 1), 0)
        return jnp.where(probe.num_components > 0, cos2, -jnp.inf)

    return jax.lax.map(score_row, features.astype(probe.basis.dtype), batch_size=chunk)


# ----------------------------------------------------------------------------------------------------- fit


def _assemble(shape, dim, width, dtype, parts) -> MascProbe:
    """Scatter per-(member, class) pair results into [M, C, ...] arrays."""
    basis = jnp.zeros((*shape, dim, width), dtype)
    complement = jnp.zeros(shape, bool)
    k = jnp.zeros(shape, jnp.int32)
    values = jnp.zeros((*shape, dim), dtype)
    for (m, c), (part_basis, part_complement, part_k, part_values) in parts:
        if len(m) == 0:
            continue
        part_basis = part_basis[..., :width]
        pad = width - part_basis.shape[-1]
        basis = basis.at[m, c].set(jnp.pad(part_basis, ((0, 0), (0, 0), (0, pad))))
        complement = complement.at[m, c].set(part_complement)
        k = k.at[m, c].set(part_k)
        values = values.at[m, c].set(jnp.pad(part_values, ((0, 0), (0, dim - part_values.shape[-1]))))
    return MascProbe(basis, complement, k, values)


def _with_k(spectra: ClassSpectra, counts, variance) -> tuple[ClassSpectra, jax.Array]:
    """The spectra of some (member, class) pairs and their k [P] (empty when there are none)."""
    if spectra.values is None:
        return spectra, np.zeros(0, np.int32)
    return spectra, num_components(spectra.values, jnp.asarray(counts[spectra.member, spectra.cls]), variance)


def _finish(shape, dim, dtype, primal, dual) -> MascProbe:
    """Choose the static scoring width on the host from the fitted k, then build the probe."""
    (p, p_k), (d, d_k) = primal, dual
    k_primal, k_dual = np.asarray(p_k), np.asarray(d_k)
    width = max(
        int(np.minimum(k_primal, dim - k_primal).max(initial=0)), int(k_dual.max(initial=0)), 1
    )
    parts = []
    if len(p.member):
        basis, complement = select_basis(p.vectors, p_k, width)
        parts.append(((p.member, p.cls), (basis, complement, p_k, p.values)))
    if len(d.member):
        keep = jnp.arange(d.vectors.shape[-1]) < d_k[:, None]
        parts.append(((d.member, d.cls), (d.vectors * keep[:, None, :], jnp.zeros(len(d.member), bool), d_k,
                                          d.values)))
    return _assemble(shape, dim, width, dtype, parts)


class Spectra(NamedTuple):
    """The per-class eigenproblems of one grouping: one eigendecomposition per (member, class), from which MASC at
    every variance (:func:`fit_from_spectra`, k is chosen after eigh) and the linear probe fit."""

    primal: ClassSpectra  # D×D problems
    dual: ClassSpectra  # N_c×N_c problems (classes with fewer samples than D)
    counts: np.ndarray  # [M, C] samples per class
    dim: int  # D
    mean_feature: jax.Array  # [D] or [M, D] training mean over all samples (the linear probe's sign rule)
    has_member_axis: bool  # the caller's features or labels had a member axis


def class_spectra(
    features, labels, num_classes: int, precision: str = "fast", *, chunk_size: int = 512, dual: str | bool = "auto"
) -> Spectra:
    """The eigenproblems of :func:`fit` (arguments as there), solved once."""
    check_precision(precision)
    exact = precision == "exact"
    with precision_context(exact):
        x = prepare_fit(features, labels, num_classes, exact, dual)
        primal = primal_spectra(x.features, x.shared, x.labels, x.use_primal, num_classes, chunk_size)
        dual_part = dual_spectra(x.features, x.shared, x.labels, x.counts, x.use_dual)
        return Spectra(primal, dual_part, x.counts, x.features.shape[-1], x.features.mean(-2), x.has_member_axis)


def gram_spectra(state: GramState, precision: str = "fast") -> Spectra:
    """The eigenproblems of accumulated second moments (the streaming path; primal problem for every class).

    ``state`` fields may have a leading member axis: gram [M, C, D, D], count [M, C].
    """
    check_precision(precision)
    exact = precision == "exact"
    with precision_context(exact):
        dtype = jnp.float64 if exact else jnp.float32
        gram, count = jnp.asarray(state.gram, dtype), np.asarray(state.count)
        if gram.ndim not in (3, 4) or gram.shape[-1] != gram.shape[-2]:
            raise ValueError(f"state.gram must be [C, D, D] or [M, C, D, D], got shape {gram.shape}")
        has_member_axis = gram.ndim == 4
        sums = jnp.asarray(state.sums, dtype)
        if not has_member_axis:
            gram, count, sums = gram[None], count[None], sums[None]
        pm, pc = np.nonzero(count > 0)
        primal = (ClassSpectra(pm, pc, *accurate_spectrum(gram[pm, pc])) if len(pm)
                  else ClassSpectra(pm, pc, None, None))
        empty = np.zeros(0, int)
        mean = jnp.sum(sums, -2) / jnp.maximum(jnp.asarray(count.sum(-1), dtype), 1)[..., None]
        return Spectra(primal, ClassSpectra(empty, empty, None, None), count, gram.shape[-1], mean, has_member_axis)


def fit_from_spectra(spectra: Spectra, variance: float | int = 0.99) -> MascProbe:
    """MASC at ``variance`` from shared :class:`Spectra` (:func:`class_spectra` or :func:`gram_spectra`)."""
    variance = check_variance(variance)
    dtype = spectra.mean_feature.dtype
    with precision_context(dtype == np.float64):
        primal, dual_part = (_with_k(part, spectra.counts, variance) for part in (spectra.primal, spectra.dual))
        probe = _finish(spectra.counts.shape, spectra.dim, dtype, primal, dual_part)
    return probe if spectra.has_member_axis else jax.tree.map(lambda a: a[0], probe)


def fit(
    features,
    labels,
    num_classes: int,
    variance: float | int = 0.99,
    precision: str = "fast",
    *,
    chunk_size: int = 512,
    dual: str | bool = "auto",
) -> MascProbe:
    """Fit MASC subspaces per class (and per member).

    Args:
      features: [N, D] activations shared by all members, or [M, N, D] per member.
      labels: [N] or [M, N] integer grouping labels (corrupted or true) in [0, num_classes).
      num_classes: C.
      variance: fraction 0 < n < 1 of the (uncentred) variance to keep, or an integer number of components.
      precision: "fast" (float32) or "exact" (float64, reproduces the numpy reference).
      chunk_size: rows per class-pure Gram chunk (padding ≤ C·chunk_size rows in all).
      dual: "auto" solves the N_c×N_c dual problem for classes with 0 < N_c < D; True/False force it on/off.

    Returns:
      A :class:`MascProbe` with a leading member axis when features or labels have one.
    """
    variance = check_variance(variance)
    spectra = class_spectra(features, labels, num_classes, precision, chunk_size=chunk_size, dual=dual)
    return fit_from_spectra(spectra, variance)


def fit_from_gram(state: GramState, variance: float | int = 0.99, precision: str = "fast") -> MascProbe:
    """Fit from accumulated second moments (:func:`gram_spectra`, the streaming path)."""
    variance = check_variance(variance)
    return fit_from_spectra(gram_spectra(state, precision), variance)


# ------------------------------------------------------------------------------------------------- scoring


@_in_probe_precision
def scores(probe: MascProbe, features, *, chunk: int = 2048) -> jax.Array:
    """cos²θ_c per sample and class: [T, C], or [M, T, C] for a probe with a member axis.

    ``features`` is [T, D] (shared by all members) or [M, T, D]. Empty classes score −inf.
    """
    features = jnp.asarray(features, probe.basis.dtype)
    dim = probe.basis.shape[-2]
    if features.ndim not in (2, 3) or features.shape[-1] != dim:
        raise ValueError(f"features must be [T, {dim}] or [M, T, {dim}], got shape {features.shape}")
    chunk = max(1, min(chunk, features.shape[-2]))
    if probe.basis.ndim == 3:
        if features.ndim != 2:
            raise ValueError("a probe without a member axis scores [T, D] features")
        return _scores(probe, features, chunk)
    members = probe.basis.shape[0]
    if features.ndim == 3 and features.shape[0] != members:
        raise ValueError(f"probe has {members} members but features have {features.shape[0]}")
    in_axes = (0, None if features.ndim == 2 else 0)
    return jax.vmap(lambda p, x: _scores(p, x, chunk), in_axes=in_axes)(probe, features)


@_in_probe_precision
def predict(probe: MascProbe, features, *, chunk: int = 2048) -> jax.Array:
    """Predicted class per sample: argmin of the angle (ties → lowest class index). [T] or [M, T]."""
    return jnp.argmax(scores(probe, features, chunk=chunk), axis=-1).astype(jnp.int32)


@_in_probe_precision
def angles(probe: MascProbe, features, *, chunk: int = 2048) -> jax.Array:
    """Angles θ_c in degrees between each sample and each class subspace; NaN where undefined."""
    cos2 = scores(probe, features, chunk=chunk)
    norms = jnp.linalg.norm(jnp.asarray(features, cos2.dtype), axis=-1)[..., None]
    theta = jnp.degrees(jnp.arccos(jnp.sqrt(jnp.clip(cos2, 0, 1))))
    return jnp.where(jnp.isfinite(cos2) & (norms > 0), theta, jnp.nan)


@_in_probe_precision
def projectors(probe: MascProbe) -> jax.Array:
    """Explicit projectors P_c = U_cᵀU_c onto each class subspace: [..., C, D, D] (small D only)."""
    outer = jnp.einsum("...dw,...ew->...de", probe.basis, probe.basis, precision=HIGHEST)
    eye = jnp.eye(probe.basis.shape[-2], dtype=probe.basis.dtype)
    return jnp.where(probe.complement[..., None, None], eye - outer, outer)


@_in_probe_precision
def quadratic_scores(probe: MascProbe, features) -> jax.Array:
    """Paper 2's quadratic form hᵀP_c h: [T, C] (or [M, T, C]); argmax equals the MASC prediction.

    Costs T·D²·C (dense projectors); use :func:`scores` for speed.
    """
    p = projectors(probe)
    h = jnp.asarray(features, p.dtype)
    quad = jnp.einsum("...td,...cde,...te->...tc", h, p, h, precision=HIGHEST)
    return jnp.where(probe.num_components[..., None, :] > 0, quad, -jnp.inf)


def mean_components(probe: MascProbe) -> np.ndarray:
    """Mean number of components over classes: [] or [M]."""
    return np.asarray(probe.num_components, np.float64).mean(-1)


def scoring_flops(probe: MascProbe, num_samples: int) -> float:
    """Matmul flops of scoring ``num_samples`` samples (per member): T·D·C·W·2."""
    num_classes, dim, width = probe.basis.shape[-3:]
    return 2.0 * num_samples * dim * num_classes * width


def fit_flops(num_samples: int, dim: int, num_classes: int) -> float:
    """Nominal flops of the primal fit: Gram N·D²·2 plus C symmetric eigendecompositions (≈ 9·D³ each)."""
    return 2.0 * num_samples * dim**2 + num_classes * 9.0 * dim**3


__all__ = [
    "MascProbe",
    "fit",
    "fit_from_gram",
    "fit_from_spectra",
    "Spectra",
    "class_spectra",
    "gram_spectra",
    "predict",
    "scores",
    "angles",
    "projectors",
    "quadratic_scores",
    "num_components",
    "mean_components",
    "spectrum",
    "select_basis",
    "check_variance",
    "scoring_flops",
    "fit_flops",
]
