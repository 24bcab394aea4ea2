"""Relabel and fine-tune (paper 1, docs/methods.md#relabel-and-fine-tune): give the memorised model the labels its best layer's MASC predicts.

For each member and subspace kind: split the test set 80/20 as the reference does (:func:`split_test`); choose the layer whose MASC predictions are
most accurate on the 20 % part; relabel the whole training set with that layer's MASC predictions; fine-tune the
memorised model from its weights with a fresh optimiser of its kind for at most ``max_epochs`` epochs, stopping
when the 20 % accuracy has not improved for ``patience`` epochs and keeping the best epoch; report on the 80 %.
All members × kinds fine-tune together in one program (member axis [K·M]).

Rows of the tidy table (``relabel.csv``), member columns as in the run:

* ``model``: the memorised model before fine-tuning (epoch 0), on ``test_select`` (20 %) and ``test_report`` (80 %).
* ``relabel`` (layer = the chosen one): the new labels scored against the true ones on ``train``,
  ``train_flipped`` (samples whose corrupted label was wrong: accuracy = share of wrong labels fixed) and
  ``train_unflipped`` (labels that were right: 1 − accuracy = share of right labels broken), and the layer's
  MASC accuracy on ``test_select``.
* ``finetune`` per fine-tuning epoch: ``test_select``, ``test_report``, and ``train`` against the new labels
  (``scored_against = "relabelled"``).
* ``finetune_best``: the kept (early-stopped) epoch on ``test_select`` and ``test_report``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import REFERENCE_SPLIT_SEED, MemberSpec, TrainSpec
from jaxmem.data import Dataset, member_train_labels, normalize, subspace_grouping
from jaxmem.experiments.dynamics import concat_members, fresh_states
from jaxmem.experiments.probing import fit_and_score
from jaxmem.features import member_predictions, member_variables
from jaxmem.manifest import holding, record_stage
from jaxmem.models import get_model, probe_layers
from jaxmem.probes.registry import select_probes
from jaxmem.results import accuracy_row, read_rows, write_table
from jaxmem.train import load_member_params
from jaxmem.train.epoch import device_data, split_member_keys
from jaxmem.train.loop import EpochEnd, Progress, train_members
from jaxmem.train.step import make_optimizer

RELABEL_FILE = "relabel.csv"


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
        raise ValueError(f"a test set of {num_test} samples cannot be split {select_fraction:g}/{1 - select_fraction:g}")
    order = np.random.RandomState(seed).permutation(num_test)
    return order[:cut], order[cut:]


def choose_layers(test_predictions: dict, y_select: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Per member, the index of the layer whose predictions ``{layer: [M, T]}`` are best on the select part
    (ties: the first layer in order)."""
    accuracy = np.stack([np.mean(pred[:, select] == y_select, axis=1) for pred in test_predictions.values()])
    return np.argmax(accuracy, axis=0)


@holding()
def relabel_and_finetune(
    dataset: Dataset,
    members: Sequence[MemberSpec],
    spec: TrainSpec,
    out_dir: str | Path,
    *,
    subspace_labels: Sequence[str] = ("corrupted", "true"),
    layers: Sequence[str] | None = None,
    max_epochs: int = 30,
    patience: int = 3,
    split_seed: int = REFERENCE_SPLIT_SEED,
    variance: float | int = 0.99,
    precision: str = "fast",
    memory_budget: float = 2**31,
    progress: bool = True,
):
    """Run the experiment on the final parameters of the trained run in ``out_dir``; returns the table (DataFrame)
    of ``relabel.csv``.

    Its settings are kept in the run's manifest: all but ``subspace_labels`` change what a row means and must match an
    earlier call (else ``ValueError`` naming the field); a call with more subspace kinds computes only the new
    ones, and one with nothing new returns the table as it is.
    """
    import pandas as pd

    if max_epochs < 1 or patience < 1:
        raise ValueError(f"max_epochs and patience must be >= 1, got {max_epochs} and {patience}")
    layers = tuple(layers or probe_layers(members[0].model))
    record_stage(out_dir, "relabel", {"layers": layers, "max_epochs": max_epochs, "patience": patience,
                                      "split_seed": split_seed, "variance": variance, "precision": precision},
                 {"subspace_labels": list(subspace_labels)}, way_out="use a new --out, or delete relabel.csv to start over")
    path = Path(out_dir) / RELABEL_FILE
    table = read_rows(path) if path.exists() else None
    done = set() if table is None else set(table.loc[table["probe"] == "relabel", "subspace_labels"])
    missing = [kind for kind in subspace_labels if kind not in done]
    if not missing:
        return table
    rows = pd.DataFrame(_relabel_rows(dataset, members, spec, out_dir, subspace_labels=missing, layers=layers,
                                      max_epochs=max_epochs, patience=patience, split_seed=split_seed,
                                      variance=variance, precision=precision, memory_budget=memory_budget,
                                      progress=progress))
    if table is not None:  # the model's own rows are the same for every kind: kept once
        rows = pd.concat([table, rows[rows["probe"] != "model"]], ignore_index=True)
    write_table(rows, path)
    return read_rows(path)


def _relabel_rows(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                  subspace_labels: Sequence[str], layers: Sequence[str], max_epochs: int, patience: int, split_seed: int,
                  variance: float | int, precision: str, memory_budget: float, progress: bool) -> list[dict]:
    """The rows of :func:`relabel_and_finetune` for the subspace labels ``subspace_labels``."""
    model_name = members[0].model
    model = get_model(model_name, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    params, batch_stats = load_member_params(out_dir)
    variables = member_variables(params, batch_stats)
    select, report = split_test(len(dataset.y_test), split_seed)
    y_select, y_report = dataset.y_test[select], dataset.y_test[report]
    grouping = subspace_grouping(dataset, members, subspace_labels)
    fitted = fit_and_score(model, variables, dataset, grouping, layers,
                           probes=select_probes(("masc",), variance=variance, precision=precision),
                           precision=precision, memory_budget=memory_budget)
    corrupted = member_train_labels(dataset, members)
    flipped = corrupted != dataset.y_train
    num_members = len(members)
    rows = []

    def add(m, epoch, probe, layer, kind, split, against, hits):
        rows.append(accuracy_row(m, members[m], epoch=epoch, probe=probe, layer=layer, subspace_labels=kind,
                                 split=split, scored_against=against, n_correct=int(np.sum(hits)),
                                 n_seen=int(np.size(hits))))

    x_test = normalize(dataset.name, dataset.x_test)
    before = member_predictions(model, variables, x_test)
    for m in range(num_members):
        add(m, 0, "model", "output", "none", "test_select", "true", before[m, select] == y_select)
        add(m, 0, "model", "output", "none", "test_report", "true", before[m, report] == y_report)

    new_labels, chosen = [], []
    for kind in subspace_labels:
        test_pred = {name: fitted[name, kind, "masc"][2] for name in layers}
        best = choose_layers(test_pred, y_select, select)
        labels = np.stack([fitted[layers[best[m]], kind, "masc"][1][m] for m in range(num_members)])
        for m in range(num_members):
            layer, right = layers[best[m]], labels[m] == dataset.y_train
            for split, hits in (("train", right), ("train_flipped", right[flipped[m]]),
                                ("train_unflipped", right[~flipped[m]]),
                                ("test_select", test_pred[layer][m, select] == y_select)):
                add(m, -1, "relabel", layer, kind, split, "true", hits)
        new_labels.append(labels)
        chosen.append([layers[b] for b in best])

    # Fine-tune all kinds × members at once; no memorisation stop, only early stopping on the select part.
    copies = len(subspace_labels)
    tuned = finetune(model, spec, concat_members(*[params] * copies), concat_members(*[batch_stats] * copies),
                     np.concatenate(new_labels), concat_members(*[split_member_keys(members)[1]] * copies),
                     dataset, select, report, max_epochs=max_epochs, patience=patience, progress=progress)
    for record in tuned.history:
        for c, kind in enumerate(subspace_labels):
            for m in range(num_members):
                i = c * num_members + m
                if record.trained[i]:
                    add(m, record.epoch, "finetune", chosen[c][m], kind, "test_select", "true",
                        record.select_pred[i] == y_select)
                    add(m, record.epoch, "finetune", chosen[c][m], kind, "test_report", "true",
                        record.report_pred[i] == y_report)
                    rows.append(accuracy_row(m, members[m], epoch=record.epoch, probe="finetune",
                                             layer=chosen[c][m], subspace_labels=kind, split="train",
                                             scored_against="relabelled", n_correct=int(record.train_correct[i]),
                                             n_seen=len(dataset.y_train)))
    for split, predicted, y in (("test_select", tuned.select_pred, y_select),
                                ("test_report", tuned.report_pred, y_report)):
        for c, kind in enumerate(subspace_labels):
            for m in range(num_members):
                i = c * num_members + m
                add(m, int(tuned.best_epoch[i]), "finetune_best", chosen[c][m], kind, split, "true", predicted[i] == y)
    return rows


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
    x_test = normalize(dataset.name, dataset.x_test)
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
