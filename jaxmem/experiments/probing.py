"""Probes on the layers of members: the input layer (no model) and every probe layer of trained members.

Rows (docs/methods.md): per layer and probe, test accuracy vs true labels and train accuracy vs corrupted and vs
true labels, with the probe's size (MASC: mean components per class). For the input layer all members (corruption
degrees × seeds) share the features and differ only in their grouping labels, so one batched fit serves them all.
Every probe of :mod:`jaxmem.probes.registry` runs the same way: fitted on the activations held in memory, or, for a
layer too large for memory, from its streamed Grams when the probe streams (kNN and logistic regression need the
activations themselves and skip such layers).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from typing import Mapping, NamedTuple

import jax
import numpy as np

from jaxmem.config import MemberSpec
from jaxmem.data import Dataset, member_train_labels, normalize
from jaxmem.features import collect_activations, layer_widths, stream_grams, stream_predictions
from jaxmem.models import probe_layers
from jaxmem.probes.base import Probe
from jaxmem.probes.registry import select_probes
from jaxmem.results import accuracy_row


class Scored(NamedTuple):
    """One probe on one layer with one grouping, for every member."""

    size: np.ndarray  # [M] the probe's size (NaN when it has none)
    train: np.ndarray  # [M, N] predictions on the training set
    test: np.ndarray  # [M, T] predictions on the test set


def subspace_grouping(dataset: Dataset, members: Sequence[MemberSpec], kinds: Sequence[str]) -> dict:
    """Grouping labels ``[M, N]`` per subspace kind (the MASC variants of docs/methods.md).

    ``"corrupted"``: each member's own training labels; ``"true"``: the true labels; ``"corrupted@q"``: the labels
    each member's rule and seed give at degree q (the clean-model variant: a model trained at p = 0 probed with
    subspaces from labels corrupted at q).
    """
    grouping = {}
    for kind in kinds:
        if kind == "corrupted":
            grouping[kind] = member_train_labels(dataset, members)
        elif kind == "true":
            grouping[kind] = np.broadcast_to(dataset.y_train, (len(members), len(dataset.y_train)))
        elif kind.startswith("corrupted@"):
            degree = float(kind.removeprefix("corrupted@"))
            grouping[kind] = member_train_labels(dataset, [dataclasses.replace(m, degree=degree) for m in members])
        else:
            raise ValueError(f"unknown subspace labels {kind!r}: use 'corrupted', 'true' or 'corrupted@<degree>'")
    return grouping


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
    x_train = normalize(dataset.name, dataset.x_train).reshape(len(dataset.x_train), -1)
    x_test = normalize(dataset.name, dataset.x_test).reshape(len(dataset.x_test), -1)
    corrupted = member_train_labels(dataset, members)
    grouping = corrupted if subspace_labels == "corrupted" else np.broadcast_to(dataset.y_train, corrupted.shape)
    rows = []
    for name, probe in select_probes(probes, variance=variance, precision=precision).items():
        scored = _fit_and_score_features(probe, x_train, grouping, x_train, x_test, dataset.num_classes, seed)
        rows += probe_rows(members, scored.size, layer="input", epoch=-1, subspace_labels=subspace_labels,
                           probe_name=name, train_predictions=scored.train, test_predictions=scored.test,
                           corrupted_labels=corrupted, true_train_labels=dataset.y_train, test_labels=dataset.y_test)
    return rows


def _fit_and_score_features(probe: Probe, features, labels, x_train, x_test, num_classes, seed) -> Scored:
    """Fit on features [N, D] or [M, N, D] grouped by labels [M, N]; predict train and test [M, ·]."""
    state = probe.fit(features, labels, num_classes, key=jax.random.key(seed))
    return Scored(probe.member_sizes(state, len(labels)), np.asarray(probe.predict(state, x_train)),
                  np.asarray(probe.predict(state, x_test)))


def _fit_and_score_in_memory(model, variables, x_train, x_test, layers, grouping, num_classes, probes, batch_size,
                             seed):
    train_acts = collect_activations(model, variables, x_train, layers, batch_size=batch_size)
    test_acts = collect_activations(model, variables, x_test, layers, batch_size=batch_size)
    out = {}
    for name in layers:
        for kind, labels in grouping.items():
            for probe_name, probe in probes.items():
                out[name, kind, probe_name] = _fit_and_score_features(
                    probe, train_acts[name], labels, train_acts[name], test_acts[name], num_classes, seed)
        del train_acts[name], test_acts[name]
    return out


def _fit_and_score_streaming(model, variables, x_train, x_test, layers, grouping, num_classes, probes, precision,
                             batch_size):
    out = {}
    streaming = {name: probe for name, probe in probes.items() if probe.streams}
    if not streaming:
        return out
    for kind, labels in grouping.items():
        grams = stream_grams(model, variables, x_train, labels, num_classes, layers, precision=precision)
        fitted = {(name, probe_name): (probe, probe.from_gram(grams[name]))
                  for name in layers for probe_name, probe in streaming.items()}
        del grams
        train_pred = stream_predictions(model, variables, x_train, fitted, batch_size=batch_size)
        test_pred = stream_predictions(model, variables, x_test, fitted, batch_size=batch_size)
        for (name, probe_name), (probe, state) in fitted.items():
            out[name, kind, probe_name] = Scored(probe.member_sizes(state, len(labels)), train_pred[name, probe_name],
                                                 test_pred[name, probe_name])
    return out


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
) -> dict:
    """Fit every probe on every layer with each grouping ``{kind: labels [M, N]}`` and predict train and test.

    Args:
      probes: ``{name: probe}``, e.g. from :func:`jaxmem.probes.registry.select_probes`.
      precision: of the streamed Grams ("exact": float64).
      memory_budget: layers whose train and test activations for all members fit this many bytes are fitted in
        memory; larger layers stream their per-class moments chunk by chunk, and only the probes that stream
        run on them.
      seed: the random state of probes that take a key (logistic regression).

    Returns:
      ``{(layer, kind, probe_name): Scored(size [M], train predictions [M, N], test predictions [M, T])}``.
    """
    num_members = next(iter(grouping.values())).shape[0]
    x_train = normalize(dataset.name, dataset.x_train)
    x_test = normalize(dataset.name, dataset.x_test)
    widths = layer_widths(model, variables, x_train, layers)
    in_memory, streamed, used = [], [], 0.0
    for name in sorted(layers, key=widths.get):
        size = 4.0 * num_members * (len(x_train) + len(x_test)) * widths[name]
        fits = used + size <= memory_budget
        (in_memory if fits else streamed).append(name)
        used += size if fits else 0
    common = (model, variables, x_train, x_test)
    fitted = {}
    if in_memory:
        fitted.update(_fit_and_score_in_memory(*common, tuple(in_memory), grouping, dataset.num_classes, probes,
                                               batch_size, seed))
    if streamed:
        fitted.update(_fit_and_score_streaming(*common, tuple(streamed), grouping, dataset.num_classes, probes,
                                               precision, batch_size))
    order = {name: i for i, name in enumerate(layers)}
    return dict(sorted(fitted.items(), key=lambda item: order[item[0][0]]))


def probe_members(
    model,
    model_name: str,
    variables,
    dataset: Dataset,
    members: Sequence[MemberSpec],
    *,
    epoch: int | Sequence[int],
    probes: Sequence[str] = ("masc",),
    subspaces: Sequence[str] = ("corrupted", "true"),
    variance: float | int = 0.99,
    sensitivity: Sequence[float | int] = (),
    precision: str = "fast",
    memory_budget: float = 2**31,
    batch_size: int = 1024,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    member_ids: Sequence[int] | None = None,
) -> list[dict]:
    """Probe rows for every probe layer (or the given ``layers``) of every member (member axis on ``variables``).

    ``probes``, ``variance``, ``sensitivity`` and ``precision`` choose the probes
    (:func:`jaxmem.probes.registry.select_probes`: e.g. MASC at each ``sensitivity`` value as ``"masc(n=…)"``);
    ``subspaces`` are kinds of :func:`subspace_grouping`; see :func:`fit_and_score` for the rest. Train
    predictions are scored against the member's own labels as "corrupted" (for a ``"corrupted@q"`` kind: against
    those labels) and the true ones.
    """
    selected = select_probes(probes, variance=variance, sensitivity=sensitivity, precision=precision)
    grouping = subspace_grouping(dataset, members, subspaces)
    corrupted = member_train_labels(dataset, members)
    fitted = fit_and_score(model, variables, dataset, grouping, tuple(layers or probe_layers(model_name)),
                           probes=selected, precision=precision, memory_budget=memory_budget, batch_size=batch_size,
                           seed=seed)
    rows = []
    for (name, kind, probe_name), scored in fitted.items():
        rows += probe_rows(members, scored.size, layer=name, epoch=epoch, subspace_labels=kind, probe_name=probe_name,
                           train_predictions=scored.train, test_predictions=scored.test,
                           corrupted_labels=grouping[kind] if kind.startswith("corrupted@") else corrupted,
                           true_train_labels=dataset.y_train, test_labels=dataset.y_test, member_ids=member_ids)
    return rows
