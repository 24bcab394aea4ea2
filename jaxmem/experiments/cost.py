"""Compute cost of the probes: wall time and FLOPs of fitting and of scoring each registered probe, per layer.

Wall time: one untimed warm-up call (compilation), then the best of ``repeats`` calls of the probe's ``fit`` and
``scores``, each ended with ``jax.block_until_ready``; host-side work inside them (label counts, schedules) is
included. FLOPs are each probe's own count (:mod:`jaxmem.probes.registry` gives the formulas), for all M members;
a phase without matrix products (kNN's fit, which keeps the training set) has 0 flops and 0 GFLOP/s.
The tests hold the scoring formulas, the Gram term and one logistic-regression step against XLA's own count
(``cost_analysis``). :func:`run_cost` measures every probe layer of a trained run and writes ``cost.csv`` into
its directory.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxmem.data import Dataset, load_dataset, normalize, subspace_grouping, subset
from jaxmem.experiments.trained import open_run
from jaxmem.features import collect_activations
from jaxmem.manifest import holding, record_stage
from jaxmem.models import chosen_probe_layers
from jaxmem.probes.base import ProbeSizes, prepare_fit
from jaxmem.probes.registry import PROBES, check_probe_names, select_probes
from jaxmem.results import write_table
from jaxmem.train import read_run_config
from jaxmem.train.rundir import CONFIG_FILE

COST_FILE = "cost.csv"
COST_PAGE = "cost.md"
COST_COLUMNS = ("layer", "probe", "phase", "members", "n_train", "n_test", "dim", "classes", "wall_s", "flops",
                "gflops_per_s")


def check_cost_probes(names: Sequence[str]) -> tuple[str, ...]:
    if not names:
        raise ValueError(f"no probes given; choose from {', '.join(PROBES)}")
    return check_probe_names(names)


# ---------------------------------------------------------------------------------------------- measuring


def best_wall_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(best of ``repeats`` timed calls in seconds, the last result), after one untimed warm-up call."""
    result = jax.block_until_ready(function())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return min(times), result


def probe_sizes(train_features, train_labels, test_features, num_classes: int) -> ProbeSizes:
    """The sizes of one layer's problem; the primal/dual choice is :func:`prepare_fit`'s (as MASC's fit makes it)."""
    prepared = prepare_fit(train_features, train_labels, num_classes, exact=False)
    return ProbeSizes(prepared.counts, prepared.use_dual, int(np.shape(test_features)[-2]),
                      int(np.shape(train_features)[-1]))


def probe_cost_rows(train_features, train_labels, test_features, num_classes: int, *, layer: str,
                    probes: Sequence[str] = tuple(PROBES), repeats: int = 3, seed: int = 0,
                    variance: float | int = 0.99) -> list[dict]:
    """Rows of wall time and flops for fitting and scoring each probe on one layer.

    Args:
      train_features: [M, N, D] per member; train_labels: [M, N] int grouping labels; test_features: [M, T, D].
      probes: names of :mod:`jaxmem.probes.registry`; repeats: timed calls per phase (best kept); seed: the
        key of probes that take one (logistic regression); variance: MASC's n.
    """
    probes = select_probes(check_cost_probes(probes), variance=variance)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if np.ndim(train_features) != 3 or np.ndim(test_features) != 3:
        raise ValueError("features must carry a leading member axis: [M, N, D] and [M, T, D]")
    train = jnp.asarray(train_features, jnp.float32)
    test = jnp.asarray(test_features, jnp.float32)
    labels = np.asarray(train_labels)
    sizes = probe_sizes(train, labels, test, num_classes)
    shape = dict(members=sizes.members, n_train=sizes.n_train, n_test=sizes.n_test, dim=sizes.dim,
                 classes=sizes.classes)
    key = jax.random.key(seed)
    rows = []
    for name, probe in probes.items():
        fit_s, state = best_wall_time(functools.partial(probe.fit, train, labels, num_classes, key=key), repeats)
        score_s, _ = best_wall_time(functools.partial(probe.predict, state, test), repeats)
        for phase, wall_s, flops in (("fit", fit_s, probe.fit_flops(sizes, state)),
                                     ("score", score_s, probe.score_flops(sizes, state))):
            rows.append({"layer": layer, "probe": name, "phase": phase, **shape, "wall_s": wall_s,
                         "flops": float(flops), "gflops_per_s": flops / wall_s / 1e9 if wall_s > 0 else 0.0})
    return rows


# ------------------------------------------------------------------------------------------------ a run


def load_run_dataset(run_dir: str | Path, data_dir: str | None = None, source: str = "auto") -> Dataset:
    """The dataset a run was trained on, cut to the sizes its ``config.json`` records (checked by :func:`run_cost`)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {run_dir}; not a jaxmem training run")
    _, members = read_run_config(run_dir)
    recorded = json.loads(path.read_text())["data"]
    dataset = load_dataset(members[0].dataset, data_dir, source)
    if (recorded["num_train"], recorded["num_test"]) == (len(dataset.y_train), len(dataset.y_test)):
        return dataset
    return subset(dataset, recorded["num_train"], recorded["num_test"])


def _first(n: int | None, total: int, split: str) -> slice:
    if n is not None and not 1 <= n <= total:
        raise ValueError(f"{split} subset must be between 1 and {total} samples, got {n}")
    return slice(n)


@holding("run_dir")
def run_cost(run_dir: str | Path, dataset: Dataset, *, layers: Sequence[str] | None = None,
             probes: Sequence[str] = tuple(PROBES), repeats: int = 3, subspace_labels: str = "corrupted",
             variance: float | int = 0.99, num_train: int | None = None, num_test: int | None = None,
             epoch: int | str = "final") -> pd.DataFrame:
    """Probe cost rows for every probe layer (or ``layers``) of a trained run; written to ``run_dir/cost.csv``.

    A rerun measures only the (layer, probe) pairs the table lacks (probes and layers are requests in the run's
    manifest); the other settings change what a row means and must match the first call's (else ``ValueError``).

    ``dataset`` must be the run's own data (:func:`load_run_dataset`); ``num_train`` / ``num_test`` time the
    probes on the first samples only (labels corrupted as in training). Members' parameters at ``epoch``.
    """
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    check_cost_probes(probes)
    run = open_run(run_dir, dataset)
    layers = chosen_probe_layers(run.model_name, layers)
    train_part = _first(num_train, len(dataset.y_train), "train")
    test_part = _first(num_test, len(dataset.y_test), "test")
    grouping = subspace_grouping(dataset, run.members, [subspace_labels])[subspace_labels]
    # only the timed samples are normalised (not run.x_train): a subset keeps the memory of the whole set free
    x_train = normalize(dataset.name, dataset.x_train[train_part])
    x_test = normalize(dataset.name, dataset.x_test[test_part])
    model = run.model
    variables = run.variables(epoch)
    record_stage(run_dir, "cost", {"repeats": repeats, "subspace_labels": subspace_labels, "variance": variance,
                                   "num_train": num_train, "num_test": num_test, "epoch": epoch},
                 {"probes": list(probes), "layers": list(layers)},
                 way_out=f"delete {Path(run_dir) / COST_FILE} to measure everything again with these settings")
    path = Path(run_dir) / COST_FILE
    earlier = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=list(COST_COLUMNS))
    measured = set(zip(earlier["layer"], earlier["probe"]))
    rows = []
    for layer in layers:
        missing = [probe for probe in probes if (layer, probe) not in measured]
        if not missing:
            continue
        train = collect_activations(model, variables, x_train, (layer,))[layer]
        test = collect_activations(model, variables, x_test, (layer,))[layer]
        rows += probe_cost_rows(train, grouping[:, train_part], test, dataset.num_classes, layer=layer,
                                probes=missing, repeats=repeats, variance=variance)
    if not rows:
        return earlier
    table = pd.concat([earlier, pd.DataFrame(rows, columns=list(COST_COLUMNS))], ignore_index=True) \
        if len(earlier) else pd.DataFrame(rows, columns=list(COST_COLUMNS))
    write_table(table, path)
    return table


def cost_markdown(df: pd.DataFrame) -> str:
    """A Markdown table, one row per (layer, probe): fit and score seconds and GFLOP, and GFLOP/s of both."""
    lines = ["| layer | probe | fit s | score s | fit GFLOP | score GFLOP | GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for (layer, probe), part in df.groupby(["layer", "probe"], sort=False):
        phase = part.set_index("phase")
        seconds, flops = phase["wall_s"].sum(), phase["flops"].sum()
        throughput = f"{flops / seconds / 1e9:.3g}" if seconds > 0 else "–"
        lines.append(f"| {layer} | {probe} | {phase.at['fit', 'wall_s']:.3g} | {phase.at['score', 'wall_s']:.3g} | "
                     f"{phase.at['fit', 'flops'] / 1e9:.3g} | {phase.at['score', 'flops'] / 1e9:.3g} | {throughput} |")
    return "\n".join(lines)


def write_cost_page(df: pd.DataFrame, run_dir: str | Path, repeats: int) -> str:
    """The Markdown page of a :func:`run_cost` table (device, sizes and timing rule, then :func:`cost_markdown`),
    written to ``run_dir/cost.md``; returns it."""
    shape = df.iloc[0]
    title = (f"Probe cost on {jax.devices()[0].device_kind}: {shape['members']} members, {shape['n_train']} train / "
             f"{shape['n_test']} test samples, best of {repeats} after a warm-up")
    page = f"{title}\n\n{cost_markdown(df)}\n"
    (Path(run_dir) / COST_PAGE).write_text(page)
    return page


__all__ = ["ProbeSizes", "best_wall_time", "cost_markdown", "load_run_dataset", "probe_cost_rows",
           "probe_sizes", "run_cost", "write_cost_page"]
