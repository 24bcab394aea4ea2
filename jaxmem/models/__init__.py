"""The model zoo, chosen by name: every model maps NHWC images to (logits, probe-layer activations).

All models are Flax linen modules, initialised as PyTorch does by default (``init="torch"``) or with Flax's own
initialisers (``init="flax"``); the framework cross-checks load our weights rather than re-initialising. They
are pure: ``model.init`` / ``model.apply`` on a params pytree, so a member axis is ``jax.vmap(model.apply)`` over
stacked params. ``model.apply(variables, x, train=…)`` returns
``(logits [B, K], {layer: [B, D]})`` with exactly :func:`probe_layers` as keys, in that order.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax

from jaxmem.models import alexnet, cnn, mlp, resnet
from jaxmem.models.alexnet import AlexNet
from jaxmem.models.cnn import CNN
from jaxmem.models.conv import CONV_IMPLS, default_conv_impl
from jaxmem.models.init import INITS, check_init
from jaxmem.models.mlp import MLP
from jaxmem.models.resnet import ResNet18

MODEL_NAMES = ("mlp", "cnn", "alexnet_cifar100", "alexnet_tiny_imagenet", "resnet18")
DROPOUT_MODELS = ("cnn", "resnet18")

_PROBE_LAYERS = {
    "mlp": mlp.PROBE_LAYERS,
    "cnn": cnn.PROBE_LAYERS,
    "alexnet_cifar100": alexnet.PROBE_LAYERS,
    "alexnet_tiny_imagenet": alexnet.PROBE_LAYERS,
    "resnet18": resnet.PROBE_LAYERS,
}


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")


def get_model(name: str, num_classes: int, *, init: str = "torch", dropout: float = 0.0,
              conv_impl: str | None = None) -> nn.Module:
    """The model ``name`` with a ``num_classes``-way head.

    ``init``: ``"torch"`` (PyTorch's default initialisers, the paper preset) or ``"flax"`` (Flax's defaults);
    ``dropout`` only for ``cnn`` and ``resnet18``; ``conv_impl``: the convolution of training steps, ``"xla"`` or
    ``"patches"`` (parameters and values are the same), by default :func:`~jaxmem.models.conv.default_conv_impl`
    of the default backend, decided here once rather than inside the model.
    """
    _check_name(name)
    check_init(init)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if dropout > 0 and name not in DROPOUT_MODELS:
        raise ValueError(f"dropout={dropout} given for model {name!r}; only {', '.join(DROPOUT_MODELS)} take dropout")
    conv_impl = default_conv_impl(jax.default_backend()) if conv_impl is None else conv_impl
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    if name == "mlp":
        return MLP(num_classes, init_scheme=init)
    if name == "cnn":
        return CNN(num_classes, dropout=dropout, init_scheme=init, conv_impl=conv_impl)
    if name == "alexnet_cifar100":
        return AlexNet(num_classes, convs=alexnet.CIFAR100_CONVS, init_scheme=init, conv_impl=conv_impl)
    if name == "alexnet_tiny_imagenet":
        return AlexNet(num_classes, convs=alexnet.TINY_IMAGENET_CONVS, init_scheme=init, conv_impl=conv_impl)
    return ResNet18(num_classes, dropout=dropout, init_scheme=init, conv_impl=conv_impl)


def probe_layers(name: str) -> tuple[str, ...]:
    """The probe-layer names of model ``name``, in model order (the keys of its activation dict)."""
    _check_name(name)
    return _PROBE_LAYERS[name]


def chosen_probe_layers(name: str, layers=()) -> tuple[str, ...]:
    """``layers`` checked against model ``name``'s probe layers (``ValueError`` naming the unknown ones); all of
    them when ``layers`` is empty."""
    known = probe_layers(name)
    unknown = sorted(set(layers or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown layers {unknown} for {name}; probe layers: {known}")
    return tuple(layers or known)


def trained_probe_layers(name: str) -> tuple[str, ...]:
    """Model ``name``'s probe layers that training changes: all but the input."""
    return tuple(layer for layer in probe_layers(name) if layer != "input")


def count_params(params) -> int:
    """Number of scalars in one member's params pytree (pass ``variables["params"]``, not ``batch_stats``)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


__all__ = [
    "AlexNet", "CNN", "DROPOUT_MODELS", "INITS", "MLP", "MODEL_NAMES", "ResNet18", "count_params", "get_model",
    "probe_layers",
]
