"""The main experiment (paper 1): train members to memorisation, then probe every layer with MASC.

Writes into one run directory: the training outputs of :func:`jaxmem.train.fit_members` and the MASC rows,
appended to the same ``results.csv``. A rerun resumes training from its checkpoint and skips probing when the
finished run already has its MASC rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset
from jaxmem.experiments.probing import check_probes, clean_subspace_kinds, probe_members
from jaxmem.features import member_variables
from jaxmem.models import get_model
from jaxmem.report import final_model_rows
from jaxmem.results import append_rows, read_rows
from jaxmem.train import fit_members, load_member_params

RESULTS_FILE = "results.csv"


def run_memorization(
    dataset: Dataset,
    members: Sequence[MemberSpec],
    spec: TrainSpec,
    out_dir: str | Path,
    *,
    max_epochs: int | None = None,
    resume: bool = True,
    progress: bool = True,
    checkpoint_epochs: Sequence[int] = (),
    variance: float | int = 0.99,
    precision: str = "fast",
    subspaces: Sequence[str] = ("corrupted", "true"),
    memory_budget: float = 2**31,
    extra_probes: Sequence[str] = (),
    sensitivity: Sequence[float | int] = (),
    clean_degrees: Sequence[float] = (),
):
    """Train, probe all layers of every member at its final epoch, and return the results table (DataFrame).

    MASC runs on every layer (also at each ``sensitivity`` variance), ``extra_probes`` (see
    :data:`jaxmem.experiments.probing.EXTRA_PROBES`) on the layers held in memory. The members trained at p = 0
    are also probed with subspaces from their labels corrupted at each of ``clean_degrees`` (subspace kind
    ``"corrupted@q"``). Probing happens once per run directory: a rerun of a probed run only reads it.
    """
    out_dir = Path(out_dir)
    extra_probes = check_probes(extra_probes)
    fit_members(dataset, members, spec, out_dir, max_epochs=max_epochs, resume=resume, progress=progress,
                checkpoint_epochs=checkpoint_epochs)
    table = read_rows(out_dir / RESULTS_FILE)
    if (table["probe"] == "masc").any():
        return table
    final_epoch = final_model_rows(table).groupby("member")["epoch"].max().sort_index().to_numpy()
    params, batch_stats = load_member_params(out_dir)
    model = get_model(members[0].model, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    variables = member_variables(params, batch_stats)
    options = dict(variance=variance, sensitivity=sensitivity, precision=precision, memory_budget=memory_budget,
                   extra_probes=extra_probes)
    rows = probe_members(model, members[0].model, variables, dataset, members, epoch=final_epoch,
                         subspaces=subspaces, **options)
    clean = [m for m, member in enumerate(members) if member.degree == 0]
    if clean and clean_degrees:
        rows += probe_members(model, members[0].model, jax.tree.map(lambda leaf: leaf[np.asarray(clean)], variables),
                              dataset, [members[m] for m in clean], epoch=final_epoch[clean], member_ids=clean,
                              subspaces=clean_subspace_kinds(clean_degrees), **options)
    append_rows(out_dir / RESULTS_FILE, rows)
    return read_rows(out_dir / RESULTS_FILE)
