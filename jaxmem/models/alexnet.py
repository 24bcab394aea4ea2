"""The two AlexNet variants (CIFAR-100 at 32×32, Tiny ImageNet at 64×64), in PyTorch semantics."""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax

from jaxmem.models.conv import Conv, conv_impl
from jaxmem.models.init import layer_inits

PROBE_LAYERS = ("flat", "fc1", "fc2")
DENSE_WIDTH = 4096


class ConvLayer(NamedTuple):
    """One conv of the feature stack: output channels, square kernel, stride, symmetric padding per side."""

    features: int
    kernel: int
    stride: int
    padding: int


# 32→16 (conv1) →7 (pool) →7 (conv2) →3 (pool) →3 →3 →3 (conv3-5) →1 (pool): flat 256.
CIFAR100_CONVS = (
    ConvLayer(64, 3, 2, 1),
    ConvLayer(192, 3, 1, 1),
    ConvLayer(384, 3, 1, 1),
    ConvLayer(256, 3, 1, 1),
    ConvLayer(256, 3, 1, 1),
)
# 64→15 (conv1) →7 (pool) →7 (conv2) →3 (pool) →3 →3 →3 (conv3-5) →1 (pool): flat 256.
TINY_IMAGENET_CONVS = (
    ConvLayer(64, 11, 4, 2),
    ConvLayer(192, 5, 1, 2),
    ConvLayer(384, 3, 1, 1),
    ConvLayer(256, 3, 1, 1),
    ConvLayer(256, 3, 1, 1),
)
_POOL_AFTER = (1, 2, 5)  # a 3×3/2 max-pool without padding follows these convs


class AlexNet(nn.Module):
    """Convs ``conv1 … conv5`` (ReLU), Dense ``fc1``, ``fc2`` (4096, ReLU) and ``out``; no dropout.

    Convs use explicit symmetric padding ``((p, p), (p, p))`` and pools are 3×3/2 VALID, i.e. PyTorch
    ``Conv2d(…, padding=p)`` and ``MaxPool2d(3, 2)``; Flax ``"SAME"`` would pad strided convs asymmetrically.
    ``flat`` is the NHWC flatten of the final 1×1×256 map. ``init`` picks the initialisers.

    ``__call__(x [B, H, W, 3], train=False) -> (logits [B, K], {"flat": [B, 256], "fc1", "fc2": [B, 4096]})``.
    """

    num_classes: int
    convs: tuple[ConvLayer, ...]
    init_scheme: str = "torch"  # "torch" (PyTorch's default initialisers) or "flax"
    conv_impl: str = "xla"  # training convolution, "xla" or "patches" (:func:`jaxmem.models.conv.default_conv_impl`)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        hidden = x
        for index, layer in enumerate(self.convs, start=1):
            pad = (layer.padding, layer.padding)
            conv = Conv(
                layer.features,
                (layer.kernel, layer.kernel),
                strides=(layer.stride, layer.stride),
                padding=(pad, pad),
                name=f"conv{index}",
                impl=conv_impl(train, self.conv_impl),
                **layer_inits(self.init_scheme, layer.kernel * layer.kernel * hidden.shape[-1]),
            )
            hidden = nn.relu(conv(hidden))
            if index in _POOL_AFTER:
                hidden = nn.max_pool(hidden, (3, 3), strides=(2, 2), padding="VALID")
        hidden = hidden.reshape((hidden.shape[0], -1))
        activations = {"flat": hidden}
        for name in ("fc1", "fc2"):
            dense = nn.Dense(DENSE_WIDTH, name=name, **layer_inits(self.init_scheme, hidden.shape[-1]))
            hidden = nn.relu(dense(hidden))
            activations[name] = hidden
        logits = nn.Dense(self.num_classes, name="out", **layer_inits(self.init_scheme, hidden.shape[-1]))(hidden)
        return logits, activations
