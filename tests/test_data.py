"""Tests for jaxmem.data: loaders on synthetic files, normalisation, both corruption rules, real-MNIST checks."""
import gzip
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from PIL import Image

from jaxmem.config import MemberSpec
from jaxmem.data import (DATASETS, Dataset, corrupt_labels, corrupt_labels_per_member, load_dataset,
                         member_train_labels, normalize, reference_strict, subset)

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def global_rng_restored():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture
def no_tfds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail


# ------------------------------------------------------------------------------------------------ IDX files


def write_idx(path, array, gz):
    payload = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def synthetic_mnist(directory, gz=(True, True, False, False), n_train=5, n_test=3):
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    arrays = (rng.randint(0, 256, (n_train, 28, 28)).astype(np.uint8), rng.randint(0, 10, n_train).astype(np.uint8),
              rng.randint(0, 256, (n_test, 28, 28)).astype(np.uint8), rng.randint(0, 10, n_test).astype(np.uint8))
    for name, array, use_gz in zip(IDX_NAMES, arrays, gz):
        write_idx(directory / name, array, use_gz)
    return arrays


@pytest.mark.parametrize("gz", [(True,) * 4, (False,) * 4, (True, False, False, True)])
def test_idx_round_trip_is_exact(tmp_path, gz):
    x_train, y_train, x_test, y_test = synthetic_mnist(tmp_path, gz)
    ds = load_dataset("mnist", tmp_path, source="files")
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (5, 28, 28, 1)
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train[..., 0], x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.x_test[..., 0], x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)


@pytest.mark.parametrize("name, subfolder", [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist"),
                                             ("fashion_mnist", "fashion-mnist"), ("mnist", "MNIST/raw")])
def test_idx_parent_dir_with_subfolder(tmp_path, name, subfolder):
    x_train, *_ = synthetic_mnist(tmp_path / subfolder)
    ds = load_dataset(name, tmp_path, source="files")
    assert ds.name == name
    np.testing.assert_array_equal(ds.x_train[..., 0], x_train)


def test_data_dir_defaults_to_env(tmp_path, monkeypatch):
    _, y_train, _, _ = synthetic_mnist(tmp_path / "mnist")
    monkeypatch.setenv("JAXMEM_DATA_DIR", str(tmp_path))
    np.testing.assert_array_equal(load_dataset("mnist").y_train, y_train)


def test_idx_truncated_raw_file_names_file_and_sizes(tmp_path):
    synthetic_mnist(tmp_path, gz=(False,) * 4)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*need 3920 payload bytes, found 3910"):
        load_dataset("mnist", tmp_path, source="files")


def test_idx_truncated_gz_names_file(tmp_path):
    synthetic_mnist(tmp_path, gz=(True,) * 4)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", tmp_path, source="files")


def test_idx_bad_magic_names_file_and_magic(tmp_path):
    synthetic_mnist(tmp_path, gz=(False,) * 4)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x0803) + path.read_bytes()[4:])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*0x00000803.*expected 0x00000801"):
        load_dataset("mnist", tmp_path, source="files")


def test_missing_file_names_file_and_every_directory(tmp_path, no_tfds):
    synthetic_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    for source in ("files", "auto"):
        with pytest.raises(FileNotFoundError) as err:
            load_dataset("mnist", tmp_path, source=source)
        message = str(err.value)
        assert "missing t10k-labels-idx1-ubyte[.gz])" in message
        for directory in (tmp_path, tmp_path / "mnist", tmp_path / "MNIST" / "raw"):
            assert f"{directory}  (" in message
        assert "JAXMEM_DATA_DIR" in message and "--data-dir" in message


def test_no_data_dir_and_no_tfds_is_a_clear_error(monkeypatch, no_tfds):
    monkeypatch.delenv("JAXMEM_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"JAXMEM_DATA_DIR is not set.*tensorflow-datasets"):
        load_dataset("cifar10")


def test_bad_names_and_sources():
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match=r"unknown source 'web'"):
        load_dataset("mnist", source="web")
    with pytest.raises(ValueError, match=r"only 'digits' is embedded"):
        load_dataset("mnist", source="embedded")
    with pytest.raises(ValueError, match=r"digits is embedded"):
        load_dataset("digits", source="files")
    with pytest.raises(ValueError, match=r"not in tensorflow-datasets"):
        load_dataset("tiny_imagenet", source="tfds")


# ------------------------------------------------------------------------------------------------ tfds (faked)


@pytest.fixture
def fake_tfds(monkeypatch):
    """A stand-in tensorflow_datasets module that records what was asked for."""
    calls = []
    rng = np.random.RandomState(1)
    arrays = {"train": (rng.randint(0, 256, (4, 32, 32, 3)).astype(np.uint8), np.array([3, 99, 0, 7], np.int64)),
              "test": (rng.randint(0, 256, (2, 32, 32, 3)).astype(np.uint8), np.array([5, 1], np.int64))}

    def load(name, split, batch_size, as_supervised):
        calls.append(name)
        assert batch_size == -1 and as_supervised
        return [arrays[s] for s in split]

    module = types.SimpleNamespace(load=load, as_numpy=lambda tree: tree)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    return calls, arrays


def test_tfds_source_maps_names_and_dtypes(fake_tfds):
    calls, arrays = fake_tfds
    ds = load_dataset("cifar100", source="tfds")
    assert calls == ["cifar100"] and ds.source == "tfds"
    assert ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train, arrays["train"][0])
    np.testing.assert_array_equal(ds.y_test, [5, 1])


def test_auto_falls_back_to_tfds_with_a_warning(fake_tfds, tmp_path, monkeypatch):
    calls, _ = fake_tfds
    monkeypatch.delenv("JAXMEM_DATA_DIR", raising=False)
    assert load_dataset("cifar100").source == "tfds"
    with pytest.warns(UserWarning, match=r"sample order differs"):
        assert load_dataset("cifar100", tmp_path).source == "tfds"
    assert calls == ["cifar100", "cifar100"]


# ------------------------------------------------------------------------------------------------ CIFAR


def write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_pickles_load_as_nhwc_in_order(tmp_path):
    rng = np.random.RandomState(2)
    batches = [(rng.randint(0, 256, (2, 3072)).astype(np.uint8), [int(v) for v in rng.randint(0, 10, 2)])
               for _ in range(6)]
    folder = tmp_path / "cifar-10-batches-py"
    for i, (data, labels) in enumerate(batches[:5], 1):
        write_pickle(folder / f"data_batch_{i}", {b"data": data, b"labels": labels, b"batch_label": b"x"})
    write_pickle(folder / "test_batch", {b"data": batches[5][0], b"labels": batches[5][1]})

    ds = load_dataset("cifar10", tmp_path, source="files")
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, sum((labels for _, labels in batches[:5]), []))
    # Sample 7 is row 1 of batch 4; pixel (h=5, w=17, c=2) sits at c*1024 + h*32 + w in the CHW row.
    assert ds.x_train[7, 5, 17, 2] == batches[3][0][1, 2 * 1024 + 5 * 32 + 17]
    source_chw = np.stack([d for d, _ in batches[:5]]).reshape(10, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train, np.moveaxis(source_chw, 1, -1))


def test_cifar100_uses_fine_labels(tmp_path):
    rng = np.random.RandomState(3)
    train, test = rng.randint(0, 256, (3, 3072)).astype(np.uint8), rng.randint(0, 256, (2, 3072)).astype(np.uint8)
    folder = tmp_path / "cifar100" / "cifar-100-python"
    write_pickle(folder / "train", {b"data": train, b"fine_labels": [99, 0, 42], b"coarse_labels": [19, 0, 3]})
    write_pickle(folder / "test", {b"data": test, b"fine_labels": [5, 77], b"coarse_labels": [1, 2]})
    ds = load_dataset("cifar100", tmp_path, source="files")
    assert ds.num_classes == 100
    np.testing.assert_array_equal(ds.y_train, [99, 0, 42])
    np.testing.assert_array_equal(ds.y_test, [5, 77])
    assert ds.x_test[1, 31, 0, 1] == test[1, 1 * 1024 + 31 * 32 + 0]


def test_corrupt_cifar_pickle_names_file(tmp_path):
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "test", {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0]})
    (folder / "train").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match=r"cifar-100-python/train: cannot unpickle"):
        load_dataset("cifar100", tmp_path, source="files")


# ------------------------------------------------------------------------------------------------ Tiny-ImageNet


def save_png_as_jpeg(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")  # lossless content behind a .JPEG name


def test_tiny_imagenet_folder_loads_in_image_folder_order(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    root.mkdir()
    (root / "wnids.txt").write_text("n03\nn01\nn02\n")  # sorted: n01 -> 0, n02 -> 1, n03 -> 2
    rng = np.random.RandomState(4)
    pixels = {}
    for wnid, names in {"n03": ["n03_1", "n03_0"], "n01": ["n01_0"], "n02": ["n02_10", "n02_2", "n02_1"]}.items():
        for name in names:
            pixels[name] = rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)
            save_png_as_jpeg(root / "train" / wnid / "images" / f"{name}.JPEG", pixels[name])
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("not an image\n")
    gray = rng.randint(0, 256, (64, 64)).astype(np.uint8)
    save_png_as_jpeg(root / "val" / "images" / "val_10.JPEG", gray)
    annotations = [("val_2", "n01"), ("val_10", "n03"), ("val_0", "n02"), ("val_1", "n01")]
    for name in ("val_2", "val_0", "val_1"):
        pixels[name] = rng.randint(0, 256, (64, 64, 3)).astype(np.uint8)
        save_png_as_jpeg(root / "val" / "images" / f"{name}.JPEG", pixels[name])
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}.JPEG\t{wnid}\t0\t0\t63\t63\n" for name, wnid in annotations))

    ds = load_dataset("tiny_imagenet", tmp_path, source="files")
    train_order = ["n01_0", "n02_1", "n02_10", "n02_2", "n03_0", "n03_1"]
    np.testing.assert_array_equal(ds.y_train, [0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.x_train, np.stack([pixels[n] for n in train_order]))
    # val in sorted file-name order: val_0, val_1, val_10, val_2
    np.testing.assert_array_equal(ds.y_test, [1, 0, 2, 0])
    for i, name in ((0, "val_0"), (1, "val_1"), (3, "val_2")):
        np.testing.assert_array_equal(ds.x_test[i], pixels[name])
    np.testing.assert_array_equal(ds.x_test[2], np.repeat(gray[..., None], 3, axis=-1))  # grayscale -> RGB
    assert ds.num_classes == 200 and reference_strict("tiny_imagenet")


# ------------------------------------------------------------------------------------------------ digits


def test_digits_embedded_split_and_scaling():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32 and ds.source == "embedded"
    sk = load_digits()
    np.testing.assert_array_equal(ds.y_train, sk.target[:1437])
    np.testing.assert_array_equal(ds.y_test, sk.target[1437:])
    # 0 -> 0, 1 -> 15.94 -> 16, 8 -> 127.5 -> 128, 16 -> 255, elementwise against sklearn's 0..16 values
    lookup = np.array([0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255], np.uint8)
    np.testing.assert_array_equal(ds.x_test[..., 0], lookup[sk.images[1437:].astype(int)])
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    again = load_dataset("digits", source="embedded")
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)


# ------------------------------------------------------------------------------------------------ normalize


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "digits"])
def test_normalize_centres_to_minus_one_one(name):
    x = np.array([[0, 255], [128, 51]], np.uint8).reshape(1, 2, 2, 1)
    out = normalize(name, x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.ravel(), [-1.0, 1.0, 128 / 255 * 2 - 1, 51 / 255 * 2 - 1], rtol=0, atol=1e-7)


def test_normalize_tiny_imagenet_is_unit_scaling_only():
    x = np.arange(256, dtype=np.uint8).reshape(4, 64)
    out = normalize("tiny_imagenet", x)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, x / 255.0, rtol=1e-7)
    with pytest.raises(ValueError, match="unknown dataset"):
        normalize("imagenet", x)


def test_a_dataset_carries_its_inputs_normalised_once_and_read_only():
    ds = subset(load_dataset("digits"), 50, 20)
    train = ds.inputs("train")
    np.testing.assert_array_equal(train, normalize("digits", ds.x_train))
    np.testing.assert_array_equal(ds.inputs("test"), normalize("digits", ds.x_test))
    assert ds.inputs("train") is train and not train.flags.writeable  # one copy, shared by every stage
    assert subset(ds, 10, 5).inputs("train").shape[0] == 10  # a new dataset normalises its own images
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        ds.inputs("validation")


# ------------------------------------------------------------------------------------------------ reference rule


def literal_reference(labels, p, num_classes, seed, strict):
    """SPEC §1.2 as written: the global numpy RNG."""
    labels = labels.copy()
    np.random.seed(seed)
    draws = np.random.rand(len(labels))
    mask = draws < p if strict else draws <= p
    labels[mask] = np.random.choice(num_classes, mask.sum())
    return labels


@pytest.mark.parametrize("seed", [42, 7])
@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("strict", [False, True])
def test_corrupt_labels_equals_literal_global_rng_procedure(global_rng_restored, seed, p, strict):
    labels = np.random.RandomState(0).randint(0, 13, 2000)
    ours = corrupt_labels(labels, p, 13, seed, strict=strict)
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, literal_reference(labels, p, 13, seed, strict))


def test_strict_differs_only_where_a_draw_equals_p(global_rng_restored):
    labels = np.random.RandomState(1).randint(0, 10, 500)
    draws = np.random.RandomState(42).rand(500)
    p = draws[7]  # by construction, rand == p at position 7 (and nowhere else)
    assert np.sum(draws == p) == 1
    loose, strict = corrupt_labels(labels, p, 10), corrupt_labels(labels, p, 10, strict=True)
    np.testing.assert_array_equal(loose, literal_reference(labels, p, 10, 42, strict=False))
    np.testing.assert_array_equal(strict, literal_reference(labels, p, 10, 42, strict=True))
    assert np.all(strict[draws >= p] == labels[draws >= p])  # position 7 kept by '<'
    assert not np.array_equal(loose, strict)  # one extra draw shifts the replacement stream
    # With no draw equal to p the two rules agree exactly.
    assert not np.any(draws == 0.3)
    np.testing.assert_array_equal(corrupt_labels(labels, 0.3, 10), corrupt_labels(labels, 0.3, 10, strict=True))


def test_fraction_zero_returns_unchanged_copy_without_drawing(monkeypatch):
    labels = np.array([3, 1, 4, 1, 5], np.int64)

    def no_rng(*args, **kwargs):
        raise AssertionError("fraction 0 must not draw")

    monkeypatch.setattr(np.random, "RandomState", no_rng)
    out = corrupt_labels(labels, 0.0, 10)
    assert out.dtype == np.int32 and out is not labels
    np.testing.assert_array_equal(out, labels)


def test_corrupt_labels_leaves_input_and_global_rng_alone(global_rng_restored):
    labels = np.arange(100) % 10
    before, state = labels.copy(), np.random.get_state()
    corrupt_labels(labels, 1.0, 10)
    np.testing.assert_array_equal(labels, before)
    after = np.random.get_state()
    assert after[2] == state[2] and np.array_equal(after[1], state[1])


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan")])
def test_bad_fraction_is_an_error(fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        corrupt_labels(np.zeros(4, int), fraction, 10)
    with pytest.raises(ValueError, match="fraction must be in"):
        corrupt_labels_per_member(np.zeros(4, int), [0.5, fraction], [0, 1], 10)


@pytest.mark.parametrize("labels", [np.array([0, 10]), np.array([-1, 3]), np.zeros((2, 2), int), np.array([0.5])])
def test_bad_labels_are_an_error(labels):
    with pytest.raises(ValueError, match="labels must"):
        corrupt_labels(labels, 0.5, 10)
    with pytest.raises(ValueError, match="labels must"):
        corrupt_labels_per_member(labels, [0.5], [0], 10)


# ------------------------------------------------------------------------------------------------ real MNIST (check)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_dataset("mnist", mnist_dir, source="files")


def test_real_mnist_shapes(mnist):
    assert mnist.x_train.shape == (60000, 28, 28, 1) and mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int32
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    assert set(np.unique(mnist.y_train)) == set(range(10))


@pytest.mark.parametrize("p, still_correct", [(0.2, 49222), (0.4, 38464), (0.6, 27697), (0.8, 16724), (1.0, 6011)])
def test_real_mnist_reference_corruption_counts(mnist, p, still_correct):
    """SPEC §1.2 (check): train labels still equal to the true label after reference corruption."""
    corrupted = corrupt_labels(mnist.y_train, p, 10, strict=reference_strict("mnist"))
    assert int(np.sum(corrupted == mnist.y_train)) == still_correct


# ------------------------------------------------------------------------------------------------ per-member rule


def test_per_member_shapes_zero_and_determinism():
    labels = np.random.RandomState(5).randint(0, 10, 3000)
    out = np.asarray(corrupt_labels_per_member(labels, [0.0, 0.5, 0.5, 0.5], [0, 0, 1, 0], 10))
    assert out.shape == (4, 3000) and out.dtype == np.int32
    np.testing.assert_array_equal(out[0], labels)  # p = 0 changes nothing
    np.testing.assert_array_equal(out[1], out[3])  # same seed and degree -> same noise
    assert np.mean(out[1] != out[2]) > 0.2  # different seeds -> different noise
    np.testing.assert_array_equal(np.asarray(corrupt_labels_per_member(labels, [0.5], [1], 10))[0], out[2])
    assert out.min() >= 0 and out.max() < 10


def test_per_member_rates_match_p():
    k, n = 10, 20000
    labels = np.random.RandomState(6).randint(0, k, n)
    out = np.asarray(corrupt_labels_per_member(labels, [1.0, 0.5, 0.2], [3, 4, 5], k))
    changed = np.mean(out != labels, axis=1)
    # Binomial std is below 0.004 at n = 20000; bounds are several std wide.
    assert abs(np.mean(out[0] == labels) - 1 / k) < 0.015  # p = 1: only chance agreement
    np.testing.assert_allclose(changed, [1.0 * 0.9, 0.5 * 0.9, 0.2 * 0.9], atol=0.02)
    counts = np.bincount(out[0], minlength=k) / n  # new labels uniform over all classes
    np.testing.assert_allclose(counts, 1 / k, atol=0.015)


# ------------------------------------------------------------------------------------------------ member labels


def small_dataset(name="mnist", n=400, k=10):
    rng = np.random.RandomState(8)
    shape = DATASETS[name].image_shape
    x = np.zeros((n, *shape), np.uint8)
    return Dataset(name, x, rng.randint(0, k, n).astype(np.int32), x[:2], np.zeros(2, np.int32), k)


def test_member_train_labels_reference_rule_is_shared_across_seeds():
    ds = small_dataset()
    members = [MemberSpec("mnist", "mlp", p, seed) for p in (0.0, 0.4) for seed in (0, 1, 2)]
    labels = member_train_labels(ds, members)
    assert labels.shape == (6, 400) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels[:3], np.broadcast_to(ds.y_train, (3, 400)))
    expected = corrupt_labels(ds.y_train, 0.4, 10, 42)
    for row in labels[3:]:
        np.testing.assert_array_equal(row, expected)


def test_member_train_labels_per_member_rule_differs_across_seeds():
    ds = small_dataset()
    members = [MemberSpec("mnist", "mlp", 0.6, seed, "per_member") for seed in (0, 1)]
    members.append(MemberSpec("mnist", "mlp", 0.6, 0, "reference"))
    labels = member_train_labels(ds, members)
    assert not np.array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[:2], np.asarray(corrupt_labels_per_member(ds.y_train, [0.6, 0.6], [0, 1], 10)))
    np.testing.assert_array_equal(labels[2], corrupt_labels(ds.y_train, 0.6, 10, 42))


def test_member_train_labels_uses_strict_rule_for_tiny_imagenet():
    p = float(np.random.RandomState(42).rand(400)[11])  # a degree equal to one draw, so '<' and '<=' differ
    for name, strict in (("tiny_imagenet", True), ("cifar10", False)):
        ds = small_dataset(name, k=DATASETS[name].num_classes)
        labels = member_train_labels(ds, [MemberSpec(name, "m", p, 0)])
        np.testing.assert_array_equal(labels[0], corrupt_labels(ds.y_train, p, ds.num_classes, strict=strict))
        assert labels[0, 11] == ds.y_train[11] or not strict
    with pytest.raises(ValueError, match=r"members name dataset\(s\) \['mnist'\]"):
        member_train_labels(ds, [MemberSpec("mnist", "mlp", 0.2, 0)])


def test_subset_keeps_the_first_samples_in_order():
    from jaxmem.data import subset

    digits = load_dataset("digits")
    small = subset(digits, 100, 20)
    np.testing.assert_array_equal(small.x_train, digits.x_train[:100])
    np.testing.assert_array_equal(small.y_test, digits.y_test[:20])
    assert "first 100 train" in small.source
    with pytest.raises(ValueError, match="between 1 and 1437"):
        subset(digits, 5000)
