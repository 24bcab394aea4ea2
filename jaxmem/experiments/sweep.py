"""A grid of experiments, datasets × models × degrees × seeds, into one results table (resumable).

A **cell** is one (dataset, model) pair: its degrees × seeds are the members of one training program, run by
:func:`jaxmem.experiments.memorize.run_memorization` in ``OUT/<dataset>-<model>/`` (optionally followed by relabel
and fine-tune). A finished cell leaves a ``DONE`` marker and is never recomputed; an interrupted one resumes from
its checkpoint. After each cell, ``OUT/results.csv`` (and ``OUT/relabel.csv``) is rebuilt from the finished
cells' tables, with member indices offset so that every (cell, member) has its own index.

A **shard** ``(k, n)`` runs the cells whose position in the grid is ``k`` modulo ``n``: the ``n`` processes of a
job array, on one machine or many that share ``OUT``, split the grid between them. Each cell directory is held by
the process that runs it, and the combined tables are rebuilt (from every finished cell, whichever shard ran it)
holding ``OUT`` briefly, so the last shard to finish leaves the whole grid's table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from jaxmem.config import ProbeSpec, TrainSpec, paper_train_spec
from jaxmem.data import Dataset
from jaxmem.experiments.memorize import RESULTS_FILE, run_memorization
from jaxmem.experiments.relabel import RELABEL_FILE, relabel_and_finetune
from jaxmem.manifest import hold
from jaxmem.members import member_grid
from jaxmem.presets import paper_model, preset_spec
from jaxmem.results import read_rows, write_table
from jaxmem.train.rundir import barrier, is_writer

DONE_FILE = "DONE"


class Cell(NamedTuple):
    dataset: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.model}"


def sweep_cells(datasets: Sequence[str], models: Sequence[str]) -> list[Cell]:
    """Every (dataset, model) pair; the model ``"paper"`` is each dataset's paper model. Pairs without a
    preset are rejected before anything runs."""
    cells = []
    for dataset in datasets:
        for model in models:
            cell = Cell(dataset, paper_model(dataset, model))
            paper_train_spec(*cell)  # raises for unknown pairs
            if cell not in cells:
                cells.append(cell)
    if not cells:
        raise ValueError("a sweep needs at least one dataset and one model")
    return cells


def cell_spec(cell: Cell, overrides: dict[str, dict]) -> TrainSpec:
    """The cell's preset with overrides ``{field: {model or "*": value}}`` (:func:`jaxmem.presets.preset_spec`)."""
    return preset_spec(cell.dataset, cell.model, overrides)


def shard_cells(cells: Sequence[Cell], shard: tuple[int, int] | None) -> list[Cell]:
    """The cells of shard ``(k, n)``: every ``n``-th from the ``k``-th (0 <= k < n); all of them for None."""
    if shard is None:
        return list(cells)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: K must be 0 <= K < N")
    if k >= len(cells):
        raise ValueError(f"shard {k}/{n} has no cell: the grid has {len(cells)}")
    return list(cells)[k::n]


def cell_status(out_dir: str | Path, cell: Cell) -> str:
    """``done`` (finished, will be skipped), ``started`` (will resume) or ``new``."""
    directory = Path(out_dir) / cell.name
    if (directory / DONE_FILE).exists():
        return "done"
    return "started" if (directory / "config.json").exists() else "new"


def combine_tables(out_dir: str | Path, cells: Sequence[Cell], members_per_cell: int, file_name: str) -> Path | None:
    """Rebuild ``OUT/file_name`` from the finished cells' tables, member ``m`` of cell ``i`` becoming
    ``i · members_per_cell + m``; written to a temporary file and renamed, so a kill never leaves half a table."""
    import pandas as pd

    out_dir = Path(out_dir)
    parts = []
    for index, cell in enumerate(cells):
        path = out_dir / cell.name / file_name
        if cell_status(out_dir, cell) == "done" and path.exists():
            table = read_rows(path)
            parts.append(table.assign(member=table["member"] + index * members_per_cell))
    if not parts:
        return None
    target = out_dir / file_name
    write_table(pd.concat(parts, ignore_index=True), target)
    return target


def run_sweep(
    cells: Sequence[Cell],
    degrees: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | Path,
    load: Callable[[str], Dataset],
    *,
    label_rule: str = "reference",
    overrides: dict[str, dict] | None = None,
    relabel: bool = False,
    relabel_options: dict | None = None,
    progress: bool = True,
    mesh=None,
    probing: ProbeSpec = ProbeSpec(),
    shard: tuple[int, int] | None = None,
):
    """Run every unfinished cell (of ``shard``, :func:`shard_cells`), then return the combined results table
    (DataFrame) of every finished cell.

    ``load(dataset_name)`` gives each dataset (loaded once per dataset, in cell order); ``overrides`` as in
    :func:`cell_spec`; ``probing`` goes to :func:`run_memorization` (every cell is probed alike); with
    ``relabel`` each cell also runs :func:`relabel_and_finetune`. With a ``mesh`` every cell trains and probes
    split over its devices (all processes run this; process 0 writes).
    """
    if mesh is not None and relabel:
        raise ValueError("relabel runs on one process; run the sweep without --distributed to relabel, or leave "
                         "out --relabel")
    out_dir = Path(out_dir)
    members_per_cell = len(degrees) * len(seeds)
    loaded: dict[str, Dataset] = {}
    mine = shard_cells(cells, shard)
    for index, cell in enumerate(mine, start=1):
        status = cell_status(out_dir, cell)
        if progress:
            print(f"[{index}/{len(mine)}] {cell.dataset} × {cell.model}: {status}", flush=True)
        if status == "done":
            continue
        if cell.dataset not in loaded:
            loaded = {cell.dataset: load(cell.dataset)}  # keep one dataset in memory at a time
        dataset, spec = loaded[cell.dataset], cell_spec(cell, overrides or {})
        members = member_grid(cell.dataset, cell.model, degrees, seeds, label_rule)
        cell_dir = out_dir / cell.name
        run_memorization(dataset, members, spec, cell_dir, progress=progress, mesh=mesh, probing=probing)
        if relabel:
            relabel_and_finetune(dataset, members, spec, cell_dir, progress=progress, **(relabel_options or {}))
        if is_writer():
            (cell_dir / DONE_FILE).write_text("finished\n")
            with hold(out_dir, wait=True):
                for file_name in (RESULTS_FILE, RELABEL_FILE):
                    combine_tables(out_dir, cells, members_per_cell, file_name)
        barrier("jaxmem-sweep-cell")
    if is_writer():
        with hold(out_dir, wait=True):
            combine_tables(out_dir, cells, members_per_cell, RESULTS_FILE)
    barrier("jaxmem-sweep-combined")
    return read_rows(out_dir / RESULTS_FILE)
