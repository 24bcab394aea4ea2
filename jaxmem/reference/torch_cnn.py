"""The CNN written independently in PyTorch, and its trainer, for the framework cross-checks.

Importing this module imports PyTorch (an ``ImportError`` naming the ``jaxmem[reference]`` extra when it is
missing). It never imports jaxmem's models: the shapes are transcribed from docs/methods.md#models. The network
works in NCHW like the original study's PyTorch code; :class:`TorchReference` takes and returns jaxmem's NHWC layouts.
Steps and forward passes run with ``torch.use_deterministic_algorithms(True)`` on one thread (both restored
afterwards), in float32 or float64.
"""
from __future__ import annotations

import contextlib

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the PyTorch reference CNN needs PyTorch: install jaxmem[reference] ({missing})") from None

from jaxmem.reference.convert import chw_to_hwc_features

FRAMEWORK = f"torch {torch.__version__}"
CONV_WIDTHS = (16, 16, 32, 32, 64, 64)  # a 2×2/2 max-pool follows every second conv
DENSE_WIDTH = 250
PROBE_LAYERS = ("input", "flat", "fc1", "fc2", "fc3")


def pooled_side(side: int) -> int:
    """Feature-map side after the three 2×2/2 floor-mode pools: 28 → 3, 32 → 4."""
    for _ in range(3):
        side //= 2
    return side


class TorchCNN(nn.Module):
    """``conv1 … conv6`` (3×3, padding 1, ReLU; max-pool 2/2 after conv2, conv4, conv6) → flatten → ``fc1 … fc3``
    (250, ReLU) → ``out`` (no bias).

    ``forward(x [B, C, H, W]) -> (logits [B, K], {layer: [B, D]})`` with PyTorch's own (channel, row, column)
    flatten order for ``input`` and ``flat``.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        height, width, channels = image_shape
        if height != width:
            raise ValueError(f"the reference CNN takes square images, got image_shape {image_shape}")
        widths = (channels,) + CONV_WIDTHS
        for index in range(1, len(CONV_WIDTHS) + 1):
            setattr(self, f"conv{index}", nn.Conv2d(widths[index - 1], widths[index], kernel_size=3, padding=1))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.flat_dim = CONV_WIDTHS[-1] * pooled_side(height) ** 2
        self.fc1 = nn.Linear(self.flat_dim, DENSE_WIDTH)
        self.fc2 = nn.Linear(DENSE_WIDTH, DENSE_WIDTH)
        self.fc3 = nn.Linear(DENSE_WIDTH, DENSE_WIDTH)
        self.out = nn.Linear(DENSE_WIDTH, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        activations = {"input": torch.flatten(x, 1)}
        hidden = x
        for index in range(1, len(CONV_WIDTHS) + 1):
            hidden = torch.relu(getattr(self, f"conv{index}")(hidden))
            if index % 2 == 0:
                hidden = self.pool(hidden)
        hidden = torch.flatten(hidden, 1)
        activations["flat"] = hidden
        for name in ("fc1", "fc2", "fc3"):
            hidden = torch.relu(getattr(self, name)(hidden))
            activations[name] = hidden
        return self.out(hidden), activations


@contextlib.contextmanager
def _reference_mode():
    """Deterministic algorithms on one thread (restored afterwards).

    One thread fixes the summation order and avoids OpenMP oversubscription: with JAX or another process busy on
    the same cores, PyTorch's default thread pool was ~35× slower on a 2-core machine.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _optimizer(name: str, parameters, learning_rate: float, momentum: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=learning_rate)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


class TorchReference:
    """A :class:`TorchCNN` with its optimiser; NHWC numpy in and out, weights as a numpy ``state_dict``.

    Args:
      image_shape: ``(H, W, C)`` (square).
      num_classes: K.
      optimizer: ``"adam"`` (PyTorch defaults β = (0.9, 0.999), ε = 1e-8) or ``"sgd"`` (with ``momentum``);
        mean softmax cross-entropy.
      learning_rate: constant step size.
      dtype: ``"float32"`` or ``"float64"`` for weights, activations and updates.
    """

    framework = FRAMEWORK

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *, optimizer: str,
                 learning_rate: float, momentum: float = 0.9, dtype: str = "float32"):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        torch.manual_seed(0)  # only the throw-away default initialisation; weights are then loaded
        self.dtype = np.dtype(dtype)
        self.image_shape = tuple(image_shape)
        self.model = TorchCNN(image_shape, num_classes).to(getattr(torch, dtype))
        self._optimizer_args = (optimizer, learning_rate, momentum)
        self.optimizer = _optimizer(optimizer, self.model.parameters(), learning_rate, momentum)
        side = pooled_side(image_shape[0])
        self._flat_map = (side, side, CONV_WIDTHS[-1])

    def set_weights(self, state: dict[str, np.ndarray]) -> None:
        """Load a numpy ``state_dict`` (see :func:`jaxmem.reference.convert.cnn_to_torch`); resets the optimiser."""
        self.model.load_state_dict({key: torch.from_numpy(np.array(value, self.dtype)) for key, value in state.items()})
        self.optimizer = _optimizer(self._optimizer_args[0], self.model.parameters(), *self._optimizer_args[1:])

    def get_weights(self) -> dict[str, np.ndarray]:
        return {key: value.detach().cpu().numpy().copy() for key, value in self.model.state_dict().items()}

    def _nchw(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x, self.dtype), (0, 3, 1, 2))))

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``x [B, H, W, C]`` -> ``(logits [B, K], {layer: [B, D]})``; ``input``/``flat`` permuted to jaxmem's order."""
        self.model.eval()
        with _reference_mode(), torch.no_grad():
            logits, activations = self.model(self._nchw(x))
        activations = {name: value.numpy() for name, value in activations.items()}
        activations["input"] = chw_to_hwc_features(activations["input"], self.image_shape)
        activations["flat"] = chw_to_hwc_features(activations["flat"], self._flat_map)
        return logits.numpy(), activations

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimiser step on the batch ``x [B, H, W, C]``, ``y [B]``; returns the batch loss before the step."""
        self.model.train()
        with _reference_mode():
            self.optimizer.zero_grad(set_to_none=True)
            logits, _ = self.model(self._nchw(x))
            loss = nn.functional.cross_entropy(logits, torch.from_numpy(np.asarray(y, np.int64)))
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())
