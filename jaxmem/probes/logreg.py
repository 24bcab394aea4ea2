"""Multinomial logistic regression for ONE member: one Dense(D→C) with bias trained on softmax cross-entropy.

LeCun-normal kernel, zero bias (as Flax's Dense), Adam, 20 epochs of batch 128 reshuffled every epoch from the key
(the last batch of an epoch is smaller), no feature scaling. The epoch loop is a ``lax.scan`` over epochs of a
``lax.scan`` over batches. Cost epochs·N·D·C·4 flops (logits and the kernel gradient; no gradient flows to the
features); scoring T·D·C·2. Pure and undecorated; :mod:`jaxmem.probes.over_members` adds the member axis.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxmem.probes.gram import HIGHEST


class LogRegProbe(NamedTuple):
    """One member's logistic regression; stacked, every field gains a leading member axis ``[M, ...]``."""

    kernel: jax.Array  # [D, C]
    bias: jax.Array  # [C]
    losses: jax.Array  # [E] mean training cross-entropy of each epoch


def fit(key: jax.Array, features: jax.Array, labels: jax.Array, num_classes: int, *, epochs: int = 20,
        batch_size: int = 128, learning_rate: float = 1e-3) -> LogRegProbe:
    """Adam on softmax cross-entropy of ``features`` [N, D] float32 and ``labels`` [N]; ``key`` draws the
    initialisation and each epoch's batch order."""
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


def scores(probe: LogRegProbe, features: jax.Array) -> jax.Array:
    """Logits [T, C] of ``features`` [T, D]."""
    return jnp.matmul(features, probe.kernel, precision=HIGHEST) + probe.bias


__all__ = ["LogRegProbe", "fit", "scores"]
