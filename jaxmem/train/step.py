"""One member's training state, optimiser, loss, single SGD/Adam step and evaluation; pure, undecorated.

Everything here is written for ONE member. :mod:`jaxmem.train.epoch` applies ``jax.vmap`` over a leading member
axis and ``jax.jit`` where the functions are used, so tests can call them eagerly or for a single member.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxmem.config import TrainSpec


class MemberState(NamedTuple):
    """Training state of one member; stacked, every leaf gains a leading member axis ``[M, ...]``."""

    params: Any  # Flax params pytree, leaves [...] float32
    batch_stats: Any  # BatchNorm running statistics (ResNet); {} for models without them
    opt_state: optax.OptState  # state of the optax transformation
    active: jax.Array  # [] bool: False once the member reached its target train accuracy (updates frozen)
    stop_epoch: jax.Array  # [] int32: epoch at which the member reached its target; -1 while training


def make_optimizer(spec: TrainSpec) -> optax.GradientTransformation:
    """SGD with momentum or Adam at a constant learning rate, no weight decay."""
    if spec.optimizer == "sgd":
        return optax.sgd(spec.learning_rate, momentum=spec.momentum)
    return optax.adam(spec.learning_rate)


def init_member(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array,
                sample_x: jax.Array) -> MemberState:
    """A freshly initialised, active member.

    Args:
      model: a :func:`jaxmem.models.get_model` module.
      tx: the member's optimiser (:func:`make_optimizer`).
      key: typed PRNG key for the parameter initialisers.
      sample_x: ``[B, H, W, C]`` float32 inputs fixing the shapes (any values).
    """
    variables = model.init({"params": key}, sample_x, train=False)
    params = variables["params"]
    return MemberState(
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        active=jnp.array(True),
        stop_epoch=jnp.array(-1, jnp.int32),
    )


def apply_model(model: nn.Module, params, batch_stats, x: jax.Array, *, train: bool = False,
                dropout_key: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """Logits ``[B, K]`` of ``x [B, H, W, C]`` and the batch statistics after the call.

    With ``train=True`` BatchNorm (if any) uses and updates batch statistics and dropout (if any) draws from
    ``dropout_key``; with ``train=False`` the running statistics are used and returned unchanged.
    """
    variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
    rngs = {"dropout": dropout_key} if dropout_key is not None else None
    if train and batch_stats:
        (logits, _), updates = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return logits, updates["batch_stats"]
    logits, _ = model.apply(variables, x, train=train, rngs=rngs)
    return logits, batch_stats


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Softmax cross-entropy averaged over the samples with weight 1: ``Σ w·ce / Σ w``.

    Args:
      logits: ``[B, K]``.
      labels: ``[B]`` int32 class indices; a negative label drops its sample (weight 0: fine-tuning on a
        training set with some samples left out keeps the shared data and its batches).
      weights: ``[B]`` float32, 1 for real samples and 0 for the padding of a short last batch, so the loss
        (and its gradient) is the mean over the real samples only, as in Keras/PyTorch's partial last batch.
        A batch without a kept sample has loss 0 (and zero gradients).
    """
    weights = jnp.where(labels >= 0, weights, 0.0)
    per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    return jnp.sum(weights * per_sample) / jnp.maximum(jnp.sum(weights), 1.0)


def train_step(model: nn.Module, tx: optax.GradientTransformation, state: MemberState, x: jax.Array,
               labels: jax.Array, weights: jax.Array, dropout_key: jax.Array
               ) -> tuple[MemberState, jax.Array, jax.Array]:
    """One optimiser step of one member on a batch; ``active``/``stop_epoch`` are left as they are.

    Args:
      state: the member's state.
      x: ``[B, H, W, C]`` float32 normalised images.
      labels: ``[B]`` int32, the member's own (possibly corrupted) labels.
      weights: ``[B]`` float32 sample mask (see :func:`cross_entropy`).
      dropout_key: typed PRNG key for this step's dropout.

    Returns:
      ``(new_state, loss, logits)``: the masked mean cross-entropy and the train-mode logits ``[B, K]`` the step
      saw, both before the update (the running training accuracy of the reference counts these logits).
    """

    def loss_fn(params):
        logits, batch_stats = apply_model(model, params, state.batch_stats, x, train=True, dropout_key=dropout_key)
        return cross_entropy(logits, labels, weights), (batch_stats, logits)

    (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(params=params, batch_stats=batch_stats, opt_state=opt_state), loss, logits


class DeviceData(NamedTuple):
    """A dataset on the accelerator, shared by all members (``in_axes=None``), never copied per member."""

    x_train: jax.Array  # [N, H, W, C] float32, normalised
    y_train: jax.Array  # [N] int32 true labels
    x_test: jax.Array  # [T, H, W, C] float32, normalised
    y_test: jax.Array  # [T] int32 true labels


class EvalMetrics(NamedTuple):
    """One member's accuracies as exact counts: a full pass in eval mode (running BatchNorm statistics, no
    dropout) after the epoch, and the running counts of the epoch's own steps (train mode, weights changing)."""

    train_correct: jax.Array  # [] int32: train samples predicted as the member's own (corrupted) label
    train_correct_true: jax.Array  # [] int32: train samples predicted as their true label
    test_correct: jax.Array  # [] int32: test samples predicted as their true label
    train_loss: jax.Array  # [] float32: mean cross-entropy over the train set vs the member's own labels
    running_correct: jax.Array  # [] int32: the epoch's steps, outputs matching the member's own labels (0 at init)
    running_correct_true: jax.Array  # [] int32: the same vs the true labels


def _sum_over_batches(batch_fn, num: int, batch_size: int):
    """``Σ batch_fn(indices [B], mask [B])`` over batches covering ``range(num)`` once (a padded last batch)."""
    batch_size = min(batch_size, num)
    steps = -(-num // batch_size)
    flat = jnp.arange(steps * batch_size)
    mask = (flat < num).reshape(steps, batch_size)
    indices = jnp.where(flat < num, flat, 0).reshape(steps, batch_size)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(batch_fn, indices[0], mask[0]))

    def body(total, batch):
        return jax.tree.map(jnp.add, total, batch_fn(*batch)), None

    total, _ = jax.lax.scan(body, zeros, (indices, mask))
    return total


def evaluate(model: nn.Module, state: MemberState, labels: jax.Array, data: DeviceData, *,
             batch_size: int, running: tuple[jax.Array, jax.Array] | None = None) -> EvalMetrics:
    """One member's train accuracy vs its own and the true labels, test accuracy and train loss.

    Args:
      labels: ``[N]`` int32, the member's own (possibly corrupted) train labels.
      data: the shared dataset.
      batch_size: evaluation batch (memory only; the counts do not depend on it).
      running: the epoch's running counts ``(vs own labels, vs true labels)``; zeros when omitted (epoch 0).
    """

    def train_batch(indices, mask):
        logits, _ = apply_model(model, state.params, state.batch_stats, data.x_train[indices])
        predicted = jnp.argmax(logits, axis=-1)
        own = labels[indices]
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, own)
        return (jnp.sum(mask & (predicted == own), dtype=jnp.int32),
                jnp.sum(mask & (predicted == data.y_train[indices]), dtype=jnp.int32),
                jnp.sum(jnp.where(mask, loss, 0.0)))

    def test_batch(indices, mask):
        logits, _ = apply_model(model, state.params, state.batch_stats, data.x_test[indices])
        return jnp.sum(mask & (jnp.argmax(logits, axis=-1) == data.y_test[indices]), dtype=jnp.int32)

    num_train = data.x_train.shape[0]
    train_correct, train_correct_true, loss_sum = _sum_over_batches(train_batch, num_train, batch_size)
    test_correct = _sum_over_batches(test_batch, data.x_test.shape[0], batch_size)
    if running is None:
        running = (jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    return EvalMetrics(train_correct, train_correct_true, test_correct, loss_sum / num_train, *running)
