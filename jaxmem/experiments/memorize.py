"""The main experiment (paper 1): train members to memorisation, then probe every layer (MASC and any other probe).

Writes into one run directory: the training outputs of :func:`jaxmem.train.fit_members` and the probe rows,
appended to the same ``results.csv``. A rerun resumes training from its checkpoint and skips probing when the
finished run already has rows of the requested probes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset
from jaxmem.experiments.distributed import probe_on_mesh
from jaxmem.experiments.probing import clean_subspace_kinds, probe_members
from jaxmem.features import member_variables
from jaxmem.models import get_model
from jaxmem.models.resnet import with_bn_mode
from jaxmem.probes.registry import check_probe_names
from jaxmem.report import final_model_rows
from jaxmem.results import append_rows, read_rows
from jaxmem.train import fit_members, load_member_params
from jaxmem.train.rundir import barrier, is_writer

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
    probes: Sequence[str] = ("masc",),
    sensitivity: Sequence[float | int] = (),
    clean_degrees: Sequence[float] = (),
    bn_mode: str = "eval",
    mesh=None,
):
    """Train, probe all layers of every member at its final epoch, and return the results table (DataFrame).

    ``probes`` (names of :mod:`jaxmem.probes.registry`) run on every layer, MASC also at each ``sensitivity``
    variance (see :func:`jaxmem.experiments.probing.probe_members`). The members trained at p = 0
    are also probed with subspaces from their labels corrupted at each of ``clean_degrees`` (subspace kind
    ``"corrupted@q"``). ``bn_mode="reference"`` probes with per-image train-mode BatchNorm
    (:func:`jaxmem.models.resnet.with_bn_mode`). Probing happens once per run directory: a rerun of a probed run only reads it.

    With a ``mesh`` (:func:`jaxmem.sharding.member_mesh`, possibly over several processes) training and probing
    are split over its devices (:func:`jaxmem.experiments.distributed.probe_on_mesh`); process 0 writes.
    """
    out_dir = Path(out_dir)
    probes = check_probe_names(probes)
    fit_members(dataset, members, spec, out_dir, max_epochs=max_epochs, resume=resume, progress=progress,
                checkpoint_epochs=checkpoint_epochs, mesh=mesh)
    table = read_rows(out_dir / RESULTS_FILE)
    if table["probe"].isin(probes).any():
        return table
    final_epoch = final_model_rows(table).groupby("member")["epoch"].max().sort_index().to_numpy()
    params, batch_stats = load_member_params(out_dir)
    model = with_bn_mode(get_model(members[0].model, dataset.num_classes, init=spec.init,
                                   dropout=spec.dropout), bn_mode)
    variables = member_variables(params, batch_stats)
    options = dict(variance=variance, sensitivity=sensitivity, precision=precision, memory_budget=memory_budget,
                   probes=probes)

    def probe(ids: Sequence[int]) -> list[dict]:  # the members ``ids`` (all, or one device's)
        rows = []
        for kinds, chosen in ((subspaces, list(ids)),
                              (clean_subspace_kinds(clean_degrees), [m for m in ids if members[m].degree == 0])):
            if kinds and chosen:
                rows += probe_members(model, members[0].model, jax.tree.map(lambda leaf: leaf[np.asarray(chosen)],
                                                                            variables),
                                      dataset, [members[m] for m in chosen], epoch=final_epoch[chosen],
                                      member_ids=chosen, subspaces=kinds, **options)
        return rows

    rows = probe(range(len(members))) if mesh is None else probe_on_mesh(probe, len(members), mesh)
    if is_writer():
        append_rows(out_dir / RESULTS_FILE, rows)
    barrier("jaxmem-probed")
    return read_rows(out_dir / RESULTS_FILE)
