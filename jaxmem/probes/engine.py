"""The probing engine: any feature source in, per-class statistics once, every probe of the registry out.

A :class:`FeatureSource` is the only thing that differs between probing a trained member (its probe layers
computed in batches, :func:`jaxmem.features.model_source`) and probing a user's activations (arrays or memory maps,
:func:`array_source`): per layer a width, and chunks ``[M', rows, D]`` of train and test features (M' = 1 when all
members share the features, as the input layer and a file do). :func:`probe_source` then

1. plans: the narrowest layers whose train and test features (float32, all M') fit the memory budget are held in
   memory, the rest stream;
2. per (layer, grouping) builds one :class:`Statistics`: in memory, the per-class eigendecompositions (shared by
   MASC at every variance and the linear probe, ``k`` is chosen after eigh) and the class moments (shared by NCM,
   LDA and QDA), each computed on first use; streamed, one pass of class-pure chunks into a
   :class:`~jaxmem.probes.gram.GramState` (counts, sums, Grams) from which every streaming probe fits;
3. fits each probe from the statistics (``Probe.from_stats``; a probe without it fits on the features, e.g.
   logistic regression), runs each label-free neighbour search (kNN) once per layer and split and lets every
   grouping vote on the same neighbours, and predicts train and test (with ``train_scores``, also keeps the
   class scores of the training rows, so a caller needing them does not fit the probe again).

The shared statistics are the same computations as each probe's own ``fit``, so the predictions equal fitting
each probe on its own (tested). Probes that need the activations (kNN, logistic regression) skip streamed layers.
"""
from __future__ import annotations

import functools
import sys
import time
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.probes import masc, over_members
from jaxmem.probes.base import Probe, precision_context
from jaxmem.probes.gram import ChunkSchedule, GramState, accumulate, chunk_schedule, gram_init

FLOAT_BYTES = 4.0
SPLITS = ("train", "test")
_SUB_CHUNK = 256  # rows per class-pure Gram update inside a streamed chunk


class FeatureSource(NamedTuple):
    """Per layer a width and a way to yield feature chunks; see the module docstring."""

    widths: Mapping[str, int]  # layer -> D, in the order of the results
    members: int  # M', the leading axis of every chunk: 1 when all members share the features
    num_rows: Mapping[str, int]  # "train" -> N, "test" -> T
    # (layers, split, rows, dtype) -> iterator of {layer: [M', B, D]} in row order; rows None: the source's own
    # chunking (an array source: the whole split at once); dtype: the floating type wanted (a model computes
    # float32 whatever is asked)
    chunks: Callable[[Sequence[str], str, int | None, type], Iterator[Mapping[str, object]]]


class Scored(NamedTuple):
    """One probe on one layer with one grouping, for every member."""

    size: np.ndarray  # [M] the probe's size (NaN when it has none)
    train: np.ndarray  # [M, N] predictions on the training set
    test: np.ndarray  # [M, T] predictions on the test set
    train_scores: np.ndarray | None = None  # [M, N, C] class scores of the training set, when asked for


class Probed(NamedTuple):
    """What :func:`probe_source` did."""

    scored: dict  # {(layer, kind, probe name): Scored}, layers in source order
    streamed: tuple[str, ...]  # layers fitted from streamed statistics
    skipped: dict  # streamed layer -> probes that need the activations in memory


# ---------------------------------------------------------------------------------------------------- sources


def array_source(layers: Mapping[str, tuple]) -> FeatureSource:
    """A source of arrays or memory maps ``{layer: (train [N, ...], test [T, ...])}`` shared by all members
    (each sample flattened); chunks are read ``rows`` at a time, so a memory map is never read whole."""
    layers = dict(layers)
    widths = {name: int(np.prod(train.shape[1:], dtype=np.int64)) for name, (train, _) in layers.items()}
    first = next(iter(layers.values()))
    num_rows = {"train": len(first[0]), "test": len(first[1])}

    def chunks(names, split, rows, dtype):
        arrays = {name: layers[name][SPLITS.index(split)] for name in names}
        step = max(num_rows[split], 1) if rows is None else rows
        for start in range(0, num_rows[split], step):
            yield {name: np.asarray(array[start : start + step], dtype).reshape(1, -1, widths[name])
                   for name, array in arrays.items()}

    return FeatureSource(widths, 1, num_rows, chunks)


def rows_per_chunk(dim: int, memory_budget: float) -> int:
    """Rows of a streamed chunk: a few float32 copies of it must fit the budget."""
    return int(max(1, min(8192, memory_budget // (16 * max(dim, 1)))))


def plan_memory(source: FeatureSource, memory_budget: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(layers held in memory, layers streamed): the narrowest layers first while their features fit the budget."""
    total_rows = sum(source.num_rows.values())
    held, used = set(), 0.0
    for name in sorted(source.widths, key=source.widths.get):
        size = FLOAT_BYTES * source.members * total_rows * source.widths[name]
        if used + size <= memory_budget:
            held.add(name)
            used += size
    return (tuple(name for name in source.widths if name in held),
            tuple(name for name in source.widths if name not in held))


# ------------------------------------------------------------------------------------------------- statistics


class Statistics:
    """One (layer, grouping)'s statistics for the probes' ``from_stats``, each computed on first use and then
    shared: in memory from the features, streamed from the accumulated ``gram``."""

    def __init__(self, labels, num_classes: int, *, features=None, gram: GramState | None = None):
        self.labels, self.num_classes, self.features, self.gram = labels, num_classes, features, gram
        self._spectra, self._moments = {}, None

    def spectra(self, precision: str) -> masc.Spectra:
        """The per-class eigenproblems (MASC at every variance, the linear probe)."""
        if precision not in self._spectra:
            self._spectra[precision] = (
                masc.gram_spectra(self.gram, precision) if self.gram is not None
                else masc.class_spectra(self.features, self.labels, self.num_classes, precision))
        return self._spectra[precision]

    def moments(self) -> over_members.Training:
        """Counts and class means of the features in memory (NCM, LDA, QDA)."""
        if self._moments is None:
            self._moments = over_members.class_moments(self.features, self.labels, self.num_classes)
        return self._moments


# ---------------------------------------------------------------------------------------------------- engine


def _scores(probe: Probe, state, features, searched) -> jax.Array:
    """Class scores [M, T, C] of ``features``, or for a neighbour probe the vote of its ``searched`` neighbours."""
    return probe.scores(state, features) if probe.vote is None else probe.vote(state, searched)


def _predictions(scores: jax.Array) -> np.ndarray:
    """argmax of the scores as :meth:`Probe.predict` takes it: int32 [M, T]."""
    with precision_context(scores.dtype == np.float64):
        return np.asarray(jnp.argmax(scores, axis=-1).astype(jnp.int32))


def _in_memory(features: dict, groupings, num_classes, probes, seed, train_scores) -> dict:
    """{(kind, probe): Scored} for one layer held in memory, features {split: [M', ·, D]}."""
    split_features = {split: (x[0] if len(x) == 1 else x) for split, x in features.items()}
    x_train = split_features["train"]
    searches, out = {}, {}
    for kind, labels in groupings.items():
        stats = Statistics(labels, num_classes, features=x_train)
        for name, probe in probes.items():
            if probe.from_stats is not None:
                state = probe.from_stats(stats)
            else:
                state = probe.fit(x_train, labels, num_classes, key=jax.random.key(seed))
            scores = {}
            for split in SPLITS:
                searched = None
                if probe.search is not None:
                    if (probe.search, split) not in searches:
                        searches[probe.search, split] = probe.search(x_train, split_features[split])
                    searched = searches[probe.search, split]
                scores[split] = _scores(probe, state, split_features[split], searched)
            out[kind, name] = Scored(probe.member_sizes(state, len(labels)),
                                     *(_predictions(scores[split]) for split in SPLITS),
                                     np.asarray(scores["train"]) if train_scores else None)
    return out


@functools.partial(jax.jit, static_argnames="shared")
def _add_chunk(state: GramState, rows, index, chunk_class, shared: bool) -> GramState:
    """Add one chunk rows [M', B, D] into every member's state [M, ...] along its class-pure schedule [M, S, b]."""
    one = lambda s, x, i, c: accumulate(s, x, ChunkSchedule(i, c))  # noqa: E731
    return jax.vmap(one, in_axes=(0, None if shared else 0, 0, 0))(state, rows[0] if shared else rows, index,
                                                                     chunk_class)


def _chunk_schedule(labels, num_classes: int, rows: int) -> ChunkSchedule:
    """Class-pure pieces of one chunk's labels [M, B], padded to a static count for ``rows``-row chunks."""
    sub_chunk = min(_SUB_CHUNK, rows)
    steps = -(-rows // sub_chunk) + num_classes
    schedule = chunk_schedule(labels, num_classes, sub_chunk)
    index = np.full((len(labels), steps, sub_chunk), -1, np.int32)
    chunk_class = np.zeros((len(labels), steps), np.int32)
    index[:, : schedule.index.shape[1]] = schedule.index
    chunk_class[:, : schedule.index.shape[1]] = schedule.chunk_class
    return ChunkSchedule(index, chunk_class)


def _stream_statistics(source, layers, groupings, num_classes, rows, exact) -> dict:
    """{(layer, kind): GramState [M, ...]}: one pass over the training chunks for every layer and grouping."""
    dtype = jnp.float64 if exact else jnp.float32
    num_members = len(next(iter(groupings.values())))
    init = lambda dim: jax.tree.map(lambda a: jnp.broadcast_to(a, (num_members, *a.shape)),  # noqa: E731
                                    gram_init(num_classes, dim, dtype))
    states = {(name, kind): init(source.widths[name]) for name in layers for kind in groupings}
    start = 0
    for chunk in source.chunks(layers, "train", rows, np.float64 if exact else np.float32):
        size = next(iter(chunk.values())).shape[1]
        schedules = {kind: _chunk_schedule(np.asarray(labels)[:, start : start + size], num_classes, rows)
                     for kind, labels in groupings.items()}
        for name in layers:
            padded = jnp.pad(jnp.asarray(chunk[name], dtype), ((0, 0), (0, rows - size), (0, 0)))
            for kind, schedule in schedules.items():
                states[name, kind] = _add_chunk(states[name, kind], padded, jnp.asarray(schedule.index),
                                                jnp.asarray(schedule.chunk_class), shared=source.members == 1)
        start += size
    return states


def _streamed(source, layers, groupings, num_classes, probes, precision, memory_budget, train_scores) -> dict:
    """{(layer, kind, probe): Scored} for the streamed layers (probes that stream only); the training scores are
    gathered chunk by chunk."""
    exact = precision == "exact"
    streaming = {name: probe for name, probe in probes.items() if probe.streams}
    if not streaming:
        return {}
    rows = rows_per_chunk(source.members * max(source.widths[name] for name in layers), memory_budget)
    with precision_context(exact):
        grams = _stream_statistics(source, layers, groupings, num_classes, rows, exact)
    fitted = {}
    for (name, kind), gram in grams.items():
        stats = Statistics(groupings[kind], num_classes, gram=gram)
        for probe_name, probe in streaming.items():
            state = probe.from_stats(stats) if probe.from_stats is not None else probe.from_gram(gram)
            fitted[name, kind, probe_name] = (probe, state)
    del grams
    predictions = {key: {split: [] for split in SPLITS} for key in fitted}
    kept_scores = {key: [] for key in fitted}
    for split in SPLITS:
        for chunk in source.chunks(layers, split, rows, np.float64 if exact else np.float32):
            features = {name: (x[0] if len(x) == 1 else x) for name, x in chunk.items()}
            for key, (probe, state) in fitted.items():
                scores = probe.scores(state, features[key[0]])
                predictions[key][split].append(_predictions(scores))
                if train_scores and split == "train":
                    kept_scores[key].append(np.asarray(scores))
    num_members = len(next(iter(groupings.values())))
    return {key: Scored(probe.member_sizes(state, num_members),
                        *(np.concatenate(predictions[key][split], axis=-1) for split in SPLITS),
                        np.concatenate(kept_scores[key], axis=-2) if train_scores else None)
            for key, (probe, state) in fitted.items()}


def probe_source(
    source: FeatureSource,
    groupings: Mapping[str, np.ndarray],
    num_classes: int,
    probes: Mapping[str, Probe],
    *,
    precision: str = "fast",
    memory_budget: float = 2**31,
    seed: int = 0,
    train_scores: bool = False,
    progress: bool = False,
) -> Probed:
    """Fit every probe on every layer of ``source`` with each grouping ``{kind: labels [M, N]}``; predict train
    and test.

    Args:
      probes: ``{name: probe}``, e.g. from :func:`jaxmem.probes.registry.select_probes`.
      precision: of the streamed statistics ("exact": float64 Grams, float64 file chunks).
      memory_budget: bytes of features held in memory (see :func:`plan_memory`); the rest stream.
      seed: the random state of probes that take a key (logistic regression).
      train_scores: also keep each probe's class scores of the training rows (``Scored.train_scores``
        [M, N, C], from the same fit as the predictions; streamed layers too): M·N·C numbers per (layer, grouping,
        probe), so off unless asked.
      progress: a line on stderr as each layer (or the streamed layers together) is done, with the time it took.
    """
    groupings = {kind: np.asarray(labels) for kind, labels in groupings.items()}
    in_memory, streamed = plan_memory(source, memory_budget)
    dtype = np.float64 if precision == "exact" else np.float32
    scored = {}
    done = _Done(len(source.widths), f"{len(probes)} probes on {' and '.join(groupings)}-label subspaces", progress)
    if in_memory:
        held = {split: {} for split in SPLITS}
        for split in SPLITS:
            parts = list(source.chunks(in_memory, split, None, dtype))
            for name in in_memory:
                pieces = [part[name] for part in parts]
                held[split][name] = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=1)
            del parts
        for name in in_memory:
            layer = _in_memory({split: held[split].pop(name) for split in SPLITS}, groupings, num_classes,
                               probes, seed, train_scores)
            scored.update({(name, kind, probe): result for (kind, probe), result in layer.items()})
            done([name])
    if streamed:
        scored.update(_streamed(source, streamed, groupings, num_classes, probes, precision, memory_budget,
                                train_scores))
        done(streamed)
    order = {name: i for i, name in enumerate(source.widths)}
    kinds, names = list(groupings), list(probes)
    scored = dict(sorted(scored.items(), key=lambda item: (order[item[0][0]], kinds.index(item[0][1]),
                                                             names.index(item[0][2]))))
    skipped = {name: tuple(p for p, probe in probes.items() if not probe.streams) for name in streamed}
    return Probed(scored, streamed, {name: names for name, names in skipped.items() if names})


class _Done:
    """Progress of :func:`probe_source`: ``done(layers)`` prints how many of the layers are probed, and how long
    the last ones took (nothing when not ``enabled``)."""

    def __init__(self, total: int, what: str, enabled: bool):
        self.total, self.what, self.enabled, self.count, self.since = total, what, enabled, 0, time.monotonic()

    def __call__(self, layers) -> None:
        self.count += len(layers)
        if self.enabled:
            print(f"probed {', '.join(layers)} ({self.count}/{self.total} layers; {self.what}) in "
                  f"{time.monotonic() - self.since:.0f} s", file=sys.stderr, flush=True)
        self.since = time.monotonic()


__all__ = ["FeatureSource", "Probed", "Scored", "Statistics", "array_source", "plan_memory", "probe_source",
           "rows_per_chunk"]
