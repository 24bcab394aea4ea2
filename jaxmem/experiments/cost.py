"""Compute cost of the probes (SPEC §7): wall time and FLOPs of fitting and of scoring each probe, per layer.

Wall time: one untimed warm-up call (compilation), then the best of ``repeats`` calls of the public API, each
ended with ``jax.block_until_ready``; host-side work inside the API (label counts, schedules) is included.

FLOPs are the matrix-product flops of all M members (a multiply-add counts 2), from the formulas of
:data:`PROBE_COSTS`. N training samples (N_c in class c), T scored samples, D features, C classes, K = min(C, D);
eigh of an n×n symmetric matrix counts 9·n³ (tridiagonalisation plus eigenvectors, Golub & Van Loan), the thin
SVD of an m×n matrix (m ≥ n) 6·m·n² + 20·n³ (R-SVD). Elementwise work (norms, softmax, argmax, Adam) and
padding rows are not counted. Per member:

- MASC fit, per class the problem it solves: primal (N_c ≥ D) Gram 2·N_c·D² + eigh 9·D³ (:func:`masc.fit_flops`);
  dual (0 < N_c < D) kernel 2·N_c²·D + eigh 9·N_c³ + basis Xᵀ V 2·N_c²·D; an empty class nothing.
  Score 2·T·D·C·W, W = the scoring width max min(k_c, D − k_c) that all classes and members share
  (:func:`masc.scoring_flops`).
- linear: fit as MASC (the same Gram/dual machinery, leading eigenvector); score 2·T·D·C.
- NCM: fit, class means as one one-hot product, 2·N·C·D; score 2·T·D·C.
- kNN: no fit (0 s, 0 flops); score 2·T·N·D (cosine similarities; the top-k over N is not counted).
- LDA: fit class means 2·N·C·D + within-class scatter 2·N·D² + eigh 9·D³ + whitened means 2·C·D² + their SVD
  6·max(C, D)·K² + 20·K³ + directions 2·D²·K + projected means and coefficients 4·C·K·D; score 2·T·D·C.
- QDA: fit class means 2·N·C·D + per-class scatter 2·N·D² + an eigh per class 9·C·D³; score 2·T·C·D² (one
  whitening product per class).
- logistic regression: fit E epochs × N samples × (logits 2·D·C + kernel gradient 2·D·C) = 4·E·N·D·C (the
  features are constants, so no gradient flows to them); score 2·T·D·C.

The tests hold the scoring formulas, the Gram term and one logistic-regression step against XLA's own count
(``cost_analysis``). A phase without work (kNN's fit) has 0 s, 0 flops and 0 GFLOP/s.
:func:`run_cost` measures every probe layer of a trained run and writes ``cost.csv`` into its directory.
"""
from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxmem import masc
from jaxmem.data import Dataset, load_dataset, member_train_labels, normalize, subset
from jaxmem.features import collect_activations, member_variables
from jaxmem.models import get_model, probe_layers
from jaxmem.probes import baselines, linear
from jaxmem.probes.masc import prepare_fit
from jaxmem.train import load_member_params, read_run_config
from jaxmem.train.loop import CONFIG_FILE, run_config

COST_FILE = "cost.csv"
COST_COLUMNS = ("layer", "probe", "phase", "members", "n_train", "n_test", "dim", "classes", "wall_s", "flops",
                "gflops_per_s")
EIGH_FLOPS = 9.0  # × n³ for an n×n symmetric eigendecomposition with eigenvectors


class ProbeSizes(NamedTuple):
    """Sizes that the FLOP formulas need."""

    counts: np.ndarray  # [M, C] training samples per member and class
    use_dual: np.ndarray  # [M, C] bool: MASC/linear solve the N_c × N_c dual problem (prepare_fit's "auto" rule)
    n_test: int  # T
    dim: int  # D

    @property
    def members(self) -> int:
        return self.counts.shape[0]

    @property
    def n_train(self) -> int:
        return int(self.counts[0].sum())

    @property
    def classes(self) -> int:
        return self.counts.shape[1]


class ProbeCost(NamedTuple):
    """How to fit and score one probe through its public API, and the flops of each phase (all members)."""

    fit: Callable[..., Any]  # (train_features, train_labels, num_classes, variance, key) -> fitted
    score: Callable[[Any, jax.Array], jax.Array]  # (fitted, test_features) -> predictions
    fit_flops: Callable[[ProbeSizes, Any], float]  # (sizes, fitted) -> flops
    score_flops: Callable[[ProbeSizes, Any], float]


# ----------------------------------------------------------------------------------------------- formulas


def eigh_flops(n) -> np.ndarray:
    return EIGH_FLOPS * np.asarray(n, np.float64) ** 3


def thin_svd_flops(rows: int, cols: int) -> float:
    """R-SVD of a rows × cols matrix, singular values and the thin singular vectors."""
    long, short = max(rows, cols), min(rows, cols)
    return 6.0 * long * short**2 + 20.0 * short**3


def subspace_fit_flops(sizes: ProbeSizes, _fitted=None) -> float:
    """MASC and linear fit: per class the primal Gram + eigh, or the dual kernel + eigh + basis."""
    primal = (sizes.counts > 0) & ~sizes.use_dual
    primal_flops = sum(masc.fit_flops(int(counts[keep].sum()), sizes.dim, int(keep.sum()))
                       for counts, keep in zip(sizes.counts, primal))
    dual_counts = np.where(sizes.use_dual, sizes.counts, 0).astype(np.float64)
    dual_flops = np.sum(4.0 * dual_counts**2 * sizes.dim + eigh_flops(dual_counts))
    return float(primal_flops + dual_flops)


def masc_score_flops(sizes: ProbeSizes, probe: masc.MascProbe) -> float:
    return sizes.members * masc.scoring_flops(probe, sizes.n_test)


def dense_score_flops(sizes: ProbeSizes, _fitted=None) -> float:
    """One [T, D] × [D, C] product per member (linear, NCM, LDA, logistic regression)."""
    return 2.0 * sizes.members * sizes.n_test * sizes.dim * sizes.classes


def class_means_flops(sizes: ProbeSizes, _fitted=None) -> float:
    """The one-hot product that sums each class's rows: 2·N·C·D per member."""
    return 2.0 * sizes.members * sizes.n_train * sizes.classes * sizes.dim


def no_flops(_sizes: ProbeSizes, _fitted=None) -> float:
    return 0.0


def knn_score_flops(sizes: ProbeSizes, _fitted=None) -> float:
    return 2.0 * sizes.members * sizes.n_test * sizes.n_train * sizes.dim


def lda_fit_flops(sizes: ProbeSizes, _fitted=None) -> float:
    n, c, d = sizes.n_train, sizes.classes, sizes.dim
    k = min(c, d)
    per_member = (2.0 * n * d**2 + eigh_flops(d) + 2.0 * c * d**2 + thin_svd_flops(c, d) + 2.0 * d**2 * k
                  + 4.0 * c * k * d)
    return class_means_flops(sizes) + sizes.members * float(per_member)


def qda_fit_flops(sizes: ProbeSizes, _fitted=None) -> float:
    per_member = 2.0 * sizes.n_train * sizes.dim**2 + sizes.classes * eigh_flops(sizes.dim)
    return class_means_flops(sizes) + sizes.members * float(per_member)


def qda_score_flops(sizes: ProbeSizes, _fitted=None) -> float:
    return 2.0 * sizes.members * sizes.n_test * sizes.classes * sizes.dim**2


def logreg_fit_flops(sizes: ProbeSizes, probe: baselines.LogRegProbe) -> float:
    epochs = probe.losses.shape[-1]
    return 4.0 * sizes.members * epochs * sizes.n_train * sizes.dim * sizes.classes


# ------------------------------------------------------------------------------------------------ probes


def _masc_fit(x, y, num_classes, variance, _key):
    return masc.fit(x, y, num_classes, variance)


def _linear_fit(x, y, num_classes, _variance, _key):
    return linear.fit(x, y, num_classes)


def _knn_fit(x, y, num_classes, _variance, _key):
    return x, y, num_classes  # kNN keeps the training set: nothing to compute


def _knn_score(fitted, features):
    train_features, train_labels, num_classes = fitted
    return baselines.knn_predict(train_features, train_labels, features, num_classes)


def _deterministic_fit(fit):
    return lambda x, y, num_classes, _variance, _key: fit(x, y, num_classes)


def _logreg_fit(x, y, num_classes, _variance, key):
    return baselines.logreg_fit(x, y, num_classes, key)


PROBE_COSTS: dict[str, ProbeCost] = {
    "masc": ProbeCost(_masc_fit, masc.predict, subspace_fit_flops, masc_score_flops),
    "linear": ProbeCost(_linear_fit, linear.predict, subspace_fit_flops, dense_score_flops),
    "ncm": ProbeCost(_deterministic_fit(baselines.ncm_fit), baselines.ncm_predict, class_means_flops,
                     dense_score_flops),
    "knn": ProbeCost(_knn_fit, _knn_score, no_flops, knn_score_flops),
    "lda": ProbeCost(_deterministic_fit(baselines.lda_fit), baselines.lda_predict, lda_fit_flops, dense_score_flops),
    "qda": ProbeCost(_deterministic_fit(baselines.qda_fit), baselines.qda_predict, qda_fit_flops, qda_score_flops),
    "logreg": ProbeCost(_logreg_fit, baselines.logreg_predict, logreg_fit_flops, dense_score_flops),
}
COST_PROBES = tuple(PROBE_COSTS)
UNTIMED_FITS = ("knn",)  # no fit to time: 0 s


def check_cost_probes(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in PROBE_COSTS]
    if unknown or not names:
        raise ValueError(f"unknown or no probes {list(unknown)}; choose from {', '.join(COST_PROBES)}")
    return tuple(names)


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
    """The sizes of one layer's problem; the primal/dual choice is :func:`masc.prepare_fit`'s (as fit makes it)."""
    prepared = prepare_fit(train_features, train_labels, num_classes, exact=False)
    return ProbeSizes(prepared.counts, prepared.use_dual, int(np.shape(test_features)[-2]),
                      int(np.shape(train_features)[-1]))


def probe_cost_rows(train_features, train_labels, test_features, num_classes: int, *, layer: str,
                    probes: Sequence[str] = COST_PROBES, repeats: int = 3, seed: int = 0,
                    variance: float | int = 0.99) -> list[dict]:
    """Rows of wall time and flops for fitting and scoring each probe on one layer.

    Args:
      train_features: [M, N, D] per member; train_labels: [M, N] int grouping labels; test_features: [M, T, D].
      probes: names from :data:`PROBE_COSTS`; repeats: timed calls per phase (best kept); seed: logistic
        regression's key; variance: MASC's n.
    """
    probes = check_cost_probes(probes)
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
    for name in probes:
        cost = PROBE_COSTS[name]
        fit = functools.partial(cost.fit, train, labels, num_classes, variance, key)
        fit_s, fitted = (0.0, fit()) if name in UNTIMED_FITS else best_wall_time(fit, repeats)
        score_s, _ = best_wall_time(functools.partial(cost.score, fitted, test), repeats)
        for phase, wall_s, flops in (("fit", fit_s, cost.fit_flops(sizes, fitted)),
                                     ("score", score_s, cost.score_flops(sizes, fitted))):
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


def check_run_data(run_dir: str | Path, dataset: Dataset) -> None:
    """Raise ``ValueError`` unless ``dataset`` has the sizes and train labels the run was trained on."""
    spec, members = read_run_config(run_dir)
    recorded = json.loads((Path(run_dir) / CONFIG_FILE).read_text())["data"]
    given = run_config(spec, members, dataset)["data"]
    if given != recorded:
        raise ValueError(f"the dataset given ({given}) is not the one {run_dir} was trained on ({recorded})")


def _first(n: int | None, total: int, split: str) -> slice:
    if n is not None and not 1 <= n <= total:
        raise ValueError(f"{split} subset must be between 1 and {total} samples, got {n}")
    return slice(n)


def run_cost(run_dir: str | Path, dataset: Dataset, *, layers: Sequence[str] | None = None,
             probes: Sequence[str] = COST_PROBES, repeats: int = 3, subspace_labels: str = "corrupted",
             variance: float | int = 0.99, num_train: int | None = None, num_test: int | None = None,
             epoch: int | str = "final") -> pd.DataFrame:
    """Probe cost rows for every probe layer (or ``layers``) of a trained run; written to ``run_dir/cost.csv``.

    ``dataset`` must be the run's own data (:func:`load_run_dataset`); ``num_train`` / ``num_test`` time the
    probes on the first samples only (labels corrupted as in training). Members' parameters at ``epoch``.
    """
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    check_cost_probes(probes)
    check_run_data(run_dir, dataset)
    spec, members = read_run_config(run_dir)
    model_name = members[0].model
    layers = tuple(layers or probe_layers(model_name))
    unknown = sorted(set(layers) - set(probe_layers(model_name)))
    if unknown:
        raise ValueError(f"unknown layers {unknown} for {model_name}; probe layers: {probe_layers(model_name)}")
    train_part = _first(num_train, len(dataset.y_train), "train")
    test_part = _first(num_test, len(dataset.y_test), "test")
    corrupted = member_train_labels(dataset, members)
    grouping = corrupted if subspace_labels == "corrupted" else np.broadcast_to(dataset.y_train, corrupted.shape)
    x_train = normalize(dataset.name, dataset.x_train[train_part])
    x_test = normalize(dataset.name, dataset.x_test[test_part])
    model = get_model(model_name, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    variables = member_variables(*load_member_params(run_dir, epoch))
    rows = []
    for layer in layers:
        train = collect_activations(model, variables, x_train, (layer,))[layer]
        test = collect_activations(model, variables, x_test, (layer,))[layer]
        rows += probe_cost_rows(train, grouping[:, train_part], test, dataset.num_classes, layer=layer,
                                probes=probes, repeats=repeats, variance=variance)
    table = pd.DataFrame(rows, columns=list(COST_COLUMNS))
    table.to_csv(Path(run_dir) / COST_FILE, index=False)
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


__all__ = ["COST_PROBES", "PROBE_COSTS", "ProbeCost", "ProbeSizes", "best_wall_time", "check_run_data",
           "cost_markdown", "load_run_dataset", "probe_cost_rows", "probe_sizes", "run_cost"]
