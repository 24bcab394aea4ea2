"""ResNet-18 for CIFAR-10 (docs/methods.md#models): 3×3 stem, four stages of two BasicBlocks, global average pool,
Dense head.

Parameter names follow torchvision so a PyTorch state dict maps one-to-one: ``conv1``/``bn1`` (stem),
``layer{s}_{b}`` for stage ``s`` in 1..4 and block ``b`` in 0..1 (each with ``conv1``, ``bn1``, ``conv2``, ``bn2`` and,
when the shape changes, ``shortcut_conv``/``shortcut_bn``), and ``out``. Convs have no bias and explicit symmetric
padding (PyTorch semantics). BatchNorm has ``momentum=0.9``, ``epsilon=1e-5`` (PyTorch's ``momentum=0.1``,
``eps=1e-5``); unlike PyTorch, Flax updates the running variance with the biased batch variance.

Probing uses eval mode by default, ``train=False``: BatchNorm normalises with the running averages. The reference
probed in train mode with batch 1, where each sample is normalised by its own spatial statistics;
:class:`PerSampleBatchNorm` (``bn_mode="reference"``) reproduces that, vmapped over the samples.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmem.config import BN_MODES
from jaxmem.models.conv import Conv, conv_impl
from jaxmem.models.init import layer_inits

PROBE_LAYERS = ("l0", "l0_1", "l0_2", "l0_3", "l1", "l2", "l3", "l4", "pool")
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _conv3x3(features: int, stride: int, name: str, impl: str, init: str, in_channels: int) -> nn.Conv:
    return Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), use_bias=False, name=name,
                impl=impl, **layer_inits(init, 9 * in_channels))


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape((x.shape[0], -1))


class BasicBlock(nn.Module):
    """conv3×3/s → BN → ReLU → conv3×3 → BN, plus identity or 1×1/s conv + BN shortcut, then ReLU.

    ``__call__(x [B, H, W, C], train) -> (output [B, H/s, W/s, F], first_relu [B, H/s, W/s, F])``.
    """

    features: int
    stride: int
    init_scheme: str = "torch"
    conv_impl: str = "xla"  # training convolution

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        impl = conv_impl(train, self.conv_impl)
        conv1 = _conv3x3(self.features, self.stride, "conv1", impl, self.init_scheme, x.shape[-1])
        first_relu = nn.relu(_batch_norm(train, "bn1")(conv1(x)))
        conv2 = _conv3x3(self.features, 1, "conv2", impl, self.init_scheme, self.features)
        residual = _batch_norm(train, "bn2")(conv2(first_relu))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            strides = (self.stride, self.stride)
            shortcut = Conv(self.features, (1, 1), strides=strides, padding="VALID", use_bias=False,
                            name="shortcut_conv", impl=impl, **layer_inits(self.init_scheme, x.shape[-1]))(x)
            shortcut = _batch_norm(train, "shortcut_bn")(shortcut)
        return nn.relu(residual + shortcut), first_relu


class ResNet18(nn.Module):
    """ResNet-18 (CIFAR stem) with the probe layers; ``init`` picks the initialisers.

    ``__call__(x [B, 32, 32, 3], train=False) -> (logits [B, K], {layer: [B, D]})`` with widths
    l0, l0_1, l0_2, l0_3, l1 = 16·16·64; l2 = 8·8·128; l3 = 4·4·256; l4 = 2·2·512; pool = 512.
    ``train=True`` normalises with batch statistics and updates ``batch_stats`` (pass ``mutable=["batch_stats"]``).
    With ``dropout > 0`` and ``train=True``, dropout (rng ``"dropout"``) acts on ``pool`` before ``out``; the
    ``pool`` probe activation is taken before dropout.
    """

    num_classes: int
    dropout: float = 0.0
    init_scheme: str = "torch"  # "torch" (PyTorch's default initialisers) or "flax"
    conv_impl: str = "xla"  # training convolution, "xla" or "patches" (:func:`jaxmem.models.conv.default_conv_impl`)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        stem = _conv3x3(STAGE_WIDTHS[0], 1, "conv1", conv_impl(train, self.conv_impl), self.init_scheme, x.shape[-1])
        hidden = nn.relu(_batch_norm(train, "bn1")(stem(x)))
        hidden = nn.max_pool(hidden, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pads with -inf
        activations = {"l0": _flatten(hidden)}
        for stage, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
            for block in range(BLOCKS_PER_STAGE):
                block_stride = stride if block == 0 else 1
                hidden, first_relu = BasicBlock(width, block_stride, self.init_scheme, self.conv_impl,
                                                name=f"layer{stage}_{block}")(hidden, train=train)
                if (stage, block) == (1, 0):
                    activations["l0_1"] = _flatten(first_relu)
                    activations["l0_2"] = _flatten(hidden)
                elif (stage, block) == (1, 1):
                    activations["l0_3"] = _flatten(first_relu)
            activations[f"l{stage}"] = _flatten(hidden)
        hidden = jnp.mean(hidden, axis=(1, 2))
        activations["pool"] = hidden
        hidden = nn.Dropout(self.dropout, deterministic=not train)(hidden)
        logits = nn.Dense(self.num_classes, name="out", **layer_inits(self.init_scheme, hidden.shape[-1]))(hidden)
        return logits, activations


@dataclasses.dataclass(frozen=True)
class PerSampleBatchNorm:
    """``model`` applied as the reference probed it: train-mode BatchNorm on one sample at a time.

    ``apply(variables, x [B, ...], train=False)`` returns what ``model.apply(variables, x[i:i+1], train=True)``
    returns for each ``i`` alone, stacked (one vmapped program, not a loop): every image is normalised by its own
    per-channel spatial statistics. The running statistics are neither used nor updated, and dropout is off.
    Drop-in for a model wherever activations are only read (:mod:`jaxmem.features`); hashable, so it can be a
    static argument of ``jax.jit``.
    """

    model: nn.Module

    def apply(self, variables, x: jax.Array, *, train: bool = False, **kwargs):
        if train or kwargs:
            raise ValueError("PerSampleBatchNorm only evaluates (train=False, no other options)")
        model = self.model.clone(dropout=0.0) if hasattr(self.model, "dropout") else self.model

        def one(sample):
            outputs, _ = model.apply(variables, sample[None], train=True, mutable=["batch_stats"])
            return jax.tree.map(lambda leaf: leaf[0], outputs)

        return jax.vmap(one)(x)


def with_bn_mode(model, bn_mode: str = "eval"):
    """``model`` for probing: itself (``"eval"``: running averages) or :class:`PerSampleBatchNorm`
    (``"reference"``: each sample normalised by its own statistics, as the authors' activation dumps)."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    return model if bn_mode == "eval" else PerSampleBatchNorm(model)
