"""Paper 2 (SPEC §6): probes at every saved epoch of a run (training dynamics), and the last-layer edit.

Both read a run directory written by :func:`jaxmem.train.fit_members` and append rows to its ``results.csv``:

* :func:`probe_saved_epochs` probes every layer at every epoch kept under ``epochs/<e>`` (epoch 0 is the
  initialisation) with MASC and the extra probes; an epoch that already has MASC rows is skipped, so an
  interrupted probing pass resumes where it stopped.
* :func:`edit_rows` replaces the last Dense kernel with the linear-probe vectors of the layer that feeds it
  (:mod:`jaxmem.editing`) and scores the edited model (probe ``"edited"``, layer ``"output"``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset, member_train_labels, normalize
from jaxmem.editing import edit_layer, edit_params
from jaxmem.experiments.probing import check_probes, probe_members, probe_rows
from jaxmem.features import collect_activations, member_variables
from jaxmem.models import get_model
from jaxmem.probes import linear
from jaxmem.results import append_rows, read_rows
from jaxmem.train import fit_members, load_member_params, paper2_epoch_schedule
from jaxmem.train.loop import EPOCHS_DIR, RESULTS_FILE


def saved_epochs(out_dir: str | Path) -> list[int]:
    """Epochs whose parameters a run kept (``epochs/<e>``), ascending."""
    return sorted(int(p.name) for p in (Path(out_dir) / EPOCHS_DIR).glob("*") if p.name.isdigit())


def probe_saved_epochs(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                       variance: float | int = 0.99, precision: str = "fast",
                       extra_probes: Sequence[str] = ("linear",), memory_budget: float = 2**31,
                       progress: bool = True):
    """MASC (corrupted- and true-label subspaces) and ``extra_probes`` on every layer at every saved epoch.

    Returns the run's results table (DataFrame) with the new rows.
    """
    out_dir = Path(out_dir)
    extra_probes = check_probes(extra_probes)
    table = read_rows(out_dir / RESULTS_FILE)
    done = set(table.loc[table["probe"] == "masc", "epoch"])
    model = get_model(members[0].model, dataset.num_classes, dropout=spec.dropout)
    for epoch in saved_epochs(out_dir):
        if epoch in done:
            continue
        params, batch_stats = load_member_params(out_dir, epoch)
        rows = probe_members(model, members[0].model, member_variables(params, batch_stats), dataset, members,
                             epoch=epoch, variance=variance, precision=precision, memory_budget=memory_budget,
                             extra_probes=extra_probes)
        append_rows(out_dir / RESULTS_FILE, rows)
        if progress:
            print(f"probed epoch {epoch}", flush=True)
    return read_rows(out_dir / RESULTS_FILE)


def run_dynamics(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
                 checkpoint_epochs: Sequence[int] | None = None, resume: bool = True, progress: bool = True,
                 **probe_kwargs):
    """Train keeping the parameters of ``checkpoint_epochs`` (default: the paper-2 schedule up to the epoch cap),
    then :func:`probe_saved_epochs`. Members stop at memorisation, so later scheduled epochs may not exist."""
    schedule = paper2_epoch_schedule(spec.max_epochs) if checkpoint_epochs is None else checkpoint_epochs
    fit_members(dataset, members, spec, out_dir, checkpoint_epochs=schedule, resume=resume, progress=progress)
    return probe_saved_epochs(dataset, members, spec, out_dir, progress=progress, **probe_kwargs)


@partial(jax.jit, static_argnames="model")
def _member_logits(model, variables, x):
    return jax.vmap(lambda v: model.apply(v, x, train=False)[0])(variables)


def member_predictions(model, variables, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Predicted classes ``[M, N]`` of every member (member axis on ``variables``) on shared inputs ``x``."""
    parts = [np.asarray(jnp.argmax(_member_logits(model, variables, jnp.asarray(x[i:i + batch_size])), -1))
             for i in range(0, len(x), batch_size)]
    return np.concatenate(parts, axis=1)


def edit_rows(dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec, out_dir: str | Path, *,
              epoch: int | str = "final", keep_bias: bool = False, subspace_labels: str = "corrupted") -> list[dict]:
    """Rows of the edited model: last Dense kernel := linear-probe vectors of :func:`jaxmem.editing.edit_layer`.

    The probe is fitted on the training activations of that layer with the members' corrupted (or true) labels;
    with ``keep_bias=False`` the edited model predicts exactly what that linear probe predicts.
    """
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    model_name = members[0].model
    model = get_model(model_name, dataset.num_classes, dropout=spec.dropout)
    params, batch_stats = load_member_params(out_dir, epoch)
    x_train = normalize(dataset.name, dataset.x_train)
    x_test = normalize(dataset.name, dataset.x_test)
    corrupted = member_train_labels(dataset, members)
    grouping = corrupted if subspace_labels == "corrupted" else np.broadcast_to(dataset.y_train, corrupted.shape)
    layer = edit_layer(model_name)
    acts = collect_activations(model, member_variables(params, batch_stats), x_train, (layer,))[layer]
    probe = linear.fit(acts, grouping, dataset.num_classes)
    edited = member_variables(edit_params(params, probe, keep_bias=keep_bias), batch_stats)
    final_epoch = read_rows(Path(out_dir) / RESULTS_FILE).query("probe == 'model'").groupby("member")["epoch"].max()
    return probe_rows(members, None, layer="output", epoch=final_epoch.sort_index().to_numpy() if epoch == "final"
                      else epoch, subspace_labels=subspace_labels, probe_name="edited",
                      train_predictions=member_predictions(model, edited, x_train),
                      test_predictions=member_predictions(model, edited, x_test),
                      corrupted_labels=corrupted, true_train_labels=dataset.y_train, test_labels=dataset.y_test)
