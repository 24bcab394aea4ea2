"""Weight and activation layout converters between jaxmem (Flax), Keras and PyTorch; numpy only.

Layouts:
- Flax ``Dense`` kernel ``[in, out]`` = Keras ``Dense`` kernel ``[in, out]``; PyTorch ``Linear.weight`` is
  ``[out, in]``.
- Flax ``Conv`` kernel ``[H, W, in, out]`` (HWIO); PyTorch ``Conv2d.weight`` is ``[out, in, H, W]`` (OIHW).
- jaxmem flattens NHWC feature maps in (row, column, channel) order; PyTorch flattens NCHW maps in (channel, row,
  column) order. So the CNN's ``fc1`` rows are permuted between the two, and the ``input`` / ``flat`` probe
  activations of the PyTorch CNN are permuted back with :func:`chw_to_hwc_features` before comparison.
  Keras' ``Flatten`` on a channels-last input uses jaxmem's order, so the MLP needs no permutation.

Every function takes and returns plain numpy arrays (float32 or float64, dtype kept), so it imports neither
TensorFlow nor PyTorch, and each direction is the exact inverse of the other (a pure re-layout, no arithmetic).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

MLP_LAYERS = ("fc1", "fc2", "fc3", "fc4", "out")
CNN_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")
CNN_DENSES = ("fc1", "fc2", "fc3")
CNN_LAST_CHANNELS = 64  # width of conv6, whose pooled map feeds fc1


def _array(value) -> np.ndarray:
    """A float copy (float32 or float64 kept as they are), so converted weights never alias the source."""
    array = np.array(value)
    if array.dtype not in (np.float32, np.float64):
        raise ValueError(f"weights must be float32 or float64, got dtype {array.dtype}")
    return array


def _check_keys(params: Mapping, expected: tuple[str, ...], what: str) -> None:
    if set(params) != set(expected):
        raise ValueError(f"{what} must have exactly the layers {list(expected)}, got {sorted(params)}")


# ----------------------------------------------------------------------------------------------------- MLP


def mlp_to_keras(params: Mapping) -> list[np.ndarray]:
    """jaxmem MLP params -> Keras weights in ``model.get_weights()`` order.

    Args:
      params: ``{"fc1": {"kernel": [D, 128], "bias": [128]}, …, "out": {"kernel": [2048, K], "bias": [K]}}``.

    Returns:
      ``[fc1 kernel, fc1 bias, fc2 kernel, …, out kernel, out bias]`` (kernels ``[in, out]``, unchanged).
    """
    _check_keys(params, MLP_LAYERS, "MLP params")
    weights = []
    for name in MLP_LAYERS:
        weights += [_array(params[name]["kernel"]), _array(params[name]["bias"])]
    return weights


def keras_to_mlp(weights: list) -> dict:
    """Keras MLP weights (``model.get_weights()`` order) -> jaxmem MLP params; inverse of :func:`mlp_to_keras`."""
    if len(weights) != 2 * len(MLP_LAYERS):
        raise ValueError(f"expected {2 * len(MLP_LAYERS)} Keras MLP weight arrays (kernel, bias per layer), "
                         f"got {len(weights)}")
    return {name: {"kernel": _array(weights[2 * i]), "bias": _array(weights[2 * i + 1])}
            for i, name in enumerate(MLP_LAYERS)}


# ----------------------------------------------------------------------------------------------------- CNN


def _flat_map_shape(flat_dim: int, channels: int = CNN_LAST_CHANNELS) -> tuple[int, int, int]:
    """(H, W, C) of the square feature map that flattens to ``flat_dim`` values."""
    side = math.isqrt(flat_dim // channels)
    if side * side * channels != flat_dim:
        raise ValueError(f"fc1 input width {flat_dim} is not a square map with {channels} channels "
                         f"(expected side² · {channels})")
    return side, side, channels


def hwc_rows_to_chw(kernel: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """Permute the rows of a Dense kernel ``[H·W·C, out]`` from (row, column, channel) to (channel, row, column)."""
    height, width, channels = map_shape
    return kernel.reshape(height, width, channels, -1).transpose(2, 0, 1, 3).reshape(height * width * channels, -1)


def chw_rows_to_hwc(kernel: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`hwc_rows_to_chw`."""
    height, width, channels = map_shape
    return kernel.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(height * width * channels, -1)


def chw_to_hwc_features(features: np.ndarray, map_shape: tuple[int, int, int]) -> np.ndarray:
    """PyTorch-flattened features ``[B, C·H·W]`` -> jaxmem order ``[B, H·W·C]``; ``map_shape`` is (H, W, C)."""
    height, width, channels = map_shape
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != height * width * channels:
        raise ValueError(f"features must be [B, {height * width * channels}] for a {map_shape} map, "
                         f"got shape {features.shape}")
    return features.reshape(-1, channels, height, width).transpose(0, 2, 3, 1).reshape(features.shape[0], -1)


def cnn_to_torch(params: Mapping) -> dict[str, np.ndarray]:
    """jaxmem CNN params -> a PyTorch ``state_dict`` of :class:`jaxmem.reference.torch_cnn.TorchCNN` (as numpy).

    Conv kernels HWIO -> OIHW; Dense kernels ``[in, out]`` -> ``[out, in]``; ``fc1``'s rows are also permuted
    from jaxmem's NHWC flatten order to PyTorch's NCHW order. ``out`` has no bias.
    """
    _check_keys(params, CNN_CONVS + CNN_DENSES + ("out",), "CNN params")
    state = {}
    for name in CNN_CONVS:
        state[f"{name}.weight"] = _array(np.transpose(params[name]["kernel"], (3, 2, 0, 1)))
        state[f"{name}.bias"] = _array(params[name]["bias"])
    fc1 = np.asarray(params["fc1"]["kernel"])
    state["fc1.weight"] = _array(hwc_rows_to_chw(fc1, _flat_map_shape(fc1.shape[0])).T)
    state["fc1.bias"] = _array(params["fc1"]["bias"])
    for name in CNN_DENSES[1:]:
        state[f"{name}.weight"] = _array(np.asarray(params[name]["kernel"]).T)
        state[f"{name}.bias"] = _array(params[name]["bias"])
    state["out.weight"] = _array(np.asarray(params["out"]["kernel"]).T)
    return state


def torch_to_cnn(state: Mapping) -> dict:
    """A PyTorch CNN ``state_dict`` (tensors or arrays) -> jaxmem CNN params; inverse of :func:`cnn_to_torch`."""
    state = {key: np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
             for key, value in state.items()}
    expected = [f"{name}.{field}" for name in CNN_CONVS + CNN_DENSES for field in ("weight", "bias")] + ["out.weight"]
    if set(state) != set(expected):
        raise ValueError(f"CNN state_dict must have exactly the keys {expected}, got {sorted(state)}")
    params = {}
    for name in CNN_CONVS:
        params[name] = {"kernel": _array(np.transpose(state[f"{name}.weight"], (2, 3, 1, 0))),
                        "bias": _array(state[f"{name}.bias"])}
    fc1 = state["fc1.weight"].T
    params["fc1"] = {"kernel": _array(chw_rows_to_hwc(fc1, _flat_map_shape(fc1.shape[0]))),
                     "bias": _array(state["fc1.bias"])}
    for name in CNN_DENSES[1:]:
        params[name] = {"kernel": _array(state[f"{name}.weight"].T), "bias": _array(state[f"{name}.bias"])}
    params["out"] = {"kernel": _array(state["out.weight"].T)}
    return params
