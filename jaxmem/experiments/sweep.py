"""A grid of experiments from flags, datasets × models × degrees × seeds, into one results table (resumable).

A **cell** is one (dataset, model) pair: its degrees × seeds are the members of one training program, trained
and probed in ``OUT/<dataset>-<model>/`` (optionally followed by relabel and fine-tune). :func:`run_sweep` is the
grid runner (:mod:`jaxmem.runner`) on the grid these arguments describe: what a cell has done is read from its
tables, an interrupted cell resumes, a finished one is not touched, and ``OUT/results.csv`` (and
``OUT/relabel.csv``) joins the finished cells' tables with every (cell, member) its own index.

A **shard** ``(k, n)`` runs the cells whose position in the grid is ``k`` modulo ``n``: the ``n`` processes of a
job array, on one machine or many that share ``OUT``, split the grid between them; the last to finish leaves the
whole grid's table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from jaxmem.config import ProbeSpec, RelabelSpec, paper_train_spec
from jaxmem.data import Dataset
from jaxmem.presets import paper_model
from jaxmem.results import read_rows
from jaxmem.runner import Grid, Group, grid_runs, run_grid, shard_runs


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


def sweep_grid(cells: Sequence[Cell], degrees: Sequence[float], seeds: Sequence[int], out_dir: str | Path, *,
               label_rule: str = "reference", overrides: dict[str, dict] | None = None, relabel: bool = False,
               relabel_options: dict | None = None, probing: ProbeSpec = ProbeSpec(), layout: str = "cell") -> Grid:
    """The grid of a sweep's arguments: one group (``degrees`` × ``seeds``) in every cell; ``layout`` ``cell`` (one
    run directory and one vmapped program per cell) or ``member`` (one per member, so that a rerun with more degrees
    or seeds trains only the new ones)."""
    datasets = tuple(dict.fromkeys(cell.dataset for cell in cells))
    models = tuple(dict.fromkeys(cell.model for cell in cells))
    stages = ("train", "probe", "relabel") if relabel else ("train", "probe")
    specs = {"probe": probing, **({"relabel": RelabelSpec(**(relabel_options or {}))} if relabel else {})}
    grid = Grid(datasets, models, (Group(tuple(map(float, degrees)), tuple(seeds), stages),), label_rule, layout,
                {field: value for field, value in (overrides or {}).items() if value is not None}, (), specs,
                out=str(out_dir))
    if layout == "cell" and [run.name for run in grid_runs(grid)] != [cell.name for cell in cells]:
        raise ValueError(f"a sweep's cells are every dataset × model pair, got {[cell.name for cell in cells]}")
    return grid


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
    """Run every unfinished cell (of ``shard``, :func:`jaxmem.runner.shard_runs`), then return the combined results
    table (DataFrame) of every finished cell.

    ``load(dataset_name)`` gives each dataset (loaded once per dataset, in cell order); ``overrides`` as in
    :func:`jaxmem.presets.preset_spec`; ``probing`` is every cell's :class:`~jaxmem.config.ProbeSpec`; with
    ``relabel`` each cell also relabels and fine-tunes (``relabel_options``: :class:`~jaxmem.config.RelabelSpec`
    fields). With a ``mesh`` every cell trains and probes split over its devices (all processes run this; process
    0 writes).
    """
    grid = sweep_grid(cells, degrees, seeds, out_dir, label_rule=label_rule, overrides=overrides, relabel=relabel,
                      relabel_options=relabel_options, probing=probing)
    shard_runs(cells, shard, "cell")  # the sweep's own words for a bad shard
    run_grid(grid, lambda name, **data: load(name), out=out_dir, shard=shard, progress=progress, mesh=mesh)
    return read_rows(Path(out_dir) / "results.csv")
