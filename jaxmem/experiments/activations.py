"""Probe activations dumped from any network: an ``.npz`` file or a folder of ``.npy`` files.

Keys (folder: the same names as ``.npy`` files, e.g. ``fc1/train.npy``): ``<layer>/train`` ``[N, ...]`` and
``<layer>/test`` ``[T, ...]`` per layer (flattened per sample), ``y_train`` ``[N]`` (the labels the probes are fitted
on), ``y_test`` ``[T]`` and optionally ``y_train_true`` ``[N]`` (the true training labels: adds true-label subspaces
and scores train predictions against them). Labels are integers in [0, C); C = the largest label + 1.

Every layer gets every chosen probe and MASC variance, with each subspace kind, as rows of the tidy results table
of a training run (one member: model ``"activations"``, label rule ``"given"``, degree = the share of ``y_train``
that differs from ``y_train_true``, 0 without it). A layer whose train and test arrays (as float32) do not fit the
memory budget is streamed in row chunks straight from a memory map (``np.load(mmap_mode="r")``; members of an
``.npz`` written by ``np.savez``, i.e. uncompressed, are mapped in place; compressed members are read whole) into
per-class Gram statistics; MASC and the linear probe run on such layers, the other probes need the activations in
memory and skip them.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem.config import GIVEN_LABELS, MemberSpec
from jaxmem.probes import baselines, linear, masc
from jaxmem.probes.gram import ChunkSchedule, accumulate, chunk_schedule, gram_init
from jaxmem.results import accuracy_row

LABEL_KEYS = ("y_train", "y_test", "y_train_true")
PROBE_NAMES = ("masc", "linear", "ncm", "knn", "lda", "qda", "logreg")
STREAMING_PROBES = ("masc", "linear")
MODEL_NAME = "activations"
_SUB_CHUNK = 256  # rows per class-pure Gram update inside a streamed chunk


class Layer(NamedTuple):
    """One layer's activations; arrays may be memory maps."""

    train: np.ndarray  # [N, ...]
    test: np.ndarray  # [T, ...]

    @property
    def dim(self) -> int:
        return int(np.prod(self.train.shape[1:], dtype=np.int64))


class Activations(NamedTuple):
    """A validated activations file."""

    name: str  # the file or folder name, recorded as the dataset
    layers: dict[str, Layer]
    y_train: np.ndarray  # [N] int labels the probes are fitted on
    y_test: np.ndarray  # [T] int
    y_train_true: np.ndarray | None  # [N] int, or None
    num_classes: int


# -------------------------------------------------------------------------------------------------- loading


def _npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """An ``.npy`` member of an ``.npz``: memory-mapped in place when stored uncompressed, else read whole."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if info.compress_type != zipfile.ZIP_STORED or version not in ((1, 0), (2, 0)):
            member.seek(0)
            return np.lib.format.read_array(member, allow_pickle=False)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(member)
        header_length = member.tell()
    with path.open("rb") as raw:  # the local file header precedes the data: 30 bytes + name + extra field
        raw.seek(info.header_offset + 26)
        name_length, extra_length = struct.unpack("<HH", raw.read(4))
    offset = info.header_offset + 30 + name_length + extra_length + header_length
    if dtype.hasobject:
        raise ValueError(f"{path}: {info.filename} holds Python objects; store numeric arrays")
    return np.memmap(path, dtype, "r", offset, shape, "F" if fortran_order else "C")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"no activations at {path}")
    if path.is_dir():
        return {file.relative_to(path).with_suffix("").as_posix(): np.load(file, mmap_mode="r", allow_pickle=False)
                for file in sorted(path.rglob("*.npy"))}
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected an .npz file or a folder of .npy files")
    with zipfile.ZipFile(path) as archive:
        return {info.filename.removesuffix(".npy"): _npz_member(path, archive, info)
                for info in archive.infolist() if info.filename.endswith(".npy")}


def _labels(arrays: dict, key: str, source: Path) -> np.ndarray | None:
    if key not in arrays:
        return None
    labels = np.asarray(arrays[key])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: {key} must be 1-D integer labels, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{source}: {key} has negative labels (min {labels.min()}); labels must be 0 … C-1")
    return labels.astype(np.int32)


def load_activations(path: str | Path) -> Activations:
    """Read and validate an activations ``.npz`` or folder (see the module docstring); arrays stay memory-mapped."""
    path = Path(path)
    arrays = _read_arrays(path)
    for key in ("y_train", "y_test"):
        if key not in arrays:
            raise ValueError(f"{path}: missing key {key!r} (have {sorted(arrays)})")
    y_train, y_test, y_true = (_labels(arrays, key, path) for key in LABEL_KEYS)
    layer_keys = {}
    for key in arrays:
        if key in LABEL_KEYS:
            continue
        layer, _, split = key.rpartition("/")
        if not layer or split not in ("train", "test"):
            raise ValueError(f"{path}: unexpected key {key!r}; layer arrays are '<layer>/train' and '<layer>/test'")
        layer_keys.setdefault(layer, {})[split] = arrays[key]
    if not layer_keys:
        raise ValueError(f"{path}: no layer arrays; expected keys '<layer>/train' and '<layer>/test'")
    layers = {}
    for name, splits in layer_keys.items():
        missing = [split for split in ("train", "test") if split not in splits]
        if missing:
            raise ValueError(f"{path}: layer {name!r} has no {missing[0]} array (key '{name}/{missing[0]}')")
        layers[name] = Layer(splits["train"], splits["test"])
        _check_layer(path, name, layers[name], len(y_train), len(y_test))
    if y_true is not None and len(y_true) != len(y_train):
        raise ValueError(f"{path}: y_train_true has {len(y_true)} labels but y_train has {len(y_train)}")
    num_classes = 1 + max(int(y.max(initial=0)) for y in (y_train, y_test, y_true) if y is not None)
    return Activations(path.stem if path.is_file() else path.name, layers, y_train, y_test, y_true, num_classes)


def _check_layer(path: Path, name: str, layer: Layer, num_train: int, num_test: int) -> None:
    for split, array, labels in (("train", layer.train, num_train), ("test", layer.test, num_test)):
        if array.ndim < 2:
            raise ValueError(f"{path}: layer {name!r} {split} must be [rows, features...], got shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{path}: layer {name!r} {split} must be numeric, got dtype {array.dtype}")
        if len(array) != labels:
            raise ValueError(f"{path}: layer {name!r} {split} has {len(array)} rows but y_{split} has {labels} labels")
    test_dim = int(np.prod(layer.test.shape[1:], dtype=np.int64))
    if test_dim != layer.dim:
        raise ValueError(f"{path}: layer {name!r} has {layer.dim} features per train sample but {test_dim} per "
                         f"test sample (shapes {layer.train.shape} and {layer.test.shape})")


# ----------------------------------------------------------------------------------------------- row chunks


def rows_per_chunk(dim: int, memory_budget: float) -> int:
    """Rows of a streamed chunk: a few float32 copies of it must fit the budget."""
    return int(max(1, min(8192, memory_budget // (16 * max(dim, 1)))))


def _chunks(array: np.ndarray, rows: int, dtype=np.float32):
    """(start, [B, D] ``dtype``) chunks of a (possibly memory-mapped) array [N, ...]."""
    for start in range(0, len(array), rows):
        yield start, np.asarray(array[start : start + rows], dtype).reshape(-1, int(np.prod(array.shape[1:])))


def _dtype(precision: str):
    return np.float64 if precision == "exact" else np.float32


def check_finite(acts: Activations, memory_budget: float) -> None:
    """A ``ValueError`` naming the first layer and split with NaN or infinite features, and how many rows."""
    for name, layer in acts.layers.items():
        for split, array in (("train", layer.train), ("test", layer.test)):
            bad = sum(int((~np.isfinite(chunk)).any(1).sum()) for _, chunk in _chunks(array, rows_per_chunk(
                layer.dim, memory_budget)))
            if bad:
                raise ValueError(f"layer {name!r} {split}: {bad} of {len(array)} rows contain NaN or infinite values")


# ---------------------------------------------------------------------------------------------------- fitting


def _fit_in_memory(layer: Layer, groupings: dict, num_classes, variants, probes, precision, seed) -> dict:
    """{(kind, probe): (size, train predictions [N], test predictions [T])} with the activations in memory."""
    train = np.asarray(layer.train, _dtype(precision)).reshape(len(layer.train), -1)
    test = np.asarray(layer.test, _dtype(precision)).reshape(len(layer.test), -1)
    out = {}
    for kind, labels in groupings.items():
        for name, variance in variants.items():
            probe = masc.fit(train, labels, num_classes, variance, precision)
            out[kind, name] = (float(masc.mean_components(probe)), masc.predict(probe, train),
                               masc.predict(probe, test))
        for name in probes:
            if name == "masc":
                continue
            if name == "knn":
                predictions = [baselines.knn_predict(train, labels, x, num_classes) for x in (train, test)]
            else:
                state = _FITS[name](train, labels, num_classes, precision, seed)
                predictions = [_PREDICTS[name](state, x) for x in (train, test)]
            out[kind, name] = (np.nan, *predictions)
    return out


_FITS = {
    "linear": lambda x, y, c, precision, seed: linear.fit(x, y, c, precision),
    "ncm": lambda x, y, c, precision, seed: baselines.ncm_fit(x, y, c),
    "lda": lambda x, y, c, precision, seed: baselines.lda_fit(x, y, c),
    "qda": lambda x, y, c, precision, seed: baselines.qda_fit(x, y, c),
    "logreg": lambda x, y, c, precision, seed: baselines.logreg_fit(x, y, c, jax.random.key(seed)),
}
_PREDICTS = {"linear": linear.predict, "ncm": baselines.ncm_predict, "lda": baselines.lda_predict,
             "qda": baselines.qda_predict, "logreg": baselines.logreg_predict}


def stream_gram(array: np.ndarray, labels: np.ndarray, num_classes: int, *, memory_budget: float,
                precision: str = "fast"):
    """Per-class Grams (GramState, gram [C, D, D]) and the mean row [D] of a possibly memory-mapped ``array``
    [N, ...], read ``rows_per_chunk`` rows at a time; each chunk is cut into class-pure pieces for the update."""
    dim = int(np.prod(array.shape[1:]))
    rows = rows_per_chunk(dim, memory_budget)
    sub_chunk = min(_SUB_CHUNK, rows)
    steps = -(-rows // sub_chunk) + num_classes  # enough class-pure pieces for any chunk: static scan length
    with masc.precision_context(precision == "exact"):
        dtype = _dtype(precision)
        update = jax.jit(accumulate)
        state, total = gram_init(num_classes, dim, dtype), np.zeros(dim, np.float64)
        for start, chunk in _chunks(array, rows, dtype):
            schedule = chunk_schedule(labels[start : start + len(chunk)], num_classes, sub_chunk)
            index = np.full((steps, sub_chunk), -1, np.int32)
            chunk_class = np.zeros(steps, np.int32)
            index[: len(schedule.index)], chunk_class[: len(schedule.index)] = schedule.index, schedule.chunk_class
            padded = np.zeros((rows, dim), dtype)
            padded[: len(chunk)] = chunk
            state = update(state, jnp.asarray(padded), ChunkSchedule(index, chunk_class))
            total += chunk.sum(0, dtype=np.float64)
    return state, total / max(len(array), 1)


def _predict_streamed(probe, predict, array: np.ndarray, memory_budget: float, precision: str) -> np.ndarray:
    dim = int(np.prod(array.shape[1:]))
    return np.concatenate([np.asarray(predict(probe, chunk)) for _, chunk in _chunks(
        array, rows_per_chunk(dim, memory_budget), _dtype(precision))])


def _fit_streamed(layer: Layer, groupings: dict, num_classes, variants, probes, precision, memory_budget) -> dict:
    out = {}
    for kind, labels in groupings.items():
        state, mean_row = stream_gram(layer.train, labels, num_classes, memory_budget=memory_budget,
                                      precision=precision)
        fitted = {name: masc.fit_from_gram(state, variance, precision) for name, variance in variants.items()}
        if "linear" in probes:
            fitted["linear"] = linear.fit_from_gram(state, mean_row, precision)
        del state
        for name, probe in fitted.items():
            predict = linear.predict if name == "linear" else masc.predict
            size = np.nan if name == "linear" else float(masc.mean_components(probe))
            out[kind, name] = (size, *(_predict_streamed(probe, predict, array, memory_budget, precision)
                                       for array in (layer.train, layer.test)))
    return out


# ------------------------------------------------------------------------------------------------------- rows


class ProbeRun(NamedTuple):
    """What :func:`probe_activations` did."""

    rows: list[dict]
    member: MemberSpec
    streamed: tuple[str, ...]  # layers fitted from streamed Grams
    skipped: dict[str, tuple[str, ...]]  # streamed layer -> probes that need the activations in memory


def masc_variants(variance: float | int = 0.99, sensitivity: Sequence[float | int] = ()) -> dict:
    """Probe name -> MASC variance: ``"masc"`` at ``variance``, ``"masc(n=…)"`` for each other sensitivity value."""
    variants = {"masc": masc.check_variance(variance)}
    for value in map(masc.check_variance, sensitivity):
        if value != variants["masc"]:
            variants[f"masc(n={value:g})"] = value
    return variants


def check_probe_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` validated against :data:`PROBE_NAMES`, MASC first."""
    unknown = [name for name in names if name not in PROBE_NAMES]
    if unknown:
        raise ValueError(f"unknown probes {unknown}; choose from {list(PROBE_NAMES)}")
    return tuple(dict.fromkeys(["masc", *names]))


def probe_activations(
    acts: Activations,
    *,
    probes: Sequence[str] = ("masc",),
    variance: float | int = 0.99,
    sensitivity: Sequence[float | int] = (),
    precision: str = "fast",
    memory_budget: float = 2**31,
    seed: int = 0,
) -> ProbeRun:
    """Fit every probe on every layer of ``acts`` and return the tidy rows (see the module docstring).

    Subspace kinds: ``"corrupted"`` (fitted on ``y_train``) and, with ``y_train_true``, ``"true"``. Train
    predictions are scored against ``y_train`` ("corrupted") and the true labels (``y_train_true``, else ``y_train``).
    """
    probes = check_probe_names(probes)
    variants = masc_variants(variance, sensitivity)
    check_finite(acts, memory_budget)
    true_train = acts.y_train if acts.y_train_true is None else acts.y_train_true
    groupings = {"corrupted": acts.y_train, **({} if acts.y_train_true is None else {"true": acts.y_train_true})}
    member = MemberSpec(acts.name, MODEL_NAME, float(np.mean(acts.y_train != true_train)) if len(true_train) else 0.0,
                        0, GIVEN_LABELS)
    in_memory, used = set(), 0.0
    for name, layer in sorted(acts.layers.items(), key=lambda item: item[1].dim):
        size = 4.0 * (len(layer.train) + len(layer.test)) * layer.dim
        if used + size <= memory_budget:
            in_memory.add(name)
            used += size
    rows, skipped = [], {}
    for name, layer in acts.layers.items():
        if name in in_memory:
            fitted = _fit_in_memory(layer, groupings, acts.num_classes, variants, probes, precision, seed)
        else:
            fitted = _fit_streamed(layer, groupings, acts.num_classes, variants, probes, precision, memory_budget)
            skipped[name] = tuple(p for p in probes if p not in STREAMING_PROBES)
        for (kind, probe_name), (size, train_pred, test_pred) in fitted.items():
            common = dict(epoch=-1, probe=probe_name, layer=name, subspace_labels=kind, size=size)
            for split, against, predicted, target in (("train", "corrupted", train_pred, acts.y_train),
                                                      ("train", "true", train_pred, true_train),
                                                      ("test", "true", test_pred, acts.y_test)):
                rows.append(accuracy_row(0, member, split=split, scored_against=against,
                                         n_correct=np.sum(np.asarray(predicted) == target), n_seen=len(target),
                                         **common))
    streamed = tuple(name for name in acts.layers if name not in in_memory)
    return ProbeRun(rows, member, streamed, skipped)


def write_probe_run(run: ProbeRun, results: str | Path) -> Path:
    """Write the results table fresh at ``results``, with ``members.csv`` and ``summary.md`` beside it."""
    from jaxmem.report import summary_markdown
    from jaxmem.results import append_rows, read_rows, write_member_table

    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    append_rows(results, run.rows)
    write_member_table(results.parent / "members.csv", [run.member])
    (results.parent / "summary.md").write_text(summary_markdown(read_rows(results)) + "\n")
    return results
