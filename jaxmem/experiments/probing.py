"""Probes on the layers of members (the input layer, every probe layer of trained members) and on activations
files, as rows of the tidy results table; the probing itself is the engine's (:mod:`jaxmem.probes.engine`).

Rows (docs/methods.md): per layer and probe, test accuracy vs true labels and train accuracy vs corrupted and vs
true labels, with the probe's size (MASC: mean components per class). For the input layer all members (corruption
degrees × seeds) share the features and differ only in their grouping labels, so one batched fit serves them all.
Every probe of :mod:`jaxmem.probes.registry` runs the same way: fitted on the activations held in memory, or, for a
layer too large for memory, from its streamed Grams when the probe streams (kNN and logistic regression need the
activations themselves and skip such layers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from jaxmem.config import GIVEN_LABELS, MemberSpec, ProbeSpec
from jaxmem.data import Dataset, member_train_labels, subspace_grouping
from jaxmem.experiments.activations import Activations, activations_source, check_finite
from jaxmem.features import model_source
from jaxmem.models import probe_layers
from jaxmem.probes.base import Probe
from jaxmem.probes.engine import array_source, probe_source
from jaxmem.probes.registry import select_probes
from jaxmem.results import accuracy_row, append_rows, write_member_table
from jaxmem.train.rundir import CONFIG_FILE, MEMBERS_FILE, RESULTS_FILE

ACTIVATIONS_MODEL = "activations"  # the model column of rows probed from an activations file
PROBE_RUN_KIND = "probe"  # config.json "kind" of a run directory written by write_probe_run


def clean_subspace_kinds(degrees: Sequence[float]) -> tuple[str, ...]:
    """The subspace kinds of the clean-model variant at the given corruption degrees."""
    return tuple(f"corrupted@{degree:g}" for degree in degrees)


def probe_rows(
    members: Sequence[MemberSpec],
    sizes: np.ndarray | None,
    *,
    layer: str,
    epoch: int | Sequence[int],
    subspace_labels: str,
    train_predictions: np.ndarray,
    test_predictions: np.ndarray,
    corrupted_labels: np.ndarray,
    true_train_labels: np.ndarray,
    test_labels: np.ndarray,
    probe_name: str,
    member_ids: Sequence[int] | None = None,
) -> list[dict]:
    """Rows for one layer: test vs true labels, train vs corrupted and vs true labels, per member.

    Predictions and ``corrupted_labels`` are [M, N]; true labels are shared; ``epoch`` is one or per member.
    ``sizes`` [M] are the probe's sizes (None: NaN). ``member_ids`` are the members' indices in the run
    (default 0..M-1).
    """
    sizes = np.full(len(members), np.nan) if sizes is None else sizes
    epochs = np.broadcast_to(epoch, (len(members),))
    member_ids = range(len(members)) if member_ids is None else member_ids
    rows = []
    for m, (member_id, member) in enumerate(zip(member_ids, members)):
        common = dict(epoch=epochs[m], probe=probe_name, layer=layer, subspace_labels=subspace_labels, size=sizes[m])
        scored = [
            ("train", "corrupted", train_predictions[m], corrupted_labels[m]),
            ("train", "true", train_predictions[m], true_train_labels),
            ("test", "true", test_predictions[m], test_labels),
        ]
        for split, against, predicted, target in scored:
            rows.append(accuracy_row(member_id, member, split=split, scored_against=against,
                                     n_correct=np.sum(predicted == target), n_seen=len(target), **common))
    return rows


def probe_input_layer(
    dataset: Dataset,
    members: Sequence[MemberSpec],
    *,
    probes: Sequence[str] = ("masc",),
    variance: float | int = 0.99,
    precision: str = "fast",
    subspace_labels: str = "corrupted",
    seed: int = 0,
) -> list[dict]:
    """Fit ``probes`` (see :func:`jaxmem.probes.registry.select_probes`) on the flattened, normalised inputs with
    each member's labels and score train and test."""
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    x_train = dataset.inputs("train").reshape(len(dataset.x_train), -1)
    x_test = dataset.inputs("test").reshape(len(dataset.x_test), -1)
    corrupted = member_train_labels(dataset, members)
    probed = probe_source(array_source({"input": (x_train, x_test)}), subspace_grouping(dataset, members,
                                                                                       [subspace_labels]),
                          dataset.num_classes, select_probes(probes, variance=variance, precision=precision),
                          precision=precision, memory_budget=float("inf"), seed=seed)
    rows = []
    for (_, kind, name), scored in probed.scored.items():
        rows += probe_rows(members, scored.size, layer="input", epoch=-1, subspace_labels=kind,
                           probe_name=name, train_predictions=scored.train, test_predictions=scored.test,
                           corrupted_labels=corrupted, true_train_labels=dataset.y_train, test_labels=dataset.y_test)
    return rows


def fit_and_score(
    model,
    variables,
    dataset: Dataset,
    grouping: dict,
    layers: Sequence[str],
    *,
    probes: Mapping[str, Probe],
    precision: str = "fast",
    memory_budget: float = 2**31,
    batch_size: int = 1024,
    seed: int = 0,
    train_scores: bool = False,
    progress: bool = False,
) -> dict:
    """Fit every probe on every layer with each grouping ``{kind: labels [M, N]}`` and predict train and test:
    :func:`jaxmem.probes.engine.probe_source` on the members' layers (:func:`jaxmem.features.model_source`).

    Returns:
      ``{(layer, kind, probe_name): engine.Scored(size [M], train predictions [M, N], test predictions [M, T])}``, with
      ``train_scores`` also the class scores [M, N, C] of the training rows. ``progress``: a line per layer probed.
    """
    source = model_source(model, variables, dataset.inputs("train"), dataset.inputs("test"), layers,
                          batch_size=batch_size)
    return probe_source(source, grouping, dataset.num_classes, probes, precision=precision,
                        memory_budget=memory_budget, seed=seed, train_scores=train_scores, progress=progress).scored


def probe_members(
    model,
    model_name: str,
    variables,
    dataset: Dataset,
    members: Sequence[MemberSpec],
    *,
    epoch: int | Sequence[int],
    probes: Sequence[str] = ("masc",),
    subspace_labels: Sequence[str] = ("corrupted", "true"),
    variance: float | int = 0.99,
    sensitivity: Sequence[float | int] = (),
    precision: str = "fast",
    memory_budget: float = 2**31,
    batch_size: int = 1024,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    member_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Probe rows for every probe layer (or the given ``layers``) of every member (member axis on ``variables``).

    ``probes``, ``variance``, ``sensitivity`` and ``precision`` choose the probes
    (:func:`jaxmem.probes.registry.select_probes`: e.g. MASC at each ``sensitivity`` value as ``"masc(n=…)"``);
    ``subspace_labels`` are names of :func:`jaxmem.data.subspace_grouping`; see :func:`fit_and_score` for the rest.
    Train predictions are scored against the member's own labels as "corrupted" (for a ``"corrupted@q"`` kind: against
    those labels) and the true ones. ``progress``: a line per layer probed.
    """
    selected = select_probes(probes, variance=variance, sensitivity=sensitivity, precision=precision)
    grouping = subspace_grouping(dataset, members, subspace_labels)
    corrupted = member_train_labels(dataset, members)
    fitted = fit_and_score(model, variables, dataset, grouping, tuple(layers or probe_layers(model_name)),
                           probes=selected, precision=precision, memory_budget=memory_budget, batch_size=batch_size,
                           seed=seed, progress=progress)
    rows = []
    for (name, kind, probe_name), scored in fitted.items():
        rows += probe_rows(members, scored.size, layer=name, epoch=epoch, subspace_labels=kind, probe_name=probe_name,
                           train_predictions=scored.train, test_predictions=scored.test,
                           corrupted_labels=grouping[kind] if kind.startswith("corrupted@") else corrupted,
                           true_train_labels=dataset.y_train, test_labels=dataset.y_test, member_ids=member_ids)
    return rows


class ProbeRun(NamedTuple):
    """What :func:`probe_activations` or :func:`probe_dataset_inputs` did."""

    rows: list[dict]
    members: list[MemberSpec]
    streamed: tuple[str, ...]  # layers fitted from streamed statistics
    skipped: dict[str, tuple[str, ...]]  # streamed layer -> probes that need the activations in memory


def _selected(probing: ProbeSpec) -> dict:
    return select_probes(probing.probes, variance=probing.variance, sensitivity=probing.sensitivity,
                         precision=probing.precision)


def probe_dataset_inputs(dataset: Dataset, members: Sequence[MemberSpec], probing: ProbeSpec = ProbeSpec()) -> ProbeRun:
    """Every probe of ``probing`` on the flattened, normalised inputs, with each of its subspace kinds
    ("corrupted": each member's labels; "true"), for every member (they share the features)."""
    rows = []
    for kind in probing.subspace_labels:
        rows += probe_input_layer(dataset, members, probes=list(_selected(probing)), variance=probing.variance,
                                  precision=probing.precision, subspace_labels=kind, seed=probing.seed)
    return ProbeRun(rows, list(members), (), {})


def probe_activations(acts: Activations, probing: ProbeSpec = ProbeSpec()) -> ProbeRun:
    """Every probe of ``probing`` (:func:`jaxmem.probes.registry.select_probes`) on every layer of ``acts``, as the
    tidy rows of a training run with one member: model ``"activations"``, label rule ``"given"``, degree = the share
    of ``y_train`` that differs from ``y_train_true`` (0 without it).

    Subspace kinds: ``"corrupted"`` (fitted on ``y_train``) and, with ``y_train_true``, ``"true"``. Train
    predictions are scored against ``y_train`` ("corrupted") and the true labels (``y_train_true``, else ``y_train``).
    """
    check_finite(acts, probing.memory_budget)
    true_train = acts.y_train if acts.y_train_true is None else acts.y_train_true
    groupings = {"corrupted": acts.y_train[None],
                 **({} if acts.y_train_true is None else {"true": acts.y_train_true[None]})}
    degree = float(np.mean(acts.y_train != true_train)) if len(true_train) else 0.0
    member = MemberSpec(acts.name, ACTIVATIONS_MODEL, degree, 0, GIVEN_LABELS)
    probed = probe_source(activations_source(acts), groupings, acts.num_classes, _selected(probing),
                          precision=probing.precision, memory_budget=probing.memory_budget, seed=probing.seed)
    rows = []
    for (layer, kind, name), scored in probed.scored.items():
        rows += probe_rows([member], scored.size, layer=layer, epoch=-1, subspace_labels=kind, probe_name=name,
                           train_predictions=scored.train, test_predictions=scored.test,
                           corrupted_labels=acts.y_train[None], true_train_labels=true_train,
                           test_labels=acts.y_test)
    return ProbeRun(rows, [member], probed.streamed, probed.skipped)


def write_probe_run(run: ProbeRun, out_dir: str | Path, probing: ProbeSpec, source: dict) -> Path:
    """Write the run directory ``out_dir`` afresh: ``results.csv``, ``members.csv`` and ``config.json`` (the probe
    spec and ``source``, what was probed). A training run's directory is refused (its results would be lost)."""
    out_dir = Path(out_dir)
    config_path = out_dir / CONFIG_FILE
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; --out names a run directory (results.csv and more inside)")
    if config_path.exists() and json.loads(config_path.read_text()).get("kind") != PROBE_RUN_KIND:
        raise ValueError(f"{out_dir} holds a training run; probe into another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_FILE
    results.unlink(missing_ok=True)
    append_rows(results, run.rows)
    write_member_table(out_dir / MEMBERS_FILE, run.members)
    config = {"kind": PROBE_RUN_KIND, "source": source,
              "probing": {"identity": probing.identity, "requests": [probing.request]}}
    config_path.write_text(json.dumps(config, indent=2))
    return out_dir
