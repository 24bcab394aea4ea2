"""Experiments as data: a grid file, and the runner that brings each of its runs up to date.

A **grid file** (TOML or JSON) names datasets × models × groups of degrees × seeds, the stages each group runs,
and a table of settings per stage: ``[train]`` (:class:`~jaxmem.config.TrainSpec` fields over the paper preset,
a value or ``{model = value}``, and ``checkpoint_epochs``), ``[probe]`` (:class:`~jaxmem.config.ProbeSpec`),
``[edit]``, ``[dynamics]``, ``[labels]``, ``[edit_continue]``, ``[relabel]``, ``[cost]`` (their specs in
:mod:`jaxmem.config`) and ``[data]`` (``train_subset``, ``test_subset``, ``source``). Its ``layout`` makes one
run directory per (dataset, model, group) — ``cell``, the paper tables — or per (dataset, model, degree, seed) —
``member``, the members of a long full-scale grid. The grid is saved as ``OUT/grid.json``.

:func:`run_grid` brings every run (of a shard) up to date, stage by stage. Each stage is a library function that
computes only the rows its run's tables lack, under the run's manifest and lock (:mod:`jaxmem.manifest`), so what
is done is read from the tables alone (:func:`run_states`) and a rerun after an interruption continues where it
stopped. Two options carry long runs across machines: ``snapshots`` (a folder: each run in training is copied
there every few minutes by :func:`jaxmem.train.snapshot_run`, and a machine without the run directory resumes from
it) and ``completed`` (a folder: each finished run's tables are copied there, and a machine without the run
directory counts it done). With ``[report]`` (``out``, ``title``, ``exclude_layers``) the report is rebuilt from
the completed copies whenever a run completes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from jaxmem.config import (LABEL_RULES, PROBE_NAMES, CostSpec, DynamicsSpec, EditContinueSpec, EditSpec, LabelsSpec,
                           MemberSpec, ProbeSpec, RelabelSpec, TrainSpec)
from jaxmem.data import Dataset
from jaxmem.presets import kept_epochs, paper_model, preset_spec

STAGES = ("train", "probe", "edit", "dynamics", "labels", "edit_continue", "relabel", "cost")
STAGE_SETTINGS = {"probe": ProbeSpec, "edit": EditSpec, "dynamics": DynamicsSpec, "labels": LabelsSpec,
                  "edit_continue": EditContinueSpec, "relabel": RelabelSpec, "cost": CostSpec}
LAYOUTS = ("cell", "member")
GRID_FILE = "grid.json"
TOP_KEYS = ("datasets", "models", "label_rule", "layout", "groups", "out", "snapshots", "snapshot_minutes",
            "completed", "report", "data", "train", *STAGE_SETTINGS)
GROUP_KEYS = ("degrees", "seeds", "stages")
DATA_KEYS = ("train_subset", "test_subset", "source")
REPORT_KEYS = ("out", "title", "exclude_layers")
TRAIN_FIELDS = tuple(field.name for field in dataclasses.fields(TrainSpec))
DONE = ("done", "not needed")  # the states of a stage whose rows are all there
LOST = "lost"  # how the state of a stage begins whose missing rows can no longer be computed (parameters gone)
# what a finished run's copy holds: its tables, pages and plots, never parameters
COMPLETED_FILES = ("config.json", "members.csv", "results.csv", "summary.md", "layers.png", "labels.csv",
                   "labels.json", "labels.md", "labels_pr.png", "relabel.csv", "cost.csv", "cost.md",
                   "edit_continue_*.csv", "edit_continue_*.png")


@dataclass(frozen=True)
class Group:
    """Members (degrees × seeds) that run the same stages."""

    degrees: tuple[float, ...]
    seeds: tuple[int, ...]
    stages: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    """A grid file read and validated: what every run of the grid does."""

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    groups: tuple[Group, ...]
    label_rule: str = "reference"
    layout: str = "cell"
    train: Mapping = dataclasses.field(default_factory=dict)  # TrainSpec overrides {field: value or {model: value}}
    checkpoint_epochs: str | tuple[int, ...] = ()
    specs: Mapping = dataclasses.field(default_factory=dict)  # stage -> its spec
    data: Mapping = dataclasses.field(default_factory=dict)
    out: str = "runs/grid"
    snapshots: str | None = None
    snapshot_minutes: float = 10.0
    completed: str | None = None
    report: Mapping | None = None

    def spec(self, stage: str):
        """The spec of ``stage`` (its defaults where the file has no table for it)."""
        return self.specs.get(stage) or STAGE_SETTINGS[stage]()

    def as_dict(self) -> dict:
        """The grid as plain data (``OUT/grid.json``), which :func:`grid_from_dict` reads back."""
        def plain(value):
            if dataclasses.is_dataclass(value):
                return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            return list(map(plain, value)) if isinstance(value, (tuple, list)) else value

        table = {key: plain(getattr(self, key)) for key in ("datasets", "models", "label_rule", "layout", "out",
                                                             "snapshots", "snapshot_minutes", "completed",
                                                             "report", "data")}
        table["groups"] = [plain(group) for group in self.groups]
        table["train"] = {**plain(self.train), "checkpoint_epochs": plain(self.checkpoint_epochs)}
        table.update({stage: plain(spec) for stage, spec in self.specs.items()})
        return {key: value for key, value in table.items() if value is not None}


class Run(NamedTuple):
    """One run directory of a grid: ``OUT/<name>``, likewise under the snapshot and completed folders."""

    name: str
    dataset: str
    model: str
    members: tuple[MemberSpec, ...]
    stages: tuple[str, ...]


# ----------------------------------------------------------------------------------------------- the file


def _unknown(place: str, table: Mapping, known: Sequence[str]) -> None:
    extra = [key for key in table if key not in known]
    if extra:
        raise ValueError(f"{place}: unknown setting {extra[0]!r}; known: {', '.join(known)}")


def _list(place: str, value, kind: type) -> tuple:
    """A non-empty list of ``kind`` values (a single value counts as a list of one)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    numbers = kind in (int, float)
    fits = lambda v: not isinstance(v, bool) and (isinstance(v, (int, float)) if numbers else isinstance(v, str))
    if not values or not all(map(fits, values)) or (kind is int and not all(float(v).is_integer() for v in values)):
        raise ValueError(f"{place} must be a non-empty list of {kind.__name__} values, got {value!r}")
    return tuple(kind(v) for v in values)


def _stage_spec(place: str, stage: str, table: Mapping, groups: Sequence[Group]):
    kind = STAGE_SETTINGS[stage]
    if not isinstance(table, Mapping):
        raise ValueError(f"{place} must be a table of settings, got {table!r}")
    _unknown(place, table, [field.name for field in dataclasses.fields(kind)])
    table = dict(table)
    if table.get("probes") == "all":
        table["probes"] = PROBE_NAMES
    if stage == "probe" and table.get("clean_degrees") == "auto":
        table["clean_degrees"] = sorted({d for group in groups for d in group.degrees if d > 0})
    try:
        return kind(**table)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{place}: {error}") from None


def grid_from_dict(table: Mapping, where: str = "the grid") -> Grid:
    """A :class:`Grid` from a grid file's data; a wrong key or value raises ``ValueError`` naming its place."""
    from jaxmem.models import MODEL_NAMES

    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table of settings")
    _unknown(where, table, TOP_KEYS)
    for key in ("datasets", "groups"):
        if key not in table:
            raise ValueError(f"{where}: {key!r} is missing")
    datasets = _list(f"{where}: datasets", table["datasets"], str)
    models = _list(f"{where}: models", table.get("models", ["paper"]), str)
    for model in models:
        if model != "paper" and model not in MODEL_NAMES:
            raise ValueError(f"{where}: models: unknown model {model!r}; choose from paper, {', '.join(MODEL_NAMES)}")
    groups = []
    if not isinstance(table["groups"], list) or not table["groups"]:
        raise ValueError(f"{where}: groups must be a non-empty list of tables ([[groups]])")
    for index, group in enumerate(table["groups"], start=1):
        place = f"{where}: groups[{index}]"
        if not isinstance(group, Mapping):
            raise ValueError(f"{place} must be a table with degrees, seeds and stages")
        _unknown(place, group, GROUP_KEYS)
        degrees = _list(f"{place}.degrees", group.get("degrees", []), float)
        if any(not 0 <= d <= 1 for d in degrees):
            raise ValueError(f"{place}.degrees must lie in [0, 1], got {list(degrees)}")
        seeds = _list(f"{place}.seeds", group.get("seeds", [0]), int)
        stages = _list(f"{place}.stages", group.get("stages", ["train", "probe"]), str)
        unknown = [stage for stage in stages if stage not in STAGES]
        if unknown:
            raise ValueError(f"{place}.stages: unknown stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
        groups.append(Group(degrees, seeds, tuple(s for s in STAGES if s in stages or s == "train")))
    label_rule = table.get("label_rule", "reference")
    if label_rule not in LABEL_RULES:
        raise ValueError(f"{where}: label_rule must be one of {', '.join(LABEL_RULES)}, got {label_rule!r}")
    layout = table.get("layout", "cell")
    if layout not in LAYOUTS:
        raise ValueError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    train = dict(table.get("train", {}))
    _unknown(f"{where}: [train]", train, (*TRAIN_FIELDS, "checkpoint_epochs"))
    checkpoint_epochs = train.pop("checkpoint_epochs", ())
    if checkpoint_epochs != "paper2":
        checkpoint_epochs = _list(f"{where}: [train] checkpoint_epochs", checkpoint_epochs, int) if checkpoint_epochs \
            else ()
    data = dict(table.get("data", {}))
    _unknown(f"{where}: [data]", data, DATA_KEYS)
    report = table.get("report")
    if report is not None:
        _unknown(f"{where}: [report]", report, REPORT_KEYS)
        if "out" not in report:
            raise ValueError(f"{where}: [report] needs its 'out' folder")
    specs = {stage: _stage_spec(f"{where}: [{stage}]", stage, table[stage], groups)
             for stage in STAGE_SETTINGS if stage in table}
    grid = Grid(datasets, models, tuple(groups), label_rule, layout, train, checkpoint_epochs, specs, data,
                str(table.get("out", "runs/grid")), table.get("snapshots"), float(table.get("snapshot_minutes", 10)),
                table.get("completed"), report)
    for dataset, model in _pairs(grid):  # every pair has a preset, and the overrides make a valid TrainSpec
        try:
            preset_spec(dataset, model, train)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: [train] for {dataset} × {model}: {error}") from None
    try:
        grid_runs(grid)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return grid


def read_grid(path: str | Path) -> Grid:
    """The grid of a ``.toml`` or ``.json`` file (:func:`grid_from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no grid file {path}")
    try:
        table = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {error}") from None
    return grid_from_dict(table, str(path))


# ----------------------------------------------------------------------------------------------- the runs


def _pairs(grid: Grid) -> list[tuple[str, str]]:
    return list(dict.fromkeys((d, paper_model(d, m)) for d in grid.datasets for m in grid.models))


def grid_runs(grid: Grid) -> list[Run]:
    """Every run of the grid in order: pairs, then groups, then (layout ``member``) degrees and seeds."""
    runs = []
    for dataset, model in _pairs(grid):
        cell = f"{dataset}-{model}"
        for index, group in enumerate(grid.groups, start=1):
            members = [MemberSpec(dataset, model, d, s, grid.label_rule) for d in group.degrees for s in group.seeds]
            if grid.layout == "cell":
                name = cell if len(grid.groups) == 1 else f"{cell}-{index}"
                runs.append(Run(name, dataset, model, tuple(members), group.stages))
            else:
                runs += [Run(f"{cell}/p{m.degree:g}-s{m.seed}", dataset, model, (m,), group.stages) for m in members]
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"the grid names run {repeated[0]} twice (a degree or seed in two groups)")
    return runs


def shard_runs(runs: Sequence, shard: tuple[int, int] | None, noun: str = "run") -> list:
    """The runs (or cells: ``noun``) of shard ``(k, n)``: every ``n``-th from the ``k``-th; all for None."""
    if shard is None:
        return list(runs)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: K must be 0 <= K < N")
    if k >= len(runs):
        raise ValueError(f"shard {k}/{n} has no {noun}: the grid has {len(runs)}")
    return list(runs)[k::n]


def grid_shard(grid: Grid, shard: tuple[int, int] | None) -> list[Run]:
    """The grid's runs of shard ``(k, n)`` (:func:`shard_runs`; a run is a cell in the ``cell`` layout)."""
    return shard_runs(grid_runs(grid), shard, "cell" if grid.layout == "cell" else "run")


def train_spec(grid: Grid, run: Run) -> TrainSpec:
    return preset_spec(run.dataset, run.model, grid.train)


def run_kept_epochs(grid: Grid, run: Run) -> tuple[int, ...]:
    """The epochs whose parameters the run keeps: the grid's, and the edit-then-continue epoch."""
    kept = set(kept_epochs(run.dataset, train_spec(grid, run), grid.checkpoint_epochs))
    if "edit_continue" in run.stages:
        kept.add(grid.spec("edit_continue").edit_epoch)
    return tuple(sorted(kept))


# ----------------------------------------------------------------------------------------------- what is done


def _folder(grid: Grid, key: str, run: Run) -> Path | None:
    root = getattr(grid, key)
    return None if root is None else Path(root) / run.name


def _latest_checkpoint(run_dir: Path) -> int | None:
    epochs = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(epochs) if epochs else None


def stop_epochs(table, spec: TrainSpec) -> dict[int, int] | None:
    """``{member: last epoch}`` when every member of the table has stopped (memorised, or at the epoch cap), else
    None."""
    from jaxmem.report import unmemorised_members
    from jaxmem.results import final_model_rows

    last = final_model_rows(table).groupby("member")["epoch"].max()
    open_members = unmemorised_members(table, spec.target_train_accuracy, spec.stop_on)
    if any(epoch < spec.max_epochs for epoch, _ in open_members.values()):
        return None
    return {int(m): int(e) for m, e in last.items()}


def _stage_state(stage: str, grid: Grid, run: Run, where: Path, table, stops: dict[int, int]) -> str:
    """The state of one stage of a trained run from the tables in ``where``."""
    import numpy as np

    from jaxmem.experiments.dynamics import edit_continue_path, edit_probe_name
    from jaxmem.experiments.labels import LABELS_FILE, label_methods, missing_labels
    from jaxmem.experiments.memorize import missing_probes
    from jaxmem.experiments.probing import clean_subspace_kinds
    from jaxmem.experiments.relabel import RELABEL_FILE
    from jaxmem.models import trained_probe_layers
    from jaxmem.probes.registry import select_probes
    from jaxmem.results import read_rows

    spec, members = grid.spec(stage) if stage != "train" else None, run.members
    final = np.asarray([stops[m] for m in range(len(members))])
    if stage == "probe":
        names = list(select_probes(spec.probes, variance=spec.variance, sensitivity=spec.sensitivity,
                                   precision=spec.precision))
        clean = [m for m, member in enumerate(members) if member.degree == 0]
        plan = missing_probes(table, final, names, {kind: list(range(len(members))) for kind in spec.subspace_labels}
                              | {kind: clean for kind in clean_subspace_kinds(spec.clean_degrees)})
        missing = sum(len(ids) * len(kinds) * len(names) for (kinds, names), ids in plan.items())
        return "done" if not plan else f"{missing} probe rows missing"
    if stage == "edit":
        rows = table[(table["probe"] == edit_probe_name(spec.keep_bias))
                     & (table["subspace_labels"] == spec.subspace_labels)]
        done = {(int(m), int(e)) for m, e in zip(rows["member"], rows["epoch"])}
        return "done" if all((m, e) in done for m, e in stops.items()) else "missing"
    if stage == "dynamics":
        names = set(select_probes(spec.probes, variance=spec.variance))
        wanted = {(p, layer, kind) for p in names for layer in (spec.layers or trained_probe_layers(run.model))
                  for kind in spec.subspace_labels}
        probed = table[table["probe"].isin(names)]
        if (where / "dynamics.csv").exists():
            side = read_rows(where / "dynamics.csv")
            probed = [probed, side[side["probe"].isin(names)]]
        else:
            probed = [probed]
        have: dict[int, set] = {}
        for part in probed:
            for e, p, layer, kind in zip(part["epoch"], part["probe"], part["layer"], part["subspace_labels"]):
                have.setdefault(int(e), set()).add((p, layer, kind))
        epochs = [e for e in run_kept_epochs(grid, run) if e <= max(stops.values())
                  and e in kept_epochs(run.dataset, train_spec(grid, run), grid.checkpoint_epochs)]
        missing = [e for e in epochs if not wanted <= have.get(e, set())]
        lost = [e for e in missing if not (where / "epochs" / str(e)).exists()]
        if not missing:
            return "done"
        parts = [f"{len(missing) - len(lost)} kept epochs to probe"] if len(missing) > len(lost) else []
        if lost:
            parts.append(f"{LOST}: {_count(len(lost), 'kept epoch')} whose parameters are gone ({_span(lost)})")
        return "; ".join(parts)
    if stage == "labels":
        noisy = [m for m, member in enumerate(members) if member.degree > 0]
        if not noisy:
            return "not needed"
        path = where / LABELS_FILE
        if not path.exists():
            return "missing"
        lacking = missing_labels(read_rows(path), noisy, label_methods(spec.probes), spec.fine_tune)
        return "missing" if lacking else "done"
    if stage == "edit_continue":
        if edit_continue_path(where, spec.edit_epoch).exists():
            return "done"
        if max(stops.values()) < spec.edit_epoch:
            return "not needed"
        return "missing" if (where / "epochs" / str(spec.edit_epoch)).exists() else \
            f"{LOST}: epoch {spec.edit_epoch} is not kept here"
    if stage == "relabel":
        path = where / RELABEL_FILE
        done = set() if not path.exists() else set(read_rows(path).query("probe == 'relabel'")["subspace_labels"])
        return "done" if set(spec.subspace_labels) <= done else "missing"
    if stage == "cost":
        path = where / "cost.csv"
        if not path.exists():
            return "missing"
        import pandas as pd

        from jaxmem.models import chosen_probe_layers

        cost = pd.read_csv(path)
        have = set(zip(cost["layer"], cost["probe"]))
        wanted = {(layer, probe) for layer in chosen_probe_layers(run.model, spec.layers) for probe in spec.probes}
        return "done" if wanted <= have else "missing"
    raise ValueError(f"unknown stage {stage!r}")


def settled(state: str) -> bool:
    """Whether a stage in ``state`` has nothing left to compute: its rows are all there, or those missing can no
    longer be computed (their parameters are gone; the state says which)."""
    return state in DONE or state.startswith(LOST)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _span(epochs: Sequence[int]) -> str:
    return f"{epochs[0]}–{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])


def run_states(grid: Grid, run: Run, out: str | Path) -> dict[str, str]:
    """``{stage: state}`` of a run, read from its tables: in ``OUT/<name>``, else its completed copy, else its
    snapshot. States: ``done``, ``not needed``, ``not trained``, ``waits for training``, ``at epoch N`` (its
    newest checkpoint; also when the rows reach the stop but the final parameters were not written), ``starts over``
    (rows but no checkpoint yet), ``resumes at epoch N from the snapshot``, or what is missing or lost (parameters
    gone)."""
    from jaxmem.results import read_rows
    from jaxmem.train.rundir import CONFIG_FILE, FINAL_DIR, RESULTS_FILE

    local, completed = Path(out) / run.name, _folder(grid, "completed", run)
    snapshot = _folder(grid, "snapshots", run)
    if (local / CONFIG_FILE).exists():
        where = local
    elif completed is not None and (completed / RESULTS_FILE).exists():
        where = completed
    else:
        epoch = None if snapshot is None else _latest_checkpoint(snapshot)
        train = "not trained" if epoch is None else f"resumes at epoch {epoch} from the snapshot {snapshot}"
        return _in_training(run, train, snapshot)
    table = read_rows(where / RESULTS_FILE)
    stops = stop_epochs(table, train_spec(grid, run)) if len(table) else None
    stopped = stops is not None and len(stops) == len(run.members)
    if not stopped or (where == local and not (local / FINAL_DIR).exists()):  # killed before the final save
        epoch = _latest_checkpoint(where)
        train = f"at epoch {epoch}" if epoch is not None else (
            f"starts over: rows to epoch {table['epoch'].max()}, no checkpoint yet" if len(table) else "not trained")
        if stopped:
            train += f" (rows to the stop at epoch {max(stops.values())}; the final parameters not saved yet)"
        return _in_training(run, train, where)
    return {stage: "done" if stage == "train" else _stage_state(stage, grid, run, where, table, stops)
            for stage in run.stages}


def _in_training(run: Run, train: str, where: Path | None) -> dict[str, str]:
    """The states of a run not trained to its stop: ``train`` for training, the others wait for it; dynamics
    names the kept epochs it has probed beside the training so far (``where/dynamics.csv``)."""
    from jaxmem.results import read_rows

    states = {stage: train if stage == "train" else "waits for training" for stage in run.stages}
    side = None if where is None else where / "dynamics.csv"
    if "dynamics" in states and side is not None and side.exists():
        epochs = sorted(set(read_rows(side)["epoch"]))
        if epochs:
            states["dynamics"] += f" ({_count(len(epochs), 'kept epoch')} probed so far: {_span(epochs)})"
    return states


def grid_text(grid: Grid, runs: Sequence[Run], states: Sequence[dict[str, str]], out: str | Path) -> str:
    """What ``--dry-run`` prints: every run with its members, its training settings and the state of each of its
    stages."""
    lines = [f"{_count(len(runs), 'run')} in {out} (layout {grid.layout})"]
    for run, state in zip(runs, states):
        members = ", ".join(f"p = {m.degree:g} seed {m.seed}" for m in run.members)
        lines.append(f"{run.name}: {run.dataset} × {run.model}, {_count(len(run.members), 'member')} ({members})")
        spec = train_spec(grid, run)
        lines.append(f"    {'':<14} {spec.optimizer}, lr {spec.learning_rate:g}, batch {spec.batch_size}, at most "
                     f"{spec.max_epochs} epochs, stop at train accuracy {spec.target_train_accuracy:g} "
                     f"({spec.stop_on}, {spec.order} order)")
        lines += [f"    {stage:<14} {state[stage]}" for stage in run.stages]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- running


def run_stages(grid: Grid, run: Run, dataset: Dataset, run_dir: str | Path, *, progress: bool = True,
               mesh=None) -> None:
    """Bring one run up to date: each of its stages computes what its tables lack, in stage order, holding the
    run directory. With a ``mesh`` (train and probe only) every process calls this and process 0 writes."""
    if mesh is not None and set(run.stages) - {"train", "probe"}:
        raise ValueError(f"only training and probing run split over several devices; {run.name} also has "
                         f"{', '.join(s for s in run.stages if s not in ('train', 'probe'))}: run it on one")
    from jaxmem.experiments import cost, dynamics, labels, memorize, relabel
    from jaxmem.manifest import hold, is_writer
    from jaxmem.models import chosen_probe_layers, trained_probe_layers
    from jaxmem.report import (plot_edit_continue, plot_layers, write_labels_section, write_summary)
    from jaxmem.results import append_missing
    from jaxmem.train import Carry, fit_members

    run_dir = Path(run_dir)
    spec, members, stages = train_spec(grid, run), list(run.members), run.stages
    kept = run_kept_epochs(grid, run)
    dyn = grid.spec("dynamics")
    dyn_layers = chosen_probe_layers(run.model, dyn.layers or trained_probe_layers(run.model))
    side_table = run_dir / "dynamics.csv"

    def probe_kept_epoch(epoch: int) -> None:  # while training goes on: a stopped machine keeps these rows
        if epoch in kept_epochs(run.dataset, spec, grid.checkpoint_epochs):
            dynamics.probe_saved_epochs(dataset, members, spec, run_dir, probing=dyn.probing(), epochs=[epoch],
                                        layers=dyn_layers, results_path=side_table, progress=progress)

    snapshot = _folder(grid, "snapshots", run)
    carry = None if snapshot is None else Carry(snapshot, grid.snapshot_minutes * 60,
                                                tuple(e for e in kept if "edit_continue" in stages
                                                      and e == grid.spec("edit_continue").edit_epoch))
    with hold(run_dir):
        if "dynamics" in stages and (run_dir / "epochs").is_dir():  # kept before a stop and not probed yet
            dynamics.probe_saved_epochs(dataset, members, spec, run_dir, probing=dyn.probing(), layers=dyn_layers,
                                        epochs=kept_epochs(run.dataset, spec, grid.checkpoint_epochs),
                                        results_path=side_table, progress=progress)
        trained = fit_members(dataset, members, spec, run_dir, checkpoint_epochs=kept, progress=progress,
                              on_kept_epoch=probe_kept_epoch if "dynamics" in stages else None, carry=carry,
                              mesh=mesh)
        if "probe" in stages:  # the trained state is handed on in memory
            table = memorize.run_memorization(dataset, members, spec, run_dir, probing=grid.spec("probe"),
                                              progress=progress, trained=trained, mesh=mesh)
            if is_writer():
                write_summary(table, run_dir)
                plot_layers(table, run_dir / "layers.png")
        if "edit" in stages:
            edit = grid.spec("edit")
            dynamics.edit_at_stop(dataset, members, spec, run_dir, keep_bias=edit.keep_bias,
                                  subspace_labels=edit.subspace_labels)
        if "dynamics" in stages:
            if side_table.exists():
                append_missing(run_dir / "results.csv", side_table)
            dynamics.probe_saved_epochs(dataset, members, spec, run_dir, probing=dyn.probing(), layers=dyn_layers,
                                        progress=progress)
        if "labels" in stages and any(m.degree > 0 for m in members):
            given = grid.spec("labels")
            found = labels.label_issues(run_dir, dataset, probes=given.probes, layers=given.layers or None,
                                        folds=given.folds, split_seed=given.split_seed, variance=given.variance,
                                        fine_tune=given.fine_tune, finetune_epochs=given.finetune_epochs,
                                        patience=given.patience, progress=progress)
            write_labels_section(found.table, run_dir)
        if "edit_continue" in stages:
            given = grid.spec("edit_continue")
            path = dynamics.edit_continue_path(run_dir, given.edit_epoch)
            if not path.exists() and (run_dir / "epochs" / str(given.edit_epoch)).exists():
                table = dynamics.edit_then_continue(dataset, members, spec, run_dir, edit_epoch=given.edit_epoch,
                                                    until_epoch=given.until_epoch, keep_bias=given.keep_bias,
                                                    progress=progress)
                plot_edit_continue(table, path.with_suffix(".png"))
            elif not path.exists() and progress:
                print(f"{run.name}: edit-then-continue skipped: epoch {given.edit_epoch} is not kept here",
                      flush=True)
        if "relabel" in stages:
            given = grid.spec("relabel")
            relabel.relabel_and_finetune(dataset, members, spec, run_dir, subspace_labels=given.subspace_labels,
                                         layers=given.layers or None, max_epochs=given.max_epochs,
                                         patience=given.patience, split_seed=given.split_seed,
                                         variance=given.variance, progress=progress)
        if "cost" in stages:
            given = grid.spec("cost")
            table = cost.run_cost(run_dir, dataset, layers=given.layers or None, probes=given.probes,
                                  repeats=given.repeats, subspace_labels=given.subspace_labels,
                                  variance=given.variance)
            cost.write_cost_page(table, run_dir, given.repeats)


def _stale_copy(run_dir: Path, dest: Path) -> bool:
    """Whether ``dest`` lacks the finished run's copy or is older than one of its tables, pages or plots."""
    copied = dest / "results.csv"
    if not copied.exists():
        return True
    return any(path.stat().st_mtime > copied.stat().st_mtime for pattern in COMPLETED_FILES
               for path in run_dir.glob(pattern))


def commit_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a finished run's tables, pages and plots (:data:`COMPLETED_FILES`, no parameters) into ``dest``,
    replacing what was there: its results table up to its last finished append, with every row of its side table
    of kept epochs probed during training (``dynamics.csv``) that it lacks. Written beside ``dest`` and renamed,
    so a kill never leaves half a copy. ``ValueError`` for a run without its results table."""
    from jaxmem.results import COMMIT_SUFFIX, append_missing, intact_size

    run_dir, dest = Path(run_dir), Path(dest)
    table = run_dir / "results.csv"
    if not table.exists():
        raise ValueError(f"{run_dir} has no results.csv: not a trained run")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for pattern in COMPLETED_FILES:
        for path in run_dir.glob(pattern):
            if path != table:
                shutil.copy2(path, staging / path.name)
    with table.open("rb") as f:
        (staging / table.name).write_bytes(f.read(intact_size(table)[0]))
    if (run_dir / "dynamics.csv").exists():
        append_missing(staging / table.name, run_dir / "dynamics.csv")
        (staging / (table.name + COMMIT_SUFFIX)).unlink(missing_ok=True)
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


def combine_runs(out: str | Path, runs: Sequence[Run], file_name: str, done: Callable[[Run], bool]) -> Path | None:
    """Rebuild ``OUT/file_name`` from the runs' tables that ``done`` accepts, members numbered apart (run ``i``'s
    member ``m`` becomes ``i · M + m``, ``M`` the largest run's member count); written atomically."""
    import pandas as pd

    from jaxmem.results import read_rows, write_table

    out, width = Path(out), max(len(run.members) for run in runs)
    parts = []
    for index, run in enumerate(runs):
        path = out / run.name / file_name
        if path.exists() and done(run):
            table = read_rows(path)
            parts.append(table.assign(member=table["member"] + index * width))
    if not parts:
        return None
    write_table(pd.concat(parts, ignore_index=True), out / file_name)
    return out / file_name


def _load_for(grid: Grid, load: Callable[..., Dataset]) -> Callable[[str], Dataset]:
    """``load(name)`` with the grid's [data] settings; one dataset held at a time."""
    cache: dict[str, Dataset] = {}

    def get(name: str) -> Dataset:
        if name not in cache:
            cache.clear()
            cache[name] = load(name, **grid.data)
        return cache[name]

    return get


def run_grid(grid: Grid, load: Callable[..., Dataset], *, out: str | Path | None = None,
             shard: tuple[int, int] | None = None, progress: bool = True, mesh=None) -> list[dict[str, str]]:
    """Bring every run of the grid (of ``shard``) up to date; returns each run's states afterwards.

    ``load(name, **grid.data)`` gives a dataset (:func:`jaxmem.presets.load_data`). A run with neither its run
    directory nor a completed copy restores its snapshot when there is one. A run whose completed copy exists and
    whose run directory does not is not run again (delete the copy to redo it); stages it lacks are reported.
    Layout ``cell``: ``OUT/results.csv`` and ``OUT/relabel.csv`` join the finished runs' tables (members numbered
    apart), rebuilt holding ``OUT`` so that the shards of a job array sharing it leave the whole grid's table.
    With a ``mesh`` every run trains and probes split over its devices (all processes call this).
    """
    from jaxmem.manifest import is_writer
    from jaxmem.train import restore_snapshot
    from jaxmem.train.rundir import CONFIG_FILE, RESULTS_FILE, barrier

    out = Path(out or grid.out)
    runs = grid_runs(grid)
    mine = grid_shard(grid, shard)
    if is_writer():
        out.mkdir(parents=True, exist_ok=True)
        (out / GRID_FILE).write_text(json.dumps(grid.as_dict(), indent=2) + "\n")
    get = _load_for(grid, load)
    finished = []
    for index, run in enumerate(mine, start=1):
        states = run_states(grid, run, out)
        run_dir, completed = out / run.name, _folder(grid, "completed", run)
        pending = [stage for stage, state in states.items() if not settled(state)]
        if progress:
            print(f"[{index}/{len(mine)}] {run.name}: " + (", ".join(f"{s} {states[s]}" for s in pending) or "done"),
                  flush=True)
        local = (run_dir / CONFIG_FILE).exists()
        snapshot = _folder(grid, "snapshots", run)
        ran = pending and (local or completed is None or not (completed / RESULTS_FILE).exists())
        if ran:
            if snapshot is not None and not local and restore_snapshot(snapshot, run_dir) and progress:
                print(f"{run.name}: resumed from the snapshot {snapshot}", flush=True)
            run_stages(grid, run, get(run.dataset), run_dir, progress=progress, mesh=mesh)
            barrier("jaxmem-grid-run")
            states = run_states(grid, run, out)
        finished.append(states)
        # a run finished now, or earlier with its copy missing or older than its tables (a kill before the copy)
        if is_writer() and all(map(settled, states.values())) and (run_dir / CONFIG_FILE).exists() and (
                ran or (completed is not None and _stale_copy(run_dir, completed))):
            if completed is not None:
                commit_run(run_dir, completed)
                if snapshot is not None:
                    shutil.rmtree(snapshot, ignore_errors=True)
            combine_grid(grid, runs, out)
            if grid.report is not None:
                write_grid_report(grid, out)
    if is_writer():
        combine_grid(grid, runs, out)  # the shards that finished before this one
    barrier("jaxmem-grid-combined")
    return finished


def combine_grid(grid: Grid, runs: Sequence[Run], out: Path) -> None:
    """Layout ``cell``: rebuild ``OUT/results.csv`` and ``OUT/relabel.csv`` from every finished run, holding
    ``OUT`` (a blocking hold: the shards of a job array take turns)."""
    from jaxmem.experiments.relabel import RELABEL_FILE
    from jaxmem.manifest import hold
    from jaxmem.train.rundir import RESULTS_FILE

    if grid.layout != "cell":
        return
    with hold(out, wait=True):
        finished = {run.name for run in runs if all(map(settled, run_states(grid, run, out).values()))}
        for file_name in (RESULTS_FILE, RELABEL_FILE):
            combine_runs(out, runs, file_name, lambda r: r.name in finished)


def write_grid_report(grid: Grid, out: str | Path | None = None) -> Path:
    """The grid's report (``[report]``): from the completed runs' copies alone, else from ``OUT/results.csv``, with
    the runs not complete (:func:`unfinished_runs`) named."""
    from jaxmem.report import report_runs

    if grid.report is None:
        raise ValueError("the grid file has no [report] (its 'out', optionally 'title' and 'exclude_layers')")
    out = Path(out or grid.out)
    tables = (sorted(Path(grid.completed).glob("**/results.csv")) if grid.completed is not None
              else [out / "results.csv"])
    if not tables:
        raise FileNotFoundError(f"no run of the grid is complete yet (none in {grid.completed}); "
                                "jaxmem sweep --config FILE --dry-run shows where each stands")
    return report_runs(tables, grid.report["out"], title=grid.report.get("title"),
                       exclude_layers=grid.report.get("exclude_layers", ()), unfinished=unfinished_runs(grid, out))


def unfinished_runs(grid: Grid, out: str | Path) -> list[tuple[str, dict[str, str], object]]:
    """``[(name, {stage: state}, table or None)]`` of each run of the grid with a stage not settled: those stages'
    states and its results table so far, from ``OUT/<name>`` or else its snapshot."""
    from jaxmem.results import read_rows
    from jaxmem.train.rundir import CONFIG_FILE, RESULTS_FILE

    runs = []
    for run in grid_runs(grid):
        states = {stage: state for stage, state in run_states(grid, run, out).items() if not settled(state)}
        if not states:
            continue
        local, snapshot = Path(out) / run.name, _folder(grid, "snapshots", run)
        where = local if (local / CONFIG_FILE).exists() else snapshot
        table = where / RESULTS_FILE if where is not None else None
        runs.append((run.name, states, read_rows(table) if table is not None and table.exists() else None))
    return runs
