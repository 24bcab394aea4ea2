"""Layer activations of all members, batch by batch, and the probes' two ways to consume them.

* In memory: :func:`collect_activations` returns ``{layer: [M, N, D]}`` for the layers that fit a byte budget;
  every probe then fits on them directly (MASC takes the cheap dual problem when a class has fewer samples than D).
* Streaming: :func:`stream_grams` visits each member's samples in its own class-sorted chunk order
  (:func:`jaxmem.probes.gram.chunk_schedule`), applies the model to one chunk at a time and adds the chunk's
  activations into every layer's per-class Gram, class sums and counts, so ``[M, N, D]`` is never materialised;
  the probes that stream (:attr:`jaxmem.probes.base.Probe.from_gram`) fit from them.
  :func:`stream_predictions` scores fitted probes chunk by chunk in the same way.

The model is applied in eval mode (BatchNorm running averages; no dropout).
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes.base import Probe, precision_context
from jaxmem.probes.gram import ChunkSchedule, GramState, chunk_schedule, gram_init, gram_update


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


@functools.partial(jax.jit, static_argnames=("model", "layers", "num_classes", "widths", "dtype"))
def _stream_grams(model, variables, x, index, chunk_class, layers, num_classes, widths, dtype):
    def one_member(v, member_index, member_chunk_class):
        init = {name: gram_init(num_classes, widths[i], dtype) for i, name in enumerate(layers)}

        def step(states, chunk):
            rows, cls = chunk
            valid = rows >= 0
            _, acts = model.apply(v, x[jnp.where(valid, rows, 0)], train=False)
            return {name: gram_update(states[name], acts[name], cls, valid) for name in layers}, None

        states, _ = jax.lax.scan(step, init, (member_index, member_chunk_class))
        return states

    return jax.vmap(one_member)(variables, index, chunk_class)


def stream_grams(
    model, variables, x, labels, num_classes: int, layers: Sequence[str], *, chunk_size: int = 256,
    precision: str = "fast",
) -> dict[str, GramState]:
    """Per-class moments {layer: GramState with gram [M, C, D, D]} without materialising activations.

    ``labels`` is [M, N] (each member's grouping labels) and ``x`` [N, ...] the shared normalised inputs. The
    model runs in float32; ``precision="exact"`` accumulates the Grams in float64.
    """
    layers = tuple(layers)
    widths = layer_widths(model, variables, x, layers)
    schedule: ChunkSchedule = chunk_schedule(np.asarray(labels), num_classes, chunk_size)
    exact = precision == "exact"
    with precision_context(exact):
        return _stream_grams(model, variables, jnp.asarray(x), jnp.asarray(schedule.index),
                             jnp.asarray(schedule.chunk_class), layers, num_classes,
                             tuple(widths[name] for name in layers), jnp.float64 if exact else jnp.float32)


def stream_predictions(
    model, variables, x, fitted: Mapping[tuple[str, str], tuple[Probe, object]], *, batch_size: int = 1024
) -> dict[tuple[str, str], np.ndarray]:
    """Predictions [M, N] for every member under the keys of ``fitted`` ``{(layer, name): (probe, state)}``,
    computing the activations batch by batch, once per batch for all probes of a layer."""
    layers = tuple(dict.fromkeys(layer for layer, _ in fitted))

    def predict(batch):
        acts = _apply_members(model, variables, batch, layers)
        return {key: probe.predict(state, acts[key[0]]) for key, (probe, state) in fitted.items()}

    return {key: np.asarray(pred) for key, pred in _over_batches(predict, x, batch_size).items()}
