"""The small VGG-style CNN (MNIST, Fashion-MNIST, CIFAR-10) with optional dropout and max-norm (paper 2).

See docs/methods.md#models.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxmem.models.conv import Conv, conv_impl
from jaxmem.models.init import layer_inits

PROBE_LAYERS = ("input", "flat", "fc1", "fc2", "fc3")
CONV_WIDTHS = (16, 16, 32, 32, 64, 64)  # a 2×2/2 VALID max-pool follows every second conv
DENSE_WIDTH = 250
MAX_NORM = 3.0  # the reference's torch.renorm(x, 1, 1, 3) after each hidden dropout


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2/2 VALID max-pool of ``[B, H, W, C]`` (odd edges dropped) as a reshape and a max.

    Same values as ``nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")``; its gradient is an elementwise
    mask instead of XLA's select-and-scatter, which made the CNN's training step ~2× slower on CPU. (Exact ties
    in a window share the gradient instead of sending it to the first maximum; after a ReLU ties occur at 0, where
    the ReLU's own gradient is 0.)
    """
    batch, height, width, channels = x.shape
    x = x[:, : height // 2 * 2, : width // 2 * 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def renorm_units(x: jax.Array, max_norm: float = MAX_NORM) -> jax.Array:
    """``torch.renorm(x, p=1, dim=1, maxnorm=max_norm)`` of ``x [B, D]``: every unit's column ``x[:, j]`` whose L1
    norm over the batch exceeds ``max_norm`` is scaled by ``max_norm / (norm + 1e-7)``; the others are unchanged.

    Differentiated through the norm, as PyTorch does.
    """
    norm = jnp.sum(jnp.abs(x), axis=0, keepdims=True)
    return x * jnp.where(norm > max_norm, max_norm / (norm + 1e-7), 1.0)


class CNN(nn.Module):
    """Convs ``conv1 … conv6`` (3×3, stride 1, padding 1 per side, ReLU), Dense ``fc1 … fc3``, ``out`` (no bias).

    2×2/2 VALID pools after conv2, conv4, conv6 map 28→14→7→3 and 32→16→8→4, so ``flat`` is 576 wide for
    28×28×1 and 1024 for 32×32×3. ``flat`` is in NHWC (row, column, channel) order, so a PyTorch model that
    flattens ``[C, H, W]`` needs its ``fc1`` rows permuted. ``init`` picks the initialisers.

    ``__call__(x [B, H, W, C], train=False) -> (logits [B, K], {"input", "flat", "fc1", "fc2", "fc3": [B, D]})``.
    With ``dropout > 0``, each hidden Dense's ReLU output goes through dropout (rng collection ``"dropout"``;
    the identity when ``train=False``) and then :func:`renorm_units`, in both modes, as the reference does
    (it calls ``torch.renorm`` after ``F.dropout`` whatever the mode): the next layer's input is then capped
    per unit over the batch, so with dropout the logits, ``fc2`` and ``fc3`` depend on which samples share a
    batch, in evaluation too. The probe activations are the post-ReLU outputs *before* dropout and renorm.
    With ``dropout == 0`` neither is applied.
    """

    num_classes: int
    dropout: float = 0.0
    init_scheme: str = "torch"  # "torch" (PyTorch's default initialisers) or "flax"
    conv_impl: str = "xla"  # training convolution, "xla" or "patches" (:func:`jaxmem.models.conv.default_conv_impl`)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        batch = x.shape[0]
        activations = {"input": x.reshape((batch, -1))}
        hidden = x
        for index, width in enumerate(CONV_WIDTHS, start=1):
            conv = Conv(width, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), name=f"conv{index}",
                        impl=conv_impl(train, self.conv_impl), **layer_inits(self.init_scheme, 9 * hidden.shape[-1]))
            hidden = nn.relu(conv(hidden))
            if index % 2 == 0:
                hidden = max_pool_2x2(hidden)
        hidden = hidden.reshape((batch, -1))
        activations["flat"] = hidden
        for index in range(1, 4):
            name = f"fc{index}"
            dense = nn.Dense(DENSE_WIDTH, name=name, **layer_inits(self.init_scheme, hidden.shape[-1]))
            hidden = nn.relu(dense(hidden))
            activations[name] = hidden
            if self.dropout > 0:
                hidden = renorm_units(nn.Dropout(self.dropout, deterministic=not train)(hidden))
        logits = nn.Dense(self.num_classes, use_bias=False, name="out",
                          **layer_inits(self.init_scheme, hidden.shape[-1]))(hidden)
        return logits, activations
