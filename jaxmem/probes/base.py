"""What every probe shares: the :class:`Probe` protocol, input validation and the precision modes.

A probe is a small structure of pure functions (the Optax shape), with a leading member axis throughout::

    state = probe.fit(features [M, N, D], labels [M, N], num_classes, key=key)
    scores = probe.scores(state, features [M, T, D])   # [M, T, C]; prediction = argmax, ties → lowest class

Training features may also be [N, D], shared by all members (the input layer); scored features [T, D] likewise.
A probe that is a function of per-class counts, sums and second moments also fits from the streamed
:class:`~jaxmem.probes.gram.GramState` (``from_gram``), so a layer too large for memory is probed without its
activations; ``from_stats`` fits it from the statistics the engine shares between probes
(:mod:`jaxmem.probes.engine`), and a neighbour probe splits its scoring into a label-free ``search`` and a
``vote``, so one search serves every grouping.
Each probe states its FLOPs for fitting and scoring from :class:`ProbeSizes`, and the per-member
size it reports in the results (MASC: mean components per class; NaN for the others).
The probes themselves are registered by name in :mod:`jaxmem.probes.registry`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import PRECISIONS, check_precision


class ProbeSizes(NamedTuple):
    """The sizes of one layer's problem that the FLOP formulas need."""

    counts: np.ndarray  # [M, C] training samples per member and class
    use_dual: np.ndarray  # [M, C] bool: MASC/linear solve the N_c × N_c dual problem (prepare_fit's "auto" rule)
    n_test: int  # T
    dim: int  # D

    @property
    def members(self) -> int:
        return self.counts.shape[0]

    @property
    def n_train(self) -> int:
        return int(self.counts[0].sum())

    @property
    def classes(self) -> int:
        return self.counts.shape[1]


class Probe(NamedTuple):
    """One probe as pure functions; see the module docstring for the shapes."""

    name: str  # the results table's ``probe`` column
    fit: Callable[..., Any]  # (features, labels, num_classes, *, key) -> state
    scores: Callable[[Any, jax.Array], jax.Array]  # (state, features) -> [M, T, C]
    fit_flops: Callable[[ProbeSizes, Any], float]  # (sizes, state) -> flops of fit, all members
    score_flops: Callable[[ProbeSizes, Any], float]  # (sizes, state) -> flops of scoring T samples, all members
    from_gram: Optional[Callable[[Any], Any]] = None  # (GramState [M, ...]) -> state; None: needs the activations
    size: Optional[Callable[[Any], np.ndarray]] = None  # state -> [M] probe size for the results; None: NaN
    # (Statistics) -> state: fit from the statistics the engine shares between probes (jaxmem.probes.engine)
    from_stats: Optional[Callable[[Any], Any]] = None
    # (train [.., N, D], queries [.., T, D]) -> neighbour indices: a label-free search the engine runs once per
    # layer and split, whose result ``vote`` (state, indices) -> scores turns into each grouping's scores
    search: Optional[Callable[[Any, Any], jax.Array]] = None
    vote: Optional[Callable[[Any, jax.Array], jax.Array]] = None

    @property
    def streams(self) -> bool:
        return self.from_gram is not None

    def predict(self, state, features) -> jax.Array:
        """argmax of the scores (ties → lowest class index): int32 [M, T]."""
        scores = self.scores(state, features)
        with precision_context(scores.dtype == np.float64):  # exact-mode scores stay float64
            return jnp.argmax(scores, axis=-1).astype(jnp.int32)

    def member_sizes(self, state, num_members: int) -> np.ndarray:
        """Per-member probe size [M] (NaN when the probe has none)."""
        return np.full(num_members, np.nan) if self.size is None else np.asarray(self.size(state), np.float64)


# ------------------------------------------------------------------------------------------------ precision


def precision_context(exact: bool):
    """float64 enabled for exact mode; the caller's setting otherwise."""
    return jax.enable_x64(True) if exact else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------- validation


def with_member_axis(features, labels, num_classes: int) -> tuple[bool, np.ndarray]:
    """Validate a fit's inputs; return (features have no member axis, labels [M, N] numpy).

    ``features`` [N, D] (shared by all members) or [M, N, D]; ``labels`` [N] or [M, N] integers in
    [0, num_classes). Labels [N] with features [M, N, D] are broadcast to every member.
    """
    features_ndim = np.ndim(features)
    if features_ndim not in (2, 3):
        raise ValueError(f"features must be [N, D] or [M, N, D], got shape {np.shape(features)}")
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be [N] or [M, N], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), found values in [{labels.min()}, {labels.max()}]"
        )
    n = np.shape(features)[-2]
    if labels.shape[-1] != n:
        raise ValueError(f"features have {n} samples but labels have {labels.shape[-1]}")
    if features_ndim == 3 and labels.ndim == 2 and labels.shape[0] != np.shape(features)[0]:
        raise ValueError(
            f"member axes differ: features {np.shape(features)[0]}, labels {labels.shape[0]}"
        )
    if labels.ndim == 1:
        labels = np.broadcast_to(labels, (np.shape(features)[0] if features_ndim == 3 else 1, n))
    return features_ndim == 2, labels


def check_finite(features: jax.Array) -> None:
    if not bool(jnp.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values")


def check_chunk(chunk) -> int:
    """``chunk`` (rows scored or searched together) as a positive int; raise otherwise."""
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return int(chunk)


class FitInputs(NamedTuple):
    """Validated inputs of a per-class eigenproblem fit (see :func:`prepare_fit`)."""

    features: jax.Array  # [M|1, N, D] or [N, D] in the mode's dtype (float64 exact, float32 fast)
    labels: np.ndarray  # [M, N] int
    shared: bool  # features without a member axis, shared by all members
    counts: np.ndarray  # [M, C] samples per class
    use_primal: np.ndarray  # [M, C] bool: D × D Gram eigenproblem
    use_dual: np.ndarray  # [M, C] bool: N_c × N_c problem (non-empty classes with fewer samples than D)
    has_member_axis: bool  # the caller passed a member axis (features [M, N, D] or labels [M, N])


def prepare_fit(features, labels, num_classes: int, exact: bool, dual="auto") -> FitInputs:
    """Check and cast a fit's inputs and choose primal or dual per class; call inside :func:`precision_context`.

    ``dual``: "auto" (dual where N_c < D), True (dual for every non-empty class) or False (never).
    """
    has_member_axis = np.ndim(features) == 3 or np.ndim(labels) == 2
    shared, labels = with_member_axis(features, labels, num_classes)
    features = jnp.asarray(features, jnp.float64 if exact else jnp.float32)
    check_finite(features)
    counts = np.stack([np.bincount(y, minlength=num_classes) for y in labels])  # [M, C]
    dim = features.shape[-1]
    use_dual = (counts > 0) & (counts < dim) if dual == "auto" else (counts > 0) & bool(dual)
    return FitInputs(features, labels, shared, counts, (counts > 0) & ~use_dual, use_dual, has_member_axis)


__all__ = ["FitInputs", "PRECISIONS", "Probe", "ProbeSizes", "check_chunk", "check_finite", "check_precision",
           "prepare_fit", "precision_context", "with_member_axis"]
