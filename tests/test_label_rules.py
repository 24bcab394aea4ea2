"""The pair-flip label rule and a user's own training labels (--labels)."""
import dataclasses

import jax
import numpy as np
import pytest

from jaxmem.cli import main
from jaxmem.config import MemberSpec
from jaxmem.data import LABEL_NOISE_TAG, Dataset, load_dataset, member_train_labels, with_train_labels


def _dataset(num_classes=5, per_class=400):
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    images = np.zeros((len(labels), 2, 2, 1), np.uint8)
    return Dataset("mnist", images, labels, images[:10], labels[:10], num_classes)


def _flip_mask(seed, size, p):
    """The documented draw: uniform(first key of split(fold_in(key(seed), LABEL_NOISE_TAG))) < p."""
    mask_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(seed), LABEL_NOISE_TAG))
    return np.asarray(jax.random.uniform(mask_key, (size,))) < p


@pytest.mark.parametrize("seed, p", [(0, 0.3), (7, 0.6)])
def test_pairflip_confusion_matrix_counts(seed, p):
    data = _dataset()
    k = data.num_classes
    noisy = member_train_labels(data, [MemberSpec("mnist", "mlp", p, seed, "pairflip")])[0]
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (data.y_train, noisy), 1)
    flipped = _flip_mask(seed, len(noisy), p)
    expected = np.zeros((k, k), int)
    for c in range(k):
        in_class = data.y_train == c
        expected[c, c] = np.sum(in_class & ~flipped)
        expected[c, (c + 1) % k] = np.sum(in_class & flipped)
    np.testing.assert_array_equal(confusion, expected)
    assert abs(np.mean(flipped) - p) < 0.05  # the draw is a rate-p Bernoulli, not a fixed pattern


def test_pairflip_is_per_member_and_zero_keeps_labels():
    data = _dataset()
    members = [MemberSpec("mnist", "mlp", p, seed, "pairflip") for p, seed in ((0.5, 0), (0.5, 1), (0.0, 0))]
    labels = member_train_labels(data, members)
    assert np.any(labels[0] != labels[1])
    np.testing.assert_array_equal(labels[2], data.y_train)


def test_given_labels_rule_draws_nothing():
    with pytest.raises(ValueError, match="draws no labels"):
        member_train_labels(_dataset(), [MemberSpec("mnist", "activations", 0.0, 0, "given")])


def test_user_labels_replace_the_members_labels_but_not_the_true_ones(tmp_path):
    data = _dataset()
    own = (data.y_train + 2) % data.num_classes
    np.save(tmp_path / "own.npy", own)
    with_own = with_train_labels(data, tmp_path / "own.npy")
    np.testing.assert_array_equal(with_own.y_train, data.y_train)
    members = [MemberSpec("mnist", "mlp", 0.0, 0), MemberSpec("mnist", "mlp", 0.4, 3, "pairflip")]
    labels = member_train_labels(with_own, members)
    np.testing.assert_array_equal(labels[0], own)
    flipped = _flip_mask(3, len(own), 0.4)
    np.testing.assert_array_equal(labels[1], np.where(flipped, (own + 1) % data.num_classes, own))
    shifted = dataclasses.replace(data, y_train=own)
    np.testing.assert_array_equal(labels, member_train_labels(shifted, members))


@pytest.mark.parametrize("labels, message", [
    (np.zeros(1437 - 1, np.int64), "has 1436 labels but digits has 1437 training samples"),
    (np.zeros(1437, np.float32), "labels must be a 1-D integer array, got float32"),
    (np.full(1437, 10), "labels must lie in [0, 10), found range [10, 10]"),
])
def test_bad_labels_file_is_one_clear_line(tmp_path, capsys, labels, message):
    np.save(tmp_path / "labels.npy", labels)
    assert main(["probe", "--dataset", "digits", "--labels", str(tmp_path / "labels.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_probe_with_labels_scores_train_against_them(tmp_path):
    from jaxmem.data import load_dataset

    digits = load_dataset("digits")
    own = np.where(np.arange(len(digits.y_train)) % 4 == 0, (digits.y_train + 1) % 10, digits.y_train)
    np.save(tmp_path / "own.npy", own)
    out = tmp_path / "run"
    assert main(["probe", "--dataset", "digits", "--labels", str(tmp_path / "own.npy"), "--out", str(out)]) == 0
    from jaxmem.experiments.probing import probe_input_layer
    from jaxmem.results import read_rows

    table = read_rows(out / "results.csv")
    expected = probe_input_layer(with_train_labels(digits, tmp_path / "own.npy"), [MemberSpec("digits", "none", 0.0, 0)])
    assert sorted(table["n_correct"]) == sorted(r["n_correct"] for r in expected)
    train = table[(table["split"] == "train")].set_index("scored_against")["n_correct"]
    assert train["corrupted"] != train["true"]  # fitted on and scored against the file's labels, not the dataset's


def test_the_users_labels_are_part_of_the_saved_configuration(tmp_path, capsys):
    digits = load_dataset("digits")
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, digits.y_train)
    np.save(second, (digits.y_train + 1) % 10)
    argv = ["train", "--degrees", "0", "--max-epochs", "1", "--train-subset", "100", "--test-subset", "50",
            "--out", str(tmp_path / "run"), "--quiet", "--skip-memory-check"]
    assert main(argv + ["--labels", str(first)]) == 0
    capsys.readouterr()
    assert main(argv + ["--labels", str(second)]) == 2
    assert "data.given_labels_sha1" in capsys.readouterr().err
