"""Last-layer weight editing: the linear probe of the layer feeding the head becomes the head.

Every model ends in a Dense ``out`` (kernel [D, K], bias [K]; the CNN's has no bias) whose input is the
probe layer :data:`EDIT_LAYERS` names: the last post-ReLU hidden layer, or ResNet's global average pool (the CNN
and ResNet dropout in between is the identity in eval mode). Replacing the kernel by the transposed linear-probe
vectors [K, D] and zeroing the bias makes the logits h @ vectorsᵀ = :func:`jaxmem.probes.linear.scores`, so the
edited model predicts exactly as the last-layer linear probe does.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxmem.models import MODEL_NAMES
from jaxmem.probes.linear import LinearProbe

EDIT_LAYERS = {
    "mlp": "fc4",
    "cnn": "fc3",
    "alexnet_cifar100": "fc2",
    "alexnet_tiny_imagenet": "fc2",
    "resnet18": "pool",
}
HEAD = "out"  # the last Dense of every model in jaxmem.models


def _check_name(model_name: str) -> None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"unknown model {model_name!r}; known models: {', '.join(MODEL_NAMES)}")


def edit_layer(model_name: str) -> str:
    """The probe layer whose activations feed the last Dense of ``model_name`` (fit the linear probe there)."""
    _check_name(model_name)
    return EDIT_LAYERS[model_name]


def edit_params(params, probe: LinearProbe, *, keep_bias: bool = False) -> dict:
    """Params with the head replaced by the linear probe: kernel ← vectorsᵀ, bias ← 0 (or kept).

    Args:
      params: a model's ``params`` collection (not the ``{"params": …}`` variables), optionally with a leading
        member axis on every leaf; its ``out`` kernel is [D, K] or [M, D, K].
      probe: a linear probe fitted on the layer :func:`edit_layer` names, vectors [K, D] or [M, K, D].
      keep_bias: keep the head's bias instead of zeroing it (a head without bias, as the CNN's, is left so).

    Returns:
      New params (the input is not modified); the kernel keeps its dtype.
    """
    if HEAD not in params:
        raise ValueError(f"params have no {HEAD!r} Dense layer; top-level keys: {sorted(params)}")
    head = params[HEAD]
    kernel = head["kernel"]
    vectors = jnp.asarray(probe.vectors)
    if vectors.shape[:-2] + vectors.shape[-2:][::-1] != kernel.shape:
        expected = (*kernel.shape[:-2], kernel.shape[-1], kernel.shape[-2])
        raise ValueError(
            f"probe vectors of shape {vectors.shape} do not fit the {HEAD!r} kernel of shape {kernel.shape} "
            f"([..., D, K]); expected vectors of shape {expected} ([..., K, D])"
        )
    edited = {**head, "kernel": jnp.swapaxes(vectors, -1, -2).astype(kernel.dtype)}
    if "bias" in head and not keep_bias:
        edited["bias"] = jnp.zeros_like(head["bias"])
    return {**params, HEAD: edited}


__all__ = ["EDIT_LAYERS", "HEAD", "edit_layer", "edit_params"]
