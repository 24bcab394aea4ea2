"""The main experiment (paper 1): train members to memorisation, then probe every layer (MASC and any other probe).

Writes into one run directory: the training outputs of :func:`jaxmem.train.fit_members` and the probe rows,
appended to the same ``results.csv``. A rerun resumes training from its checkpoint and probes only what is missing;
the probe settings are kept in ``config.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from jaxmem.config import MemberSpec, ProbeSpec, TrainSpec
from jaxmem.data import Dataset
from jaxmem.experiments.distributed import probe_on_mesh
from jaxmem.experiments.probing import clean_subspace_kinds, probe_members
from jaxmem.faults import maybe_fail
from jaxmem.features import member_variables
from jaxmem.manifest import holding, is_writer, record_probing
from jaxmem.models import get_model
from jaxmem.models.resnet import with_bn_mode
from jaxmem.probes.registry import select_probes
from jaxmem.results import append_rows, final_model_rows, read_rows
from jaxmem.train import TrainResult, fit_members, load_member_params
from jaxmem.train.rundir import barrier

RESULTS_FILE = "results.csv"


@holding()  # one writer from the training to the last probe row
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
    probing: ProbeSpec = ProbeSpec(),
    mesh=None,
    trained: TrainResult | None = None,
):
    """Train, probe all layers of every member at its final epoch, and return the results table (DataFrame).

    ``probing.probes`` (names of :mod:`jaxmem.probes.registry`) run on every layer, MASC also at each
    ``sensitivity`` variance (see :func:`jaxmem.experiments.probing.probe_members`). The members trained at p = 0
    are also probed with subspaces from their labels corrupted at each of ``clean_degrees`` (subspace kind
    ``"corrupted@q"``). ``bn_mode="reference"`` probes with per-image train-mode BatchNorm
    (:func:`jaxmem.models.resnet.with_bn_mode`). The probe settings go into ``config.json``; a rerun computes only
    the (member, probe, subspace kind) rows that are missing (:func:`missing_probes`), never duplicates.

    With a ``mesh`` (:func:`jaxmem.sharding.member_mesh`, possibly over several processes) training and probing
    are split over its devices (:func:`jaxmem.experiments.distributed.probe_on_mesh`); process 0 writes.
    ``trained``: the result of :func:`jaxmem.train.fit_members` for these members in ``out_dir`` when the caller
    has just trained them; its parameters are probed as they are in memory instead of being trained and read back.
    """
    out_dir = Path(out_dir)
    if trained is None:
        trained = fit_members(dataset, members, spec, out_dir, max_epochs=max_epochs, resume=resume,
                              progress=progress, checkpoint_epochs=checkpoint_epochs, mesh=mesh)
    record_probing(out_dir, probing)
    table = read_rows(out_dir / RESULTS_FILE)
    final_epoch = final_model_rows(table).groupby("member")["epoch"].max().sort_index().to_numpy()
    names = list(select_probes(probing.probes, variance=probing.variance, sensitivity=probing.sensitivity,
                               precision=probing.precision))
    clean = [m for m, member in enumerate(members) if member.degree == 0]
    everyone = list(range(len(members)))
    plan = missing_probes(table, final_epoch, names, {kind: everyone for kind in probing.subspace_labels}
                          | {kind: clean for kind in clean_subspace_kinds(probing.clean_degrees)})
    if not plan:
        return table
    model = with_bn_mode(get_model(members[0].model, dataset.num_classes, init=spec.init,
                                   dropout=spec.dropout), probing.bn_mode)
    # on a mesh the state is split over processes: each reads the whole parameters back from the run directory
    variables = member_variables(*(load_member_params(out_dir) if mesh is not None else
                                   (trained.state.params, trained.state.batch_stats)))

    def probe(ids: Sequence[int], items=tuple(plan.items())) -> list[dict]:  # members ``ids`` (all, or a device's)
        rows = []
        for (kinds, wanted), planned in items:
            chosen = [m for m in ids if m in planned]
            if not chosen:
                continue
            index = np.asarray(chosen)
            rows += probe_members(model, members[0].model, jax.tree.map(lambda leaf: leaf[index], variables),
                                  dataset, [members[m] for m in chosen], epoch=final_epoch[index],
                                  member_ids=chosen, subspace_labels=kinds, probes=wanted, variance=probing.variance,
                                  precision=probing.precision, memory_budget=probing.memory_budget,
                                  seed=probing.seed, progress=progress and mesh is None)
        return rows

    if mesh is None:  # each pass's rows as soon as they exist: an interrupted rerun probes only what is missing
        for item in plan.items():
            append_rows(out_dir / RESULTS_FILE, probe(range(len(members)), (item,)))
            maybe_fail("probe")
    else:
        rows = probe_on_mesh(probe, len(members), mesh)
        if is_writer():
            append_rows(out_dir / RESULTS_FILE, rows)
        barrier("jaxmem-probed")
    return read_rows(out_dir / RESULTS_FILE)


def missing_probes(table, final_epoch, names: Sequence[str], members_by_kind: dict[str, list[int]]) -> dict:
    """What is left to probe: ``{(subspace kinds, probe names): members}`` with no rows yet at each member's final
    epoch, kinds sharing the same missing probes and members grouped into one call."""
    probed = table[table["probe"] != "model"]
    done = set(zip(probed["member"], probed["epoch"], probed["probe"], probed["subspace_labels"]))
    plan: dict[tuple[str, ...], dict] = {}
    for kind, ids in members_by_kind.items():
        for m in ids:
            wanted = tuple(n for n in names if (m, int(final_epoch[m]), n, kind) not in done)
            if wanted:
                plan.setdefault(wanted, {}).setdefault(kind, []).append(m)
    grouped: dict = {}
    for wanted, by_kind in plan.items():
        for kind, ids in by_kind.items():
            grouped.setdefault((tuple(ids), wanted), []).append(kind)
    return {(tuple(kinds), wanted): ids for (ids, wanted), kinds in grouped.items()}

