"""Relabel and fine-tune (paper 1, docs/methods.md#relabel-and-fine-tune): give the memorised model the labels its
best layer's MASC predicts.

For each member and subspace labels: split the test set 80/20 as the reference does
(:func:`jaxmem.experiments.finetuning.split_test`); choose the layer whose MASC predictions are
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

from pathlib import Path
from typing import Sequence

import numpy as np

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset, subspace_grouping
from jaxmem.experiments.finetuning import REFERENCE_SPLIT_SEED, choose_layers, finetune, split_test
from jaxmem.experiments.probing import fit_and_score
from jaxmem.experiments.trained import TrainedRun
from jaxmem.features import member_predictions, member_variables
from jaxmem.manifest import holding, record_stage
from jaxmem.models import probe_layers
from jaxmem.probes.registry import select_probes
from jaxmem.results import accuracy_row, read_rows, write_table
from jaxmem.train import concat_members

RELABEL_FILE = "relabel.csv"


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
                 {"subspace_labels": list(subspace_labels)},
                 way_out="use a new --out, or delete relabel.csv to start over")
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
                  subspace_labels: Sequence[str], layers: Sequence[str], max_epochs: int, patience: int,
                  split_seed: int, variance: float | int, precision: str, memory_budget: float,
                  progress: bool) -> list[dict]:
    """The rows of :func:`relabel_and_finetune` for the subspace labels ``subspace_labels``."""
    run = TrainedRun.of(dataset, members, spec, out_dir)
    model = run.model
    params, batch_stats = run.params()
    variables = member_variables(params, batch_stats)
    select, report = split_test(len(dataset.y_test), split_seed)
    y_select, y_report = dataset.y_test[select], dataset.y_test[report]
    grouping = subspace_grouping(dataset, members, subspace_labels)
    fitted = fit_and_score(model, variables, dataset, grouping, layers,
                           probes=select_probes(("masc",), variance=variance, precision=precision),
                           precision=precision, memory_budget=memory_budget)
    flipped = run.given != dataset.y_train
    num_members = len(members)
    rows = []

    def add(m, epoch, probe, layer, kind, split, against, hits):
        rows.append(accuracy_row(m, members[m], epoch=epoch, probe=probe, layer=layer, subspace_labels=kind,
                                 split=split, scored_against=against, n_correct=int(np.sum(hits)),
                                 n_seen=int(np.size(hits))))

    before = member_predictions(model, variables, run.x_test)
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
                     np.concatenate(new_labels), concat_members(*[run.train_keys] * copies),
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

