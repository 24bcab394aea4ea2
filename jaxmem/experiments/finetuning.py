"""Fine-tuning a memorised run's members on new labels, early-stopped on a test split: the shared base of the
stages that fine-tune (:mod:`jaxmem.experiments.relabel`, :mod:`jaxmem.experiments.labels`).

* :func:`split_test`: the reference's 80/20 split of the test set (20 % to choose, 80 % to report).
* :func:`choose_layers`: per member, the layer whose predictions are best on the 20 % part.
* :func:`finetune`: K copies fine-tuned at once with a fresh optimiser, each stopped early on the 20 % part.

See docs/methods.md#relabel-and-fine-tune.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import REFERENCE_SPLIT_SEED, TrainSpec
from jaxmem.data import Dataset
from jaxmem.features import member_predictions, member_variables
from jaxmem.train import EpochEnd, Progress, device_data, fresh_states, make_optimizer, train_members


def split_test(num_test: int, seed: int = REFERENCE_SPLIT_SEED,
               select_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint test indices ``(select, report)``: ``select_fraction`` for choices, the rest to report.

    Exactly the reference's ``report, select = sklearn.model_selection.train_test_split(np.arange(num_test),
    test_size=select_fraction, random_state=seed)``: one permutation from ``np.random.RandomState(seed)``, its first
    ``ceil(select_fraction · num_test)`` entries are the select part, the rest the report part, both in
    permutation order (docs/methods.md#relabel-and-fine-tune).
    """
    if not 0 < select_fraction < 1:
        raise ValueError(f"select_fraction must be in (0, 1), got {select_fraction}")
    cut = math.ceil(select_fraction * num_test)
    if not 0 < cut < num_test:
        raise ValueError(f"a test set of {num_test} samples cannot be split "
                         f"{select_fraction:g}/{1 - select_fraction:g}")
    order = np.random.RandomState(seed).permutation(num_test)
    return order[:cut], order[cut:]


def choose_layers(test_predictions: dict, y_select: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Per member, the index of the layer whose predictions ``{layer: [M, T]}`` are best on the select part
    (ties: the first layer in order)."""
    accuracy = np.stack([np.mean(pred[:, select] == y_select, axis=1) for pred in test_predictions.values()])
    return np.argmax(accuracy, axis=0)


class FineTuneEpoch(NamedTuple):
    """One fine-tuning epoch of K copies."""

    epoch: int
    trained: np.ndarray  # [K] bool: the copy trained in this epoch
    select_pred: np.ndarray  # [K, S] predictions on the select part after the epoch
    report_pred: np.ndarray  # [K, R] predictions on the report part
    train_correct: np.ndarray  # [K] training samples predicted as their (new) label


class FineTuned(NamedTuple):
    """What :func:`finetune` returns."""

    history: list  # [FineTuneEpoch] in epoch order
    best_epoch: np.ndarray  # [K] the kept epoch (0: no epoch improved on -1 correct, never in practice)
    select_pred: np.ndarray  # [K, S] predictions of the kept state on the select part
    report_pred: np.ndarray  # [K, R] on the report part


def finetune(model, spec: TrainSpec, params, batch_stats, labels: np.ndarray, keys, dataset: Dataset,
             select: np.ndarray, report: np.ndarray, *, max_epochs: int, patience: int,
             progress: bool = True, member_chunk: int | None = None) -> FineTuned:
    """The paper-1 fine-tuning of K copies at once: from ``params`` / ``batch_stats`` (leaves [K, ...]) with a
    fresh optimiser of the spec's kind, on ``labels`` [K, N] (a label < 0 drops its sample, see
    :func:`jaxmem.train.step.cross_entropy`), training keys [K]; no memorisation stop; each copy stops once its
    accuracy on the ``select`` test indices has not improved for ``patience`` epochs, and its best epoch (the
    first of equals) is kept. ``member_chunk``: see :func:`jaxmem.train.epoch.make_epoch_fn`."""
    tx = make_optimizer(spec)
    state = fresh_states(params, batch_stats, tx)
    num_copies = len(labels)
    best_select = np.full(num_copies, -1)
    best_epoch = np.zeros(num_copies, int)
    best_state = jax.tree.map(jnp.copy, state)  # the epoch function donates (deletes) its input state
    x_test = dataset.inputs("test")
    x_select, x_report = jnp.asarray(x_test[select]), jnp.asarray(x_test[report])
    y_select = dataset.y_test[select]
    history = []
    bar = Progress(max_epochs, 0, "fine-tune", enabled=progress)

    def early_stopping(end: EpochEnd) -> np.ndarray:
        """Record the epoch; keep each copy's best state on the select part; stop after ``patience``."""
        nonlocal best_select, best_epoch, best_state
        current = member_variables(end.state.params, end.state.batch_stats)
        select_pred = member_predictions(model, current, x_select)
        history.append(FineTuneEpoch(end.epoch, np.asarray(end.trained), select_pred,
                                     member_predictions(model, current, x_report),
                                     np.asarray(end.metrics.train_correct)))
        correct = np.sum(select_pred == y_select, axis=1)
        improved = end.trained & (correct > best_select)
        best_select = np.where(improved, correct, best_select)
        best_epoch = np.where(improved, end.epoch, best_epoch)
        best_state = jax.tree.map(lambda new, old: jnp.where(_expand(improved, new), new, old), end.state,
                                  best_state)
        stop = end.trained & (end.epoch - best_epoch >= patience)
        bar.update(end.epoch, {"training": int((end.trained & ~stop).sum())})
        return stop

    train_members(model, tx, spec, state, jnp.asarray(labels), keys, device_data(dataset), max_epochs=max_epochs,
                  stop_at_target=False, on_epoch=early_stopping, member_chunk=member_chunk)
    bar.close()
    kept = member_variables(best_state.params, best_state.batch_stats)
    return FineTuned(history, best_epoch, member_predictions(model, kept, x_select),
                     member_predictions(model, kept, x_report))


def _expand(mask: np.ndarray, leaf: jax.Array) -> jax.Array:
    return jnp.asarray(mask).reshape(mask.shape + (1,) * (leaf.ndim - 1))


__all__ = ["REFERENCE_SPLIT_SEED", "FineTuneEpoch", "FineTuned", "choose_layers", "finetune", "split_test"]
