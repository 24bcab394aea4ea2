"""Every probe by name, as a :class:`~jaxmem.probes.base.Probe`: the one registry that probing, sensitivity,
dynamics, cost and the report iterate over.

``masc`` (MASC at n = 0.99; :func:`masc_probe` for any n, named ``masc(n=…)`` in sensitivity runs), ``linear``
(paper 2), ``ncm``, ``knn``, ``lda``, ``qda`` and ``logreg`` (one module each, written for one member; the member
axis is added by :mod:`jaxmem.probes.over_members`). All but kNN and logistic regression also fit from streamed
Grams. :func:`select_probes` turns names into configured probes.

FLOPs are the matrix-product flops of all M members (a multiply-add counts 2). N training samples (N_c in class
c), T scored samples, D features, C classes, K = min(C, D); eigh of an n×n symmetric matrix counts 9·n³
(tridiagonalisation plus eigenvectors, Golub & Van Loan), the thin SVD of an m×n matrix (m ≥ n) 6·m·n² + 20·n³
(R-SVD). Elementwise work (norms, softmax, argmax, Adam) and padding rows are not counted. Per member:

- MASC fit, per class the problem it solves: primal (N_c ≥ D) Gram 2·N_c·D² + eigh 9·D³ (:func:`masc.fit_flops`);
  dual (0 < N_c < D) kernel 2·N_c²·D + eigh 9·N_c³ + basis Xᵀ V 2·N_c²·D; an empty class nothing.
  Score 2·T·D·C·W, W = the scoring width max min(k_c, D − k_c) that all classes and members share
  (:func:`masc.scoring_flops`).
- linear: fit as MASC (the same Gram/dual machinery, leading eigenvector); score 2·T·D·C.
- NCM: fit, class means as one one-hot product, 2·N·C·D; score 2·T·D·C.
- kNN: fit keeps the training set (0 flops); score 2·T·N·D (cosine similarities; the top-k over N is not counted).
- LDA: fit class means 2·N·C·D + within-class scatter 2·N·D² + eigh 9·D³ + whitened means 2·C·D² + their SVD
  6·max(C, D)·K² + 20·K³ + directions 2·D²·K + projected means and coefficients 4·C·K·D; score 2·T·D·C.
- QDA: fit class means 2·N·C·D + per-class scatter 2·N·D² + an eigh per class 9·C·D³; score 2·T·C·D² (one
  whitening product per class).
- logistic regression: fit E epochs × N samples × (logits 2·D·C + kernel gradient 2·D·C) = 4·E·N·D·C (the
  features are constants, so no gradient flows to them); score 2·T·D·C.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from jaxmem.config import PROBE_NAMES, check_probe_names, masc_variant_name, registry_order, variant_variance
from jaxmem.probes import lda, linear, logreg, masc, ncm, over_members, qda
from jaxmem.probes.base import Probe, ProbeSizes, check_precision

EIGH_FLOPS = 9.0  # × n³ for an n×n symmetric eigendecomposition with eigenvectors
KNN_NEIGHBOURS = 5
SCATTER_CHUNK = 512  # rows per class-pure chunk of the LDA and QDA scatters

# ----------------------------------------------------------------------------------------------- FLOPs


def eigh_flops(n) -> np.ndarray:
    return EIGH_FLOPS * np.asarray(n, np.float64) ** 3


def thin_svd_flops(rows: int, cols: int) -> float:
    """R-SVD of a rows × cols matrix, singular values and the thin singular vectors."""
    long, short = max(rows, cols), min(rows, cols)
    return 6.0 * long * short**2 + 20.0 * short**3


def subspace_fit_flops(sizes: ProbeSizes, _state=None) -> float:
    """MASC and linear fit: per class the primal Gram + eigh, or the dual kernel + eigh + basis."""
    primal = (sizes.counts > 0) & ~sizes.use_dual
    primal_flops = sum(masc.fit_flops(int(counts[keep].sum()), sizes.dim, int(keep.sum()))
                       for counts, keep in zip(sizes.counts, primal))
    dual_counts = np.where(sizes.use_dual, sizes.counts, 0).astype(np.float64)
    dual_flops = np.sum(4.0 * dual_counts**2 * sizes.dim + eigh_flops(dual_counts))
    return float(primal_flops + dual_flops)


def masc_score_flops(sizes: ProbeSizes, state: masc.MascProbe) -> float:
    return sizes.members * masc.scoring_flops(state, sizes.n_test)


def dense_score_flops(sizes: ProbeSizes, _state=None) -> float:
    """One [T, D] × [D, C] product per member (linear, NCM, LDA, logistic regression)."""
    return 2.0 * sizes.members * sizes.n_test * sizes.dim * sizes.classes


def class_means_flops(sizes: ProbeSizes, _state=None) -> float:
    """The one-hot product that sums each class's rows: 2·N·C·D per member."""
    return 2.0 * sizes.members * sizes.n_train * sizes.classes * sizes.dim


def no_flops(_sizes: ProbeSizes, _state=None) -> float:
    return 0.0


def knn_score_flops(sizes: ProbeSizes, _state=None) -> float:
    return 2.0 * sizes.members * sizes.n_test * sizes.n_train * sizes.dim


def lda_fit_flops(sizes: ProbeSizes, _state=None) -> float:
    n, c, d = sizes.n_train, sizes.classes, sizes.dim
    k = min(c, d)
    per_member = (2.0 * n * d**2 + eigh_flops(d) + 2.0 * c * d**2 + thin_svd_flops(c, d) + 2.0 * d**2 * k
                  + 4.0 * c * k * d)
    return class_means_flops(sizes) + sizes.members * float(per_member)


def qda_fit_flops(sizes: ProbeSizes, _state=None) -> float:
    per_member = 2.0 * sizes.n_train * sizes.dim**2 + sizes.classes * eigh_flops(sizes.dim)
    return class_means_flops(sizes) + sizes.members * float(per_member)


def qda_score_flops(sizes: ProbeSizes, _state=None) -> float:
    return 2.0 * sizes.members * sizes.n_test * sizes.classes * sizes.dim**2


def logreg_fit_flops(sizes: ProbeSizes, state: logreg.LogRegProbe) -> float:
    epochs = state.losses.shape[-1]
    return 4.0 * sizes.members * epochs * sizes.n_train * sizes.dim * sizes.classes


# ---------------------------------------------------------------------------------------------- probes


def _keyless(fit):
    """A deterministic fit in the protocol's signature (the key is accepted and unused)."""

    @functools.wraps(fit)
    def protocol_fit(features, labels, num_classes, *, key=None):
        del key
        return fit(features, labels, num_classes)

    return protocol_fit


def _logreg_fit(features, labels, num_classes, *, key):
    return over_members.logreg_fit(features, labels, num_classes, key)


def masc_probe(variance: float | int = 0.99, precision: str = "fast", *, name: str = "masc") -> Probe:
    """MASC keeping the variance fraction (or number of components) ``variance``; size = mean components."""
    variance = masc.check_variance(variance)
    check_precision(precision)
    return Probe(
        name,
        fit=_keyless(functools.partial(masc.fit, variance=variance, precision=precision)),
        scores=masc.scores,
        fit_flops=subspace_fit_flops,
        score_flops=masc_score_flops,
        from_gram=functools.partial(masc.fit_from_gram, variance=variance, precision=precision),
        size=masc.mean_components,
        from_stats=lambda stats: masc.fit_from_spectra(stats.spectra(precision), variance),
    )


def linear_probe(precision: str = "fast") -> Probe:
    """The paper-2 linear probe (leading eigenvector of each class's Gram)."""
    check_precision(precision)
    return Probe(
        "linear",
        fit=_keyless(functools.partial(linear.fit, precision=precision)),
        scores=linear.scores,
        fit_flops=subspace_fit_flops,
        score_flops=dense_score_flops,
        from_gram=functools.partial(linear.fit_from_gram, precision=precision),
        from_stats=lambda stats: linear.fit_from_spectra(stats.spectra(precision)),
    )


def _moment_probe(name: str, family, fit_flops, score_flops, **options) -> Probe:
    """NCM, LDA or QDA (``family`` its one-member module): from the engine's shared class moments in memory, or
    from the streamed Gram; ``options``: the scatter's ``chunk_size`` (LDA, QDA)."""
    from_gram = functools.partial(over_members.fit_from_gram, family.fit_from_gram)

    def from_stats(stats):
        if stats.gram is not None:
            return from_gram(stats.gram)
        return over_members.fit_from_moments(family.fit_from_moments, stats.moments(), **options)

    return Probe(name, _keyless(functools.partial(over_members.fit, family.fit, **options)),
                 functools.partial(over_members.scores, family.scores), fit_flops, score_flops, from_gram=from_gram,
                 from_stats=from_stats)


PROBES: dict[str, Probe] = {probe.name: probe for probe in (
    masc_probe(),
    linear_probe(),
    _moment_probe("ncm", ncm, class_means_flops, dense_score_flops),
    Probe("knn", _keyless(over_members.knn_fit), functools.partial(over_members.knn_scores, k=KNN_NEIGHBOURS),
          no_flops, knn_score_flops, search=functools.partial(over_members.knn_neighbours, k=KNN_NEIGHBOURS),
          vote=over_members.knn_vote),
    _moment_probe("lda", lda, lda_fit_flops, dense_score_flops, chunk_size=SCATTER_CHUNK),
    _moment_probe("qda", qda, qda_fit_flops, qda_score_flops, chunk_size=SCATTER_CHUNK),
    Probe("logreg", _logreg_fit, functools.partial(over_members.scores, logreg.scores), logreg_fit_flops,
          dense_score_flops),
)}
# jaxmem.config validates probe names from its own list, so that the specs need not import the probes
if tuple(PROBES) != PROBE_NAMES:
    raise ImportError(f"jaxmem.config.PROBE_NAMES {PROBE_NAMES} must list the registry's probes {tuple(PROBES)}")


def select_probes(names: Sequence[str], *, variance: float | int = 0.99, sensitivity: Sequence[float | int] = (),
                  precision: str = "fast") -> dict[str, Probe]:
    """Configured probes by name, in the order given: ``masc`` at ``variance``, MASC and the linear probe at
    ``precision``, and ``masc(n=…)`` for each ``sensitivity`` value (one that equals ``variance`` is ``masc``)."""
    variance = masc.check_variance(variance)
    names = list(check_probe_names(names))
    names += [masc_variant_name(value) for value in sensitivity
              if not ("masc" in names and masc.check_variance(value) == variance)]
    probes = {}
    for name in dict.fromkeys(names):
        if name == "masc":
            probes[name] = masc_probe(variance, precision)
        elif name == "linear":
            probes[name] = linear_probe(precision)
        elif name in PROBES:
            probes[name] = PROBES[name]
        else:
            probes[name] = masc_probe(variant_variance(name), precision, name=name)
    return probes


__all__ = ["PROBES", "Probe", "ProbeSizes", "check_probe_names", "masc_probe", "masc_variant_name", "linear_probe",
           "registry_order", "select_probes", "variant_variance"]
