"""Layer activations of all members, batch by batch: collected whole (:func:`collect_activations`), or as the
probing engine's feature source (:func:`model_source`; :mod:`jaxmem.probes.engine` decides what it holds in memory
and what it streams into per-class statistics).

The model is applied in eval mode (BatchNorm running averages; no dropout).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes.engine import FeatureSource


def member_variables(params, batch_stats=None) -> dict:
    """Flax variables with a leading member axis."""
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


@functools.partial(jax.jit, static_argnames=("model", "layers"))
def _apply_members(model, variables, x, layers):
    """Activations {layer: [M, B, D]} of all members on one shared batch x [B, ...]."""

    def one(v):
        _, acts = model.apply(v, x, train=False)
        return {name: acts[name] for name in layers}

    return jax.vmap(one)(variables)


def _logits(model, variables, x):
    """Logits [M, B, C] of all members on one shared batch x [B, ...]."""
    return jax.vmap(lambda v: model.apply(v, x, train=False)[0])(variables)


@functools.partial(jax.jit, static_argnames="model")
def _member_classes(model, variables, x):
    """Predicted classes [M, B] of all members on one shared batch x [B, ...]."""
    return jnp.argmax(_logits(model, variables, x), axis=-1)


def _over_batches(batch_fn, x, batch_size: int):
    """``batch_fn`` on consecutive batches of the shared inputs x [N, ...] (host or device), its outputs (pytrees
    of [M, B, ...] leaves) concatenated along the sample axis."""
    parts = [batch_fn(jnp.asarray(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    return jax.tree.map(lambda *chunks: jnp.concatenate(chunks, axis=1), *parts)


def collect_activations(
    model, variables, x, layers: Sequence[str], *, batch_size: int = 1024
) -> dict[str, jax.Array]:
    """Activations {layer: [M, N, D]} of every member on the shared inputs x [N, ...] (float32, normalised)."""
    layers = tuple(layers)
    return _over_batches(lambda batch: _apply_members(model, variables, batch, layers), x, batch_size)


def member_predictions(model, variables, x, *, batch_size: int = 1024) -> np.ndarray:
    """The model's predicted classes [M, N] for every member on the shared inputs x [N, ...]."""
    return np.asarray(_over_batches(lambda batch: _member_classes(model, variables, batch), x, batch_size))


def member_logits(model, variables, x, *, batch_size: int = 1024) -> np.ndarray:
    """The model's logits [M, N, C] for every member on the shared inputs x [N, ...]."""
    return np.asarray(_over_batches(lambda batch: _jitted_logits(model, variables, batch), x, batch_size))


_jitted_logits = jax.jit(_logits, static_argnames="model")


def layer_widths(model, variables, sample_x, layers: Sequence[str]) -> dict[str, int]:
    """Width D of each probe layer (shape inference only, nothing is computed)."""
    one = jax.tree.map(lambda a: a[0], variables)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False)[1], one, jnp.asarray(sample_x[:1]))
    return {name: int(out[name].shape[-1]) for name in layers}


def model_source(model, variables, x_train, x_test, layers: Sequence[str], *, batch_size: int = 1024) -> FeatureSource:
    """The probe ``layers`` of every member (member axis on ``variables``) on the shared normalised inputs, as a
    :class:`~jaxmem.probes.engine.FeatureSource`: chunks [M, B, D] computed ``batch_size`` rows at a time (fewer
    when the engine asks for smaller chunks), all layers of a chunk in one application of the model."""
    layers = tuple(layers)
    widths = layer_widths(model, variables, x_train, layers)
    inputs = {"train": x_train, "test": x_test}
    num_members = len(jax.tree.leaves(variables)[0])

    def chunks(names, split, rows, dtype):
        del dtype  # the model computes float32
        x, step = inputs[split], batch_size if rows is None else min(rows, batch_size)
        for start in range(0, len(x), step):
            yield _apply_members(model, variables, jnp.asarray(x[start : start + step]), tuple(names))

    return FeatureSource(widths, num_members, {split: len(x) for split, x in inputs.items()}, chunks)
