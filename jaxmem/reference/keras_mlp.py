"""The MLP written independently in TensorFlow/Keras, and its trainer, for the framework cross-checks.

Importing this module imports TensorFlow and Keras 3 on the TensorFlow backend (an ``ImportError`` naming the
``jaxmem[reference]`` extra when they are missing). It never imports jaxmem's models: the layer widths are
transcribed from docs/methods.md#models, so a wrong width in either implementation shows up as a shape error in
the converter.

Training uses Keras' own compiled ``train_on_batch`` (the function ``model.fit`` runs per batch) with
``jit_compile=False``, so TensorFlow's native kernels, not XLA, compute it; TensorFlow op determinism is enabled
(process-wide) so repeated runs are bit-identical.
"""
from __future__ import annotations

import os
import sys

import numpy as np

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "tensorflow"  # an independent framework, even if the user's default is JAX
try:
    import keras
    import tensorflow as tf
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the Keras reference MLP needs TensorFlow: install jaxmem[reference] ({missing})") from None

if keras.backend.backend() != "tensorflow":
    raise ImportError(f"keras was already imported with the {keras.backend.backend()!r} backend; the reference MLP "
                      "needs KERAS_BACKEND=tensorflow (set it before importing keras)")

FRAMEWORK = f"tensorflow {tf.__version__} (keras {keras.__version__})"
HIDDEN_WIDTHS = (128, 512, 2048, 2048)
PROBE_LAYERS = ("input", "fc1", "fc2", "fc3", "fc4")


def build_mlp(image_shape: tuple[int, int, int], num_classes: int, *, dtype: str = "float32") -> keras.Model:
    """Flatten (channels-last: row, column, channel) → Dense 128 → 512 → 2048 → 2048 (ReLU) → Dense ``num_classes``.

    Layers are named ``input`` (the Flatten), ``fc1 … fc4`` and ``out``; the model maps ``[B, H, W, C]`` to logits,
    computing and storing everything in ``dtype``.
    """
    inputs = keras.Input(shape=tuple(image_shape), dtype=dtype, name="image")
    hidden = keras.layers.Flatten(data_format="channels_last", dtype=dtype, name="input")(inputs)
    for index, width in enumerate(HIDDEN_WIDTHS, start=1):
        hidden = keras.layers.Dense(width, activation="relu", dtype=dtype, name=f"fc{index}")(hidden)
    logits = keras.layers.Dense(num_classes, dtype=dtype, name="out")(hidden)
    return keras.Model(inputs, logits, name="reference_mlp")


def _optimizer(name: str, learning_rate: float, momentum: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


class KerasMLP:
    """A compiled Keras MLP plus a probe model exposing every probe layer; weights in Keras layout.

    Args:
      image_shape: ``(H, W, C)``.
      num_classes: K.
      optimizer: ``"sgd"`` (with ``momentum``) or ``"adam"``; mean sparse softmax cross-entropy from logits.
      learning_rate: constant step size.
      dtype: ``"float32"`` or ``"float64"`` for weights, activations and updates.
    """

    framework = FRAMEWORK

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, *, optimizer: str,
                 learning_rate: float, momentum: float = 0.9, dtype: str = "float32"):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(0)  # only the throw-away default initialisation; weights are then loaded
        self.dtype = np.dtype(dtype)
        self.model = build_mlp(image_shape, num_classes, dtype=dtype)
        outputs = {name: self.model.get_layer(name).output for name in PROBE_LAYERS}
        self.probe_model = keras.Model(self.model.inputs, [self.model.output, outputs])
        self.model.compile(optimizer=_optimizer(optimizer, learning_rate, momentum),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        """Load weights in ``model.get_weights()`` order (see :func:`jaxmem.reference.convert.mlp_to_keras`)."""
        self.model.set_weights([np.asarray(w, self.dtype) for w in weights])

    def get_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``x [B, H, W, C]`` -> ``(logits [B, K], {layer: [B, D]})`` in jaxmem's feature order (identical for the
        MLP)."""
        logits, activations = self.probe_model(tf.constant(np.asarray(x, self.dtype)), training=False)
        return np.asarray(logits), {name: np.asarray(value) for name, value in activations.items()}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimiser step on the batch ``x [B, H, W, C]``, ``y [B]``; returns the batch loss before the step."""
        return float(self.model.train_on_batch(np.asarray(x, self.dtype), np.asarray(y, np.int32)))
