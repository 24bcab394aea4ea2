"""The fully connected MLP (MNIST, CIFAR-10): flatten → 128 → 512 → 2048 → 2048 → classes."""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxmem.models.init import layer_inits

PROBE_LAYERS = ("input", "fc1", "fc2", "fc3", "fc4")
HIDDEN_WIDTHS = (128, 512, 2048, 2048)


class MLP(nn.Module):
    """Four ReLU Dense layers ``fc1 … fc4`` and a Dense ``out`` head; ``init`` picks the initialisers.

    ``__call__(x [B, H, W, C], train=False) -> (logits [B, K], {"input": [B, H*W*C], "fc1": [B, 128], …})``.
    The input is flattened in NHWC order; ``train`` is accepted for a uniform interface and changes nothing.
    """

    num_classes: int
    init_scheme: str = "torch"  # "torch" (PyTorch's default initialisers) or "flax"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        hidden = x.reshape((x.shape[0], -1))
        activations = {"input": hidden}
        for index, width in enumerate(HIDDEN_WIDTHS, start=1):
            name = f"fc{index}"
            hidden = nn.relu(nn.Dense(width, name=name, **layer_inits(self.init_scheme, hidden.shape[-1]))(hidden))
            activations[name] = hidden
        logits = nn.Dense(self.num_classes, name="out", **layer_inits(self.init_scheme, hidden.shape[-1]))(hidden)
        return logits, activations
