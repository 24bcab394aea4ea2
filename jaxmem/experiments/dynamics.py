"""Paper 2: probes at every saved epoch of a run (training dynamics), and the last-layer edit.

Both read a run directory written by :func:`jaxmem.train.fit_members` and append rows to its ``results.csv``:

* :func:`probe_saved_epochs` probes every layer at every epoch kept under ``epochs/<e>`` (epoch 0 is the
  initialisation) with the requested probes, computing only the (epoch, probe, layer, subspace kind) rows the
  table lacks: an interrupted pass resumes where it stopped, and a wider request adds just its new rows.
* :func:`edit_rows` replaces the last Dense kernel with the linear-probe vectors of the layer that feeds it
  (:mod:`jaxmem.editing`) and scores the edited model (probe :func:`edit_probe_name`, layer ``"output"``);
  :func:`edit_at_stop` appends them once per stop, bias setting and subspace labels.
* :func:`edit_then_continue` edits at a kept epoch and trains on, beside the unedited members (its own table).
"""
from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import pandas as pd

from jaxmem.config import MemberSpec, ProbeSpec, TrainSpec
from jaxmem.data import Dataset, subspace_grouping
from jaxmem.editing import edit_layer, edit_params
from jaxmem.experiments.probing import probe_members, probe_rows
from jaxmem.experiments.trained import TrainedRun
from jaxmem.faults import maybe_fail
from jaxmem.features import collect_activations, member_predictions, member_variables
from jaxmem.manifest import hold, holding, record_probing
from jaxmem.models import probe_layers
from jaxmem.probes import linear
from jaxmem.probes.registry import select_probes
from jaxmem.results import accuracy_row, append_rows, final_model_rows, read_rows, write_table
from jaxmem.train import (EpochEnd, Progress, device_data, fit_members, fresh_states, make_optimizer,
                          paper2_epoch_schedule, train_members)
from jaxmem.train.rundir import EPOCHS_DIR, RESULTS_FILE

DYNAMICS_PROBING = ProbeSpec(probes=("masc", "linear"))  # the paper-2 probes at every kept epoch


def saved_epochs(out_dir: str | Path) -> list[int]:
    """Epochs whose parameters a run kept (``epochs/<e>``), ascending."""
    return sorted(int(p.name) for p in (Path(out_dir) / EPOCHS_DIR).glob("*") if p.name.isdigit())


def probe_saved_epochs(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                       probing: ProbeSpec = DYNAMICS_PROBING, progress: bool = True,
                       epochs: Sequence[int] | None = None, layers: Sequence[str] | None = None,
                       results_path: str | Path | None = None):
    """The probes of ``probing`` (its probes, MASC variances and subspace kinds) on every layer (or ``layers``)
    at every saved epoch (or those of ``epochs``), computing only the (epoch, probe, layer, subspace kind) rows
    the table lacks.

    Rows are read from and appended to ``results_path`` (default: the run's ``results.csv``, held for writing,
    and the spec goes into the run's manifest as for a run; another table lets this run beside the training
    process). Returns that table (DataFrame) with the new rows.
    """
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as held:
        if results_path is None:
            held.enter_context(hold(out_dir))
            record_probing(out_dir, probing)
        results_path = Path(results_path) if results_path is not None else out_dir / RESULTS_FILE
        probes = list(select_probes(probing.probes, variance=probing.variance, sensitivity=probing.sensitivity,
                                    precision=probing.precision))
        layers = tuple(layers or probe_layers(members[0].model))
        wanted = set(itertools.product(probes, layers, probing.subspace_labels))
        done = {}
        if results_path.exists():
            table = read_rows(results_path)
            for epoch, probe, layer, kind in zip(table["epoch"], table["probe"], table["layer"],
                                                 table["subspace_labels"]):
                done.setdefault(int(epoch), set()).add((probe, layer, kind))
        run = TrainedRun.of(dataset, members, spec, out_dir)
        for epoch in saved_epochs(out_dir):
            missing = wanted - done.get(epoch, set())
            if not missing or (epochs is not None and epoch not in epochs):
                continue
            start = time.perf_counter()
            lacking = [{key[part] for key in missing} for part in range(3)]  # probes, layers, kinds with a gap
            rows = probe_members(run.model, run.model_name, run.variables(epoch), dataset, members,
                                 epoch=epoch, variance=probing.variance, precision=probing.precision,
                                 memory_budget=probing.memory_budget, seed=probing.seed,
                                 probes=[name for name in probes if name in lacking[0]],
                                 layers=[name for name in layers if name in lacking[1]],
                                 subspace_labels=[kind for kind in probing.subspace_labels if kind in lacking[2]])
            rows = [row for row in rows if (row["probe"], row["layer"], row["subspace_labels"]) in missing]
            append_rows(results_path, rows)
            if progress:
                print(f"probed epoch {epoch}: {len(rows)} rows in {time.perf_counter() - start:.0f} s", flush=True)
            maybe_fail("dynamics")
        return read_rows(results_path)


@holding()
def run_dynamics(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                 checkpoint_epochs: Sequence[int] | None = None, resume: bool = True, progress: bool = True,
                 **probe_kwargs):
    """Train keeping the parameters of ``checkpoint_epochs`` (default: the paper-2 schedule up to the epoch cap),
    then :func:`probe_saved_epochs` (``probe_kwargs``: its ``probing``, ``epochs``, ``layers``).
    Members stop at memorisation, so later scheduled epochs may not exist."""
    schedule = paper2_epoch_schedule(spec.max_epochs) if checkpoint_epochs is None else checkpoint_epochs
    fit_members(dataset, members, spec, out_dir, checkpoint_epochs=schedule, resume=resume, progress=progress)
    return probe_saved_epochs(dataset, members, spec, out_dir, progress=progress, **probe_kwargs)


def edited_params(model, model_name: str, variables, x_train, labels, num_classes: int, *, keep_bias: bool):
    """Members' params [M] with the last Dense kernel replaced by the linear probe of the layer feeding it, fitted
    on that layer's activations of ``x_train`` grouped by ``labels`` [M, N]."""
    layer = edit_layer(model_name)
    acts = collect_activations(model, variables, x_train, (layer,))[layer]
    return edit_params(variables["params"], linear.fit(acts, labels, num_classes), keep_bias=keep_bias)


def edit_probe_name(keep_bias: bool) -> str:
    """The probe name of the edited model's rows: ``"edited"`` with the last layer's bias zeroed (the paper's
    edit), ``"edited(keep_bias)"`` with it kept, so that a run can hold both."""
    return "edited(keep_bias)" if keep_bias else "edited"


def edit_rows(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
              epoch: int | str = "final", keep_bias: bool = False, subspace_labels: str = "corrupted") -> list[dict]:
    """Rows of the edited model: last Dense kernel := linear-probe vectors of :func:`jaxmem.editing.edit_layer`.

    The probe is fitted on the training activations of that layer with the members' corrupted (or true) labels;
    with ``keep_bias=False`` the edited model predicts exactly what that linear probe predicts.
    """
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    run = TrainedRun.of(dataset, members, spec, out_dir)
    model = run.model
    params, batch_stats = run.params(epoch)
    grouping = subspace_grouping(dataset, members, [subspace_labels])[subspace_labels]
    edited = member_variables(edited_params(model, run.model_name, member_variables(params, batch_stats),
                                            run.x_train, grouping, dataset.num_classes, keep_bias=keep_bias),
                              batch_stats)
    final_epoch = final_model_rows(read_rows(Path(out_dir) / RESULTS_FILE)).groupby("member")["epoch"].max()
    return probe_rows(members, None, layer="output", epoch=final_epoch.sort_index().to_numpy() if epoch == "final"
                      else epoch, subspace_labels=subspace_labels, probe_name=edit_probe_name(keep_bias),
                      train_predictions=member_predictions(model, edited, run.x_train),
                      test_predictions=member_predictions(model, edited, run.x_test),
                      corrupted_labels=run.given, true_train_labels=dataset.y_train, test_labels=dataset.y_test)


@holding()
def edit_at_stop(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                 keep_bias: bool = False, subspace_labels: str = "corrupted"):
    """The last-layer edit at each member's stop, appended to the run's table once per (bias, subspace labels):
    returns the model's own rows there (a DataFrame) and the edited rows (a rerun returns the rows it appended
    before)."""
    results = Path(out_dir) / RESULTS_FILE
    table = read_rows(results)
    model = final_model_rows(table)
    done = table[(table["probe"] == edit_probe_name(keep_bias)) & (table["subspace_labels"] == subspace_labels)
                 & table.set_index(["member", "epoch"]).index.isin(model.set_index(["member", "epoch"]).index)]
    if len(done):
        return model, done.to_dict("records")
    rows = edit_rows(dataset, members, spec, out_dir, keep_bias=keep_bias, subspace_labels=subspace_labels)
    append_rows(results, rows)
    return model, rows


# The paper's edit-then-continue settings -> (epoch whose parameters are edited, last epoch of the continued run).
# The authors' "1" edits the untrained initialisation and trains 99 more epochs; "10" and "40" edit after that epoch.
PAPER_EDIT_SETTINGS = {1: (0, 99), 10: (10, 100), 40: (40, 100)}


def edit_continue_path(out_dir: str | Path, edit_epoch: int) -> Path:
    """Where :func:`edit_then_continue` writes its table: ``out_dir/edit_continue_<edit_epoch>.csv``."""
    return Path(out_dir) / f"edit_continue_{edit_epoch}.csv"


@holding()
def edit_then_continue(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                       edit_epoch: int, until_epoch: int = 100, keep_bias: bool = False, progress: bool = True):
    """Edit the last layer at ``edit_epoch`` (a kept epoch of the run; 0 = the initialisation), then keep training
    on the corrupted labels to ``until_epoch``; returns the tidy table (DataFrame) beside the unedited control and
    writes it to :func:`edit_continue_path`.

    The control is the uninterrupted original run itself: its model rows (post-epoch pass, ``train`` and ``test``)
    from ``edit_epoch`` on, as probe ``"unedited"``; it ends where the run stopped (at memorisation). The edited
    branch restarts from the kept parameters with a fresh optimiser state (a run keeps parameters, not optimiser
    states), sees the run's own batches (epoch ``e`` uses ``fold_in(key, e)``) and does not stop at memorisation.
    Its rows per epoch (``edit_epoch`` = right after the edit): probe ``"edited"``, layer ``"output"``, splits
    ``train`` / ``test`` / ``train_flipped`` (corrupted ≠ true label) / ``train_unflipped``, scored against the
    corrupted and the true labels.
    """
    if until_epoch <= edit_epoch:
        raise ValueError(f"until_epoch ({until_epoch}) must be after edit_epoch ({edit_epoch})")
    run = TrainedRun.of(dataset, members, spec, out_dir)
    model = run.model
    tx = make_optimizer(spec)
    params, batch_stats = run.params(edit_epoch)
    data = device_data(dataset)  # the inputs on the device, as training holds them
    corrupted = run.given
    edited = edited_params(model, run.model_name, member_variables(params, batch_stats), data.x_train, corrupted,
                           dataset.num_classes, keep_bias=keep_bias)
    state = fresh_states(edited, batch_stats, tx)
    train_keys = run.train_keys
    flipped = corrupted != dataset.y_train  # [M, N]
    rows = []

    def record(epoch, state):
        variables = member_variables(state.params, state.batch_stats)
        train_pred = member_predictions(model, variables, data.x_train)
        test_pred = member_predictions(model, variables, data.x_test)
        for m, member in enumerate(members):
            pred, own = train_pred[m], corrupted[m]
            scored = [("train", "corrupted", pred == own), ("train", "true", pred == dataset.y_train),
                      ("test", "true", test_pred[m] == dataset.y_test)]
            for part, mask in (("train_flipped", flipped[m]), ("train_unflipped", ~flipped[m])):
                scored += [(part, "corrupted", (pred == own)[mask]), (part, "true", (pred == dataset.y_train)[mask])]
            rows.extend(accuracy_row(m, member, epoch=epoch, probe="edited", layer="output", subspace_labels="none",
                                     split=split, scored_against=against, n_correct=int(hits.sum()),
                                     n_seen=int(hits.size))
                        for split, against, hits in scored)

    record(edit_epoch, state)
    bar = Progress(until_epoch, edit_epoch, "edit-then-continue", enabled=progress)

    def on_epoch(end: EpochEnd) -> None:
        record(end.epoch, end.state)
        bar.update(end.epoch, {})

    train_members(model, tx, spec, state, jnp.asarray(corrupted), train_keys, data, start_epoch=edit_epoch,
                  max_epochs=until_epoch, stop_at_target=False, on_epoch=on_epoch)  # no stop rule
    bar.close()
    run = read_rows(Path(out_dir) / RESULTS_FILE)
    control = run[(run["probe"] == "model") & run["split"].isin(["train", "test"])
                  & run["epoch"].between(edit_epoch, until_epoch)].assign(probe="unedited")
    table = pd.concat([control, pd.DataFrame(rows)], ignore_index=True)
    write_table(table, edit_continue_path(out_dir, edit_epoch))
    return table

