"""Parameter initialisers: PyTorch's defaults (the authors trained in PyTorch) or Flax's own.

PyTorch initialises ``nn.Linear`` and ``nn.Conv2d`` kernels with ``kaiming_uniform(a=√5)`` and biases with the same
bound, i.e. both U(−1/√fan_in, +1/√fan_in), where fan_in counts the inputs of one output unit (``in·kh·kw`` for a
convolution); BatchNorm starts at scale 1, bias 0. Flax draws kernels LeCun-normal (about 1.73× PyTorch's standard
deviation) and zero biases. The choice changes how fast a network memorises (docs/methods.md, "Initialisation").
"""
from __future__ import annotations

import math

import jax

from jaxmem.config import INITS


def check_init(init: str) -> str:
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return init


def torch_uniform(fan_in: int):
    """Flax initialiser drawing U(−1/√fan_in, +1/√fan_in), PyTorch's default for Linear/Conv kernels and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def initializer(key, shape, dtype=jax.numpy.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return initializer


def layer_inits(init: str, fan_in: int) -> dict:
    """Keyword arguments (``kernel_init``, ``bias_init``) for a Dense/Conv with ``fan_in`` inputs per output unit;
    empty for Flax's defaults."""
    if check_init(init) == "flax":
        return {}
    return {"kernel_init": torch_uniform(fan_in), "bias_init": torch_uniform(fan_in)}
