"""Datasets as host numpy arrays: what each dataset is, and reading it from its original files, tfds or scikit-learn.

* :func:`load_dataset` reads a dataset — images ``uint8 [N, H, W, C]``, labels ``int32 [N]`` — from the original
  files (MNIST/Fashion-MNIST IDX, CIFAR pickles, the Tiny-ImageNet folder; sample order preserved), from
  tensorflow-datasets, or, for ``digits``, from scikit-learn.
* :func:`subset` keeps the first samples; :func:`with_train_labels` gives the members a user's own training labels
  (e.g. human labels) in place of the dataset's, before any rule draws noise; the true labels stay the dataset's.

Label corruption depends on sample order, so reference-exact labels need the original files: tfds stores the
splits in a different order.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

DATA_DIR_ENV = "JAXMEM_DATA_DIR"
SOURCES = ("auto", "files", "tfds", "embedded")


class DatasetInfo(NamedTuple):
    """Static facts about a dataset."""

    num_classes: int
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_train: int
    num_test: int


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(10, (28, 28, 1), 60000, 10000),
    "fashion_mnist": DatasetInfo(10, (28, 28, 1), 60000, 10000),
    "cifar10": DatasetInfo(10, (32, 32, 3), 50000, 10000),
    "cifar100": DatasetInfo(100, (32, 32, 3), 50000, 10000),
    "tiny_imagenet": DatasetInfo(200, (64, 64, 3), 100000, 10000),
    "digits": DatasetInfo(10, (8, 8, 1), 1437, 360),
}

_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}
DIGITS_NUM_TRAIN = 1437


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset in host memory. Images ``uint8 [N, H, W, C]``, labels ``int32 [N]`` in source order."""

    name: str
    x_train: np.ndarray  # [N_train, H, W, C] uint8
    y_train: np.ndarray  # [N_train] int32
    x_test: np.ndarray  # [N_test, H, W, C] uint8
    y_test: np.ndarray  # [N_test] int32
    num_classes: int
    source: str = "arrays"  # where it was read from: "files:<dir>", "tfds", "embedded" or "arrays"
    train_labels: np.ndarray | None = None  # [N_train] int32 labels the members start from; None: y_train

    def inputs(self, split: str) -> np.ndarray:
        """The images of ``split`` (``"train"`` or ``"test"``) as the models see them: float32, normalised as the
        papers do (:func:`jaxmem.data.normalize`); computed once per dataset, read-only, and shared by every stage
        that is handed this dataset."""
        from jaxmem.data.normalization import normalize

        images = {"train": self.x_train, "test": self.x_test}
        if split not in images:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        cache = self.__dict__.setdefault("_inputs", {})  # frozen: the cache bypasses __setattr__
        if split not in cache:
            cache[split] = normalize(self.name, images[split])
            cache[split].flags.writeable = False
        return cache[split]


def dataset_info(name: str) -> DatasetInfo:
    """The :data:`DATASETS` entry for ``name``; a ``ValueError`` listing the known names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, source: str = "auto") -> Dataset:
    """Load a dataset as host numpy arrays.

    Args:
      name: one of :data:`DATASETS` (``mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet, digits``).
      data_dir: directory holding the original files, either directly or in a subfolder named after the
        dataset (``mnist/``; ``fashion_mnist/`` or ``fashion-mnist/``; ``cifar10/``; ...). The archive folders
        ``cifar-10-batches-py/``, ``cifar-100-python/`` and ``tiny-imagenet-200/`` may sit in either place, and
        torchvision's ``MNIST/raw`` / ``FashionMNIST/raw`` are accepted too. ``None`` means env
        ``JAXMEM_DATA_DIR``.
      source: ``"files"`` (original files), ``"tfds"`` (tensorflow-datasets), ``"embedded"`` (``digits``
        only) or ``"auto"``: ``digits`` is embedded; otherwise the original files if the data directory holds
        them, else tfds if ``tensorflow_datasets`` imports, else a ``FileNotFoundError`` saying what is missing.

    Original files keep their sample order: MNIST/Fashion-MNIST IDX files (``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or raw);
    CIFAR python pickles (``data_batch_1..5`` + ``test_batch``; ``train`` + ``test`` with fine labels; they are
    unpickled, so point only at trusted files); the
    Tiny-ImageNet folder in torchvision ``ImageFolder`` order (class = index of the wnid in sorted order, files
    sorted by name; the val split is the test set, labelled from ``val_annotations.txt``).

    tensorflow-datasets stores the splits in a **different order** from the original files, so the reference
    corruption on tfds data does not reproduce the papers' corrupted labels; use the original files
    for reference-exact runs. tfds has no Tiny-ImageNet.

    ``digits`` is scikit-learn's ``load_digits`` (1797 images, 8×8, values 0..16) scaled to ``uint8`` by
    ``round(v * 255 / 16)``; the split is deterministic: the first 1437 samples in sklearn order are the train
    set, the last 360 the test set.

    Returns:
      A :class:`Dataset` with images ``uint8 [N, H, W, C]`` and labels ``int32 [N]``.
    """
    dataset_info(name)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if name == "digits":
        if source not in ("auto", "embedded"):
            raise ValueError(f"digits is embedded (scikit-learn); source must be 'auto' or 'embedded', got {source!r}")
        return _load_digits()
    if source == "embedded":
        raise ValueError(f"only 'digits' is embedded; {name!r} needs source 'files', 'tfds' or 'auto'")
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = os.environ[DATA_DIR_ENV]
    if source == "files":
        return _load_files(name, _find_files_dir(name, data_dir))
    if source == "tfds":
        return _load_tfds(name)
    try:  # auto
        files_dir = _find_files_dir(name, data_dir)
    except FileNotFoundError as missing:
        if name not in _TFDS_NAMES or not _tfds_available():
            hint = "" if name not in _TFDS_NAMES else (" Alternatively install tensorflow-datasets (its sample order "
                                                       "differs from the original files).")
            raise FileNotFoundError(f"{missing}{hint}") from None
        if data_dir is not None:
            warnings.warn(f"{missing}\nFalling back to tensorflow-datasets: its sample order differs from the "
                          f"original files, so reference corruption will not match the papers.", stacklevel=2)
        return _load_tfds(name)
    return _load_files(name, files_dir)


class _Layout(NamedTuple):
    aliases: tuple[str, ...]  # subfolders of data_dir that may hold the dataset
    inner: str | None  # folder name inside the original archive
    required: tuple[str, ...]  # paths relative to the files directory
    gz_ok: bool  # each required file may also be `<name>.gz`
    how_to_get: str


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_CIFAR_URL = "www.cs.toronto.edu/~kriz/cifar.html"
_LAYOUTS = {
    "mnist": _Layout(
        ("mnist", "MNIST/raw"), None, _IDX_FILES, True,
        "the four IDX files of the original MNIST distribution (*-ubyte.gz, e.g. torchvision's MNIST/raw)"),
    "fashion_mnist": _Layout(
        ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"), None, _IDX_FILES, True,
        "the four IDX files of Fashion-MNIST (github.com/zalandoresearch/fashion-mnist, data/fashion)"),
    "cifar10": _Layout(
        ("cifar10", "cifar-10"), "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",), False,
        f"cifar-10-batches-py/ from extracting cifar-10-python.tar.gz ({_CIFAR_URL})"),
    "cifar100": _Layout(
        ("cifar100", "cifar-100"), "cifar-100-python", ("train", "test"), False,
        f"cifar-100-python/ from extracting cifar-100-python.tar.gz ({_CIFAR_URL})"),
    "tiny_imagenet": _Layout(
        ("tiny_imagenet", "tiny-imagenet"), "tiny-imagenet-200",
        ("wnids.txt", "train", "val/val_annotations.txt", "val/images"), False,
        "tiny-imagenet-200/ from unzipping tiny-imagenet-200.zip (cs231n.stanford.edu)"),
}


def _candidate_dirs(name: str, data_dir: Path) -> list[Path]:
    layout = _LAYOUTS[name]
    roots = [data_dir] + [data_dir / alias for alias in layout.aliases]
    dirs = []
    for root in roots:
        for d in ([root / layout.inner] if layout.inner else []) + [root]:
            if d not in dirs:
                dirs.append(d)
    return dirs


def _resolve(directory: Path, relative: str, gz_ok: bool) -> Path | None:
    """``directory/relative`` (or its ``.gz`` twin when allowed) if it exists."""
    names = [relative + ".gz", relative] if gz_ok else [relative]
    return next((directory / n for n in names if (directory / n).exists()), None)


def _find_files_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The first candidate directory that holds every file of ``name``; a ``FileNotFoundError`` otherwise."""
    layout = _LAYOUTS[name]
    wanted = ", ".join(f + "[.gz]" * layout.gz_ok for f in layout.required)
    how = (f"Get {layout.how_to_get} and point --data-dir or {DATA_DIR_ENV} at the folder holding them "
           f"(or at a parent with a '{layout.aliases[0]}/' subfolder).")
    if data_dir is None:
        raise FileNotFoundError(f"{name}: no data directory given and {DATA_DIR_ENV} is not set; "
                                f"the original files are needed ({wanted}). {how}")
    lines = []
    for directory in _candidate_dirs(name, Path(data_dir).expanduser()):
        missing = [f for f in layout.required if _resolve(directory, f, layout.gz_ok) is None]
        if not missing:
            return directory
        if directory.is_dir():
            state = "missing " + ", ".join(f + "[.gz]" * layout.gz_ok for f in missing)
        else:
            state = "no such directory"
        lines.append(f"  {directory}  ({state})")
    raise FileNotFoundError(f"{name}: original files not found. Looked for {wanted} in:\n" + "\n".join(lines)
                            + f"\n{how}")


def _load_files(name: str, directory: Path) -> Dataset:
    loader = {"mnist": _load_idx, "fashion_mnist": _load_idx, "cifar10": _load_cifar10, "cifar100": _load_cifar100,
              "tiny_imagenet": _load_tiny_imagenet}[name]
    x_train, y_train, x_test, y_test = loader(directory)
    return _checked(name, x_train, y_train, x_test, y_test, f"files:{directory}")


def _checked(name, x_train, y_train, x_test, y_test, source: str) -> Dataset:
    """Check shapes, dtypes and label range against :data:`DATASETS`, then build the :class:`Dataset`."""
    info = DATASETS[name]
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.shape[1:] != info.image_shape or x.shape[0] != y.shape[0] or y.ndim != 1:
            h, w, c = info.image_shape
            raise ValueError(f"{name} ({source}) {split} split: expected uint8 images [N, {h}, {w}, {c}] and "
                             f"labels [N], got images {x.dtype} {x.shape} and labels {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= info.num_classes):
            raise ValueError(f"{name} ({source}) {split} split: labels must lie in [0, {info.num_classes}), "
                             f"found range [{y.min()}, {y.max()}]")
    return Dataset(name, np.ascontiguousarray(x_train), y_train.astype(np.int32), np.ascontiguousarray(x_test),
                   y_test.astype(np.int32), info.num_classes, source)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {err}); the file is corrupt or truncated, "
                         f"download it again") from None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read one uint8 IDX file (``.gz`` or raw): magic ``0x0000080{ndim}``, big-endian uint32 dims, payload."""
    path = Path(path)
    raw = _read_bytes(path)
    expected_magic = 0x0800 + ndim
    header_len = 4 + 4 * ndim
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: not a uint8 IDX file with {ndim} dims: magic 0x{magic:08x}, "
                         f"expected 0x{expected_magic:08x}")
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} bytes, expected at least {header_len}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected, found = int(np.prod(dims)), len(raw) - header_len
    if found != expected:
        raise ValueError(f"{path}: truncated or malformed IDX file: header dims {dims} need {expected} payload "
                         f"bytes, found {found}")
    return np.frombuffer(raw, np.uint8, offset=header_len).reshape(dims)


def _load_idx(directory: Path):
    arrays = []
    for split in ("train", "t10k"):
        images_path = _resolve(directory, f"{split}-images-idx3-ubyte", True)
        labels_path = _resolve(directory, f"{split}-labels-idx1-ubyte", True)
        images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
                             f"{labels.shape[0]} labels")
        arrays += [images[..., None], labels]
    return arrays


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise ValueError(f"{path}: cannot unpickle ({type(err).__name__}: {err}); the file is corrupt or "
                         f"truncated, extract the archive again") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    return batch


def _cifar_batch(path: Path, label_key: str):
    """One CIFAR pickle -> (images ``uint8 [N, 32, 32, 3]``, labels ``[N]``). Rows are stored CHW."""
    batch = _unpickle(path)
    get = lambda key: batch.get(key.encode(), batch.get(key))
    data, labels = get("data"), get(label_key)
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys b'data' and b'{label_key}', found {sorted(batch)}")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: expected uint8 data [N, 3072] and labels [N], found data {data.dtype} "
                         f"{data.shape} and labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar10(directory: Path):
    train = [_cifar_batch(directory / f"data_batch_{i}", "labels") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(directory / "test_batch", "labels")
    return (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


def _load_cifar100(directory: Path):
    return (*_cifar_batch(directory / "train", "fine_labels"), *_cifar_batch(directory / "test", "fine_labels"))


def _read_images(paths: Sequence[Path], shape: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(paths), *shape), np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as err:
            raise ValueError(f"{path}: cannot read image ({err})") from None
        if pixels.shape != shape:
            raise ValueError(f"{path}: expected a {shape[1]}×{shape[0]} image, "
                             f"found {pixels.shape[1]}×{pixels.shape[0]}")
        out[i] = pixels
    return out


def _load_tiny_imagenet(directory: Path):
    wnids = sorted({line.strip() for line in (directory / "wnids.txt").read_text().splitlines() if line.strip()})
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:  # torchvision ImageFolder order: classes sorted, files sorted by name
        image_dir = directory / "train" / wnid / "images"
        if not image_dir.is_dir():
            raise FileNotFoundError(f"{image_dir} not found: wnids.txt lists {wnid} but train/ has no images for it")
        files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
        train_paths += files
        train_labels += [class_index[wnid]] * len(files)
    annotations = directory / "val" / "val_annotations.txt"
    val = {}
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in class_index:
            raise ValueError(f"{annotations}, line {line_no}: expected '<file>\\t<wnid from wnids.txt>\\t...', "
                             f"got {line!r}")
        val[fields[0]] = class_index[fields[1]]
    val_names = sorted(val)
    val_paths = [directory / "val" / "images" / name for name in val_names]
    for path in val_paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; it is listed in {annotations}")
    shape = DATASETS["tiny_imagenet"].image_shape
    return (_read_images(train_paths, shape), np.asarray(train_labels, np.int32),
            _read_images(val_paths, shape), np.asarray([val[n] for n in val_names], np.int32))


def _tfds_available() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def _load_tfds(name: str) -> Dataset:
    if name not in _TFDS_NAMES:
        raise ValueError(f"{name!r} is not in tensorflow-datasets; use the original files (source='files')")
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(f"source='tfds' needs tensorflow-datasets (pip install 'jaxmem[tfds]'): {err}") from None
    (x_train, y_train), (x_test, y_test) = tfds.as_numpy(
        tfds.load(_TFDS_NAMES[name], split=["train", "test"], batch_size=-1, as_supervised=True))
    return _checked(name, np.asarray(x_train), np.asarray(y_train), np.asarray(x_test), np.asarray(y_test), "tfds")


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()  # images [1797, 8, 8] float64 with integer values 0..16
    x = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    y = digits.target
    n = DIGITS_NUM_TRAIN
    return _checked("digits", x[:n], y[:n], x[n:], y[n:], "embedded")


def subset(dataset: Dataset, num_train: int | None = None, num_test: int | None = None) -> Dataset:
    """The first ``num_train`` training and ``num_test`` test samples (original order), e.g. for CPU runs.

    Label corruption is then applied to the subset's labels, so the reference counts (which are
    for the full training set) do not apply.
    """
    for split, n, total in (("train", num_train, len(dataset.y_train)), ("test", num_test, len(dataset.y_test))):
        if n is not None and not 1 <= n <= total:
            raise ValueError(f"{split} subset must be between 1 and {total} samples, got {n}")
    source = dataset.source + (f" (first {num_train} train, {num_test} test)" if num_train or num_test else "")
    train_labels = None if dataset.train_labels is None else dataset.train_labels[:num_train]
    return dataclasses.replace(dataset, x_train=dataset.x_train[:num_train], y_train=dataset.y_train[:num_train],
                               x_test=dataset.x_test[:num_test], y_test=dataset.y_test[:num_test], source=source,
                               train_labels=train_labels)


def with_train_labels(dataset: Dataset, path: str | os.PathLike) -> Dataset:
    """``dataset`` whose members start from the labels in the ``.npy`` file ``path`` (``[N_train]`` integers in
    [0, K)) instead of ``y_train``; label rules then add their noise on top (degree 0 keeps them as they are)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no labels file at {path}")
    try:
        labels = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{path} is not a .npy array of labels ({error})") from None
    expected = len(dataset.y_train)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != expected:
        raise ValueError(f"{path} has {len(labels)} labels but {dataset.name} has {expected} training samples")
    if labels.size and (labels.min() < 0 or labels.max() >= dataset.num_classes):
        raise ValueError(f"{path}: labels must lie in [0, {dataset.num_classes}), found range "
                         f"[{labels.min()}, {labels.max()}]")
    return dataclasses.replace(dataset, train_labels=labels.astype(np.int32), source=f"{dataset.source} + {path}")
