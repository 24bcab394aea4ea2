"""Probes on the layers of members: the input layer (no model) and every probe layer of trained members.

Rows follow SPEC §4.6: per layer, test accuracy vs true labels and train accuracy vs corrupted and vs true labels,
with the mean number of components as MASC's probe size. For the input layer all members (corruption degrees ×
seeds) share the features and differ only in their grouping labels, so one batched fit serves them all.
Besides MASC, :data:`EXTRA_PROBES` (the paper-2 linear probe and the SPEC §5 baselines) can run on the layers
whose activations are held in memory.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

import jax

from jaxmem import masc
from jaxmem.config import MemberSpec
from jaxmem.data import Dataset, member_train_labels, normalize
from jaxmem.features import collect_activations, layer_widths, stream_grams, stream_predictions
from jaxmem.models import probe_layers
from jaxmem.probes import linear
from jaxmem.probes.baselines import BASELINES
from jaxmem.results import accuracy_row


def _linear_fit_predict(train_features, train_labels, eval_features_list, num_classes, key):
    probe = linear.fit(train_features, train_labels, num_classes)
    return [linear.predict(probe, features) for features in eval_features_list]


# name -> fit_predict(train_features, train_labels, [eval_features, ...], num_classes, key) -> [predictions, ...]
EXTRA_PROBES = {"linear": _linear_fit_predict, **BASELINES}


def check_probes(names: Sequence[str]) -> tuple[str, ...]:
    """The extra probe names, validated (MASC always runs and is not listed)."""
    unknown = [name for name in names if name not in EXTRA_PROBES]
    if unknown:
        raise ValueError(f"unknown probes {unknown}; choose from {sorted(EXTRA_PROBES)} (MASC always runs)")
    return tuple(names)


def subspace_grouping(dataset: Dataset, members: Sequence[MemberSpec], kinds: Sequence[str]) -> dict:
    """Grouping labels ``[M, N]`` per subspace kind (SPEC §4 variants).

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
    probe: masc.MascProbe | None,
    *,
    layer: str,
    epoch: int | Sequence[int],
    subspace_labels: str,
    train_predictions: np.ndarray,
    test_predictions: np.ndarray,
    corrupted_labels: np.ndarray,
    true_train_labels: np.ndarray,
    test_labels: np.ndarray,
    probe_name: str = "masc",
    member_ids: Sequence[int] | None = None,
) -> list[dict]:
    """Rows for one layer: test vs true labels, train vs corrupted and vs true labels, per member.

    Predictions and ``corrupted_labels`` are [M, N]; true labels are shared; ``epoch`` is one or per member.
    ``probe`` is the fitted MASC probe (its mean components become the size), or None for ``probe_name``'s rows.
    ``member_ids`` are the members' indices in the run (default 0..M-1).
    """
    sizes = masc.mean_components(probe) if probe is not None else np.full(len(members), np.nan)
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
    variance: float | int = 0.99,
    precision: str = "fast",
    subspace_labels: str = "corrupted",
) -> list[dict]:
    """Fit MASC on the flattened, normalised inputs with each member's labels and score train and test."""
    if subspace_labels not in ("corrupted", "true"):
        raise ValueError(f"subspace_labels must be 'corrupted' or 'true', got {subspace_labels!r}")
    x_train = normalize(dataset.name, dataset.x_train).reshape(len(dataset.x_train), -1)
    x_test = normalize(dataset.name, dataset.x_test).reshape(len(dataset.x_test), -1)
    corrupted = member_train_labels(dataset, members)
    grouping = corrupted if subspace_labels == "corrupted" else np.broadcast_to(dataset.y_train, corrupted.shape)
    probe = masc.fit(x_train, grouping, dataset.num_classes, variance, precision)
    return probe_rows(
        members, probe, layer="input", epoch=-1, subspace_labels=subspace_labels,
        train_predictions=np.asarray(masc.predict(probe, x_train)),
        test_predictions=np.asarray(masc.predict(probe, x_test)),
        corrupted_labels=corrupted, true_train_labels=dataset.y_train, test_labels=dataset.y_test,
    )


def masc_variants(variance: float | int = 0.99, sensitivity: Sequence[float | int] = ()) -> dict:
    """Probe name -> MASC variance: ``"masc"`` at ``variance``, ``"masc(n=…)"`` for each sensitivity value (§7)."""
    variants = {"masc": masc.check_variance(variance)}
    for value in sensitivity:
        value = masc.check_variance(value)
        if value != variants["masc"]:
            variants[f"masc(n={value:g})"] = value
    return variants


def _fit_and_score_in_memory(model, variables, x_train, x_test, layers, grouping, num_classes, variants,
                             precision, batch_size, extra_probes=(), seed=0):
    train_acts = collect_activations(model, variables, x_train, layers, batch_size=batch_size)
    test_acts = collect_activations(model, variables, x_test, layers, batch_size=batch_size)
    out = {}
    for name in layers:
        for kind, labels in grouping.items():
            for probe_name, variance in variants.items():
                probe = masc.fit(train_acts[name], labels, num_classes, variance, precision)
                out[name, kind, probe_name] = (probe, np.asarray(masc.predict(probe, train_acts[name])),
                                               np.asarray(masc.predict(probe, test_acts[name])))
            for probe_name in extra_probes:
                train_pred, test_pred = EXTRA_PROBES[probe_name](
                    train_acts[name], labels, [train_acts[name], test_acts[name]], num_classes, jax.random.key(seed))
                out[name, kind, probe_name] = (None, np.asarray(train_pred), np.asarray(test_pred))
        del train_acts[name], test_acts[name]
    return out


def _fit_and_score_streaming(model, variables, x_train, x_test, layers, grouping, num_classes, variants,
                             precision, batch_size):
    out = {}
    for kind, labels in grouping.items():
        grams = stream_grams(model, variables, x_train, labels, num_classes, layers, precision=precision)
        probes = {(name, probe_name): masc.fit_from_gram(grams[name], variance, precision)
                  for name in layers for probe_name, variance in variants.items()}
        del grams
        train_pred = stream_predictions(model, variables, x_train, probes, batch_size=batch_size)
        test_pred = stream_predictions(model, variables, x_test, probes, batch_size=batch_size)
        for (name, probe_name), probe in probes.items():
            out[name, kind, probe_name] = (probe, train_pred[name, probe_name], test_pred[name, probe_name])
    return out


def fit_and_score(
    model,
    variables,
    dataset: Dataset,
    grouping: dict,
    layers: Sequence[str],
    *,
    variants: dict | None = None,
    precision: str = "fast",
    memory_budget: float = 2**31,
    batch_size: int = 1024,
    extra_probes: Sequence[str] = (),
    seed: int = 0,
) -> dict:
    """Fit every probe on every layer with each grouping ``{kind: labels [M, N]}`` and predict train and test.

    Returns ``{(layer, kind, probe_name): (masc probe or None, train predictions [M, N], test predictions [M, T])}``.
    Layers whose train and test activations for all members fit ``memory_budget`` bytes are fitted in memory
    (dual problem for small classes); larger layers stream their per-class Grams chunk by chunk. MASC runs in
    every variant of ``variants`` (default :func:`masc_variants`) on every layer; ``extra_probes`` (names from
    :data:`EXTRA_PROBES`, random state from ``seed``) on the in-memory ones.
    """
    variants = variants or masc_variants()
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
        fitted.update(_fit_and_score_in_memory(*common, tuple(in_memory), grouping, dataset.num_classes, variants,
                                               precision, batch_size, check_probes(extra_probes), seed))
    if streamed:
        fitted.update(_fit_and_score_streaming(*common, tuple(streamed), grouping, dataset.num_classes, variants,
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
    subspaces: Sequence[str] = ("corrupted", "true"),
    variance: float | int = 0.99,
    sensitivity: Sequence[float | int] = (),
    precision: str = "fast",
    memory_budget: float = 2**31,
    batch_size: int = 1024,
    layers: Sequence[str] | None = None,
    extra_probes: Sequence[str] = (),
    seed: int = 0,
    member_ids: Sequence[int] | None = None,
) -> list[dict]:
    """Probe rows for every probe layer (or the given ``layers``) of every member (member axis on ``variables``).

    ``subspaces`` are kinds of :func:`subspace_grouping`; MASC runs at ``variance`` and at each ``sensitivity``
    value (probe ``"masc(n=…)"``); see :func:`fit_and_score` for the rest. Train predictions are scored against
    the member's own labels as "corrupted" (for a ``"corrupted@q"`` kind: against those labels) and the true ones.
    """
    extra_probes = check_probes(extra_probes)
    grouping = subspace_grouping(dataset, members, subspaces)
    corrupted = member_train_labels(dataset, members)
    fitted = fit_and_score(model, variables, dataset, grouping, tuple(layers or probe_layers(model_name)),
                           variants=masc_variants(variance, sensitivity), precision=precision,
                           memory_budget=memory_budget, batch_size=batch_size, extra_probes=extra_probes, seed=seed)
    rows = []
    for (name, kind, probe_name), (probe, train_pred, test_pred) in fitted.items():
        rows += probe_rows(members, probe, layer=name, epoch=epoch, subspace_labels=kind, probe_name=probe_name,
                           train_predictions=train_pred, test_predictions=test_pred,
                           corrupted_labels=grouping[kind] if kind.startswith("corrupted@") else corrupted,
                           true_train_labels=dataset.y_train, test_labels=dataset.y_test, member_ids=member_ids)
    return rows
