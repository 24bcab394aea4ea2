"""Read activations dumped from any network: an ``.npz`` file or a folder of ``.npy`` files.

Keys (folder: the same names as ``.npy`` files, e.g. ``fc1/train.npy``): ``<layer>/train`` ``[N, ...]`` and
``<layer>/test`` ``[T, ...]`` per layer (flattened per sample), ``y_train`` ``[N]`` (the labels the probes are fitted
on), ``y_test`` ``[T]`` and optionally ``y_train_true`` ``[N]`` (the true training labels: adds true-label subspaces
and scores train predictions against them). Labels are integers in [0, C); C = the largest label + 1.

Arrays stay memory maps (``np.load(mmap_mode="r")``; members of an ``.npz`` written by ``np.savez``, i.e.
uncompressed, are mapped in place; compressed members are read whole), and :func:`activations_source` hands them to
the probing engine (:mod:`jaxmem.probes.engine`) as a feature source read in row chunks, so a layer larger than the
memory budget streams straight from the file. Probing them is :func:`jaxmem.experiments.probing.probe_activations`.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxmem.probes.engine import SPLITS, FeatureSource, array_source, rows_per_chunk

LABEL_KEYS = ("y_train", "y_test", "y_train_true")


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


# ------------------------------------------------------------------------------------------------- as a source


def activations_source(acts: Activations) -> FeatureSource:
    """The layers of ``acts`` as the probing engine's feature source (read chunk by chunk from the memory maps)."""
    return array_source({name: (layer.train, layer.test) for name, layer in acts.layers.items()})


def check_finite(acts: Activations, memory_budget: float) -> None:
    """A ``ValueError`` naming the first layer and split with NaN or infinite features, and how many rows."""
    source = activations_source(acts)
    for name, layer in acts.layers.items():
        rows = rows_per_chunk(layer.dim, memory_budget)
        for split in SPLITS:
            bad = sum(int((~np.isfinite(chunk[name][0])).any(1).sum())
                      for chunk in source.chunks((name,), split, rows, np.float32))
            if bad:
                total = source.num_rows[split]
                raise ValueError(f"layer {name!r} {split}: {bad} of {total} rows contain NaN or infinite values")
