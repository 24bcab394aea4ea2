"""Convolutions for the model zoo: XLA's convolution, or on CPU the same convolution as patches times a matrix.

XLA:CPU runs a convolution inside a loop body (our training epoch is a ``lax.scan`` over steps) on a slow
generic path (https://github.com/jax-ml/jax/issues/12868): the MNIST CNN's 8-step epoch took 18.6 s in a scan
against 0.66 s unrolled on 2 cores. Written as shifted strided slices of the padded input, concatenated on the
channel axis and multiplied by the reshaped kernel, the same convolution is a plain dot and runs at full speed
inside the scan (0.74 s). Only gradients are affected: a forward (evaluation) convolution is fast in a loop
too and faster than the patches, so models use the patches in training mode only (:func:`conv_impl`). The choice
is data: a model's ``conv_impl`` field, set by its builder from :func:`default_conv_impl` of the backend.
Parameters are those of ``flax.linen.Conv`` (kernel ``[kh, kw, C_in, C_out]``), so
checkpoints, converters and initial values do not depend on the choice.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("xla", "patches")


def patches_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                 padding: str | Sequence[tuple[int, int]], **unused) -> jax.Array:
    """``lax.conv_general_dilated`` for NHWC inputs and HWIO kernels without dilation or groups, as one dot.

    Output ``[B, H_out, W_out, C_out]``; values equal XLA's up to float summation order.
    """
    kh, kw, c_in, c_out = rhs.shape
    sh, sw = window_strides
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), (sh, sw), padding)
    (top, bottom), (left, right) = padding
    padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    height, width = padded.shape[1:3]
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    patches = jnp.concatenate(
        [padded[:, i: i + sh * (out_h - 1) + 1: sh, j: j + sw * (out_w - 1) + 1: sw, :]
         for i in range(kh) for j in range(kw)], axis=-1)  # [B, H_out, W_out, kh*kw*C_in], (i, j, c) order
    return patches @ rhs.reshape(kh * kw * c_in, c_out)


def _conv_general_dilated(impl: str):
    """The function ``nn.Conv`` calls: ``patches_conv`` where chosen, else XLA's convolution."""

    def conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
             feature_group_count=1, precision=None):
        nhwc = dimension_numbers == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
        plain = all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))) and feature_group_count == 1
        if impl == "patches" and nhwc and plain and lhs.ndim == 4:
            return patches_conv(lhs, rhs, window_strides, padding)
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision)

    return conv


def default_conv_impl(backend: str) -> str:
    """The training convolution for a JAX backend name: patches on ``"cpu"`` (see the module docstring), else XLA's."""
    return "patches" if backend == "cpu" else "xla"


def conv_impl(train: bool, training_impl: str) -> str:
    """The convolution a layer uses: ``training_impl`` when training, XLA's in evaluation (see the module docstring)."""
    return training_impl if train else "xla"


def Conv(features: int, kernel_size: tuple[int, int], *, impl: str = "xla", **kwargs) -> nn.Conv:
    """``flax.linen.Conv`` whose convolution is ``impl``: ``"xla"`` or ``"patches"`` (:func:`patches_conv`)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}")
    return nn.Conv(features, kernel_size, conv_general_dilated=_conv_general_dilated(impl), **kwargs)
