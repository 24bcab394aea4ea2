"""Tests for jaxmem.train and jaxmem.members: the member grid, the pure step, the vmapped epoch, the stop rule,
results rows, Orbax checkpoints and resume. Real digits data (a 300-sample slice) and the real SPEC MLP."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmem import results
from jaxmem.config import MemberSpec, paper_train_spec
from jaxmem.data import load_dataset, member_train_labels, normalize
from jaxmem.members import check_members, member_grid, member_keys
from jaxmem.models import get_model
from jaxmem.train import (Carry, batch_order, cross_entropy, default_member_chunk, device_data, epoch_keys,
                          fit_members, init_member, load_member_params, make_epoch_fn, make_member_epoch,
                          make_optimizer, paper2_epoch_schedule, read_run_config, restore_snapshot, snapshot_run,
                          split_member_keys, steps_per_epoch, train_step)

NUM_TRAIN = 300  # 300 = 4·64 + 44: every epoch ends with a padded, masked batch
EPOCHS = 4
SCHEDULE = (0, 1, 2, 3)
TARGET = 0.2  # the clean member passes it after an epoch or two; the fully shuffled ones do not within EPOCHS
MEMBERS = [MemberSpec("digits", "mlp", 0.0, 0), MemberSpec("digits", "mlp", 1.0, 0),
           MemberSpec("digits", "mlp", 1.0, 1)]


@pytest.fixture(scope="module")
def digits():
    full = load_dataset("digits")
    return dataclasses.replace(full, x_train=full.x_train[:NUM_TRAIN], y_train=full.y_train[:NUM_TRAIN])


@pytest.fixture(scope="module")
def spec():
    # the full pass: on 1437 samples it crosses TARGET an epoch or two before the running count does
    return paper_train_spec("digits", "mlp").replace(batch_size=64, target_train_accuracy=TARGET, stop_on="eval")


@pytest.fixture(scope="module")
def model():
    return get_model("mlp", 10)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, digits, spec):
    """One uninterrupted run; eval batch 128 does not divide 300 or 360, so evaluation padding is exercised."""
    out = tmp_path_factory.mktemp("full")
    return fit_members(digits, MEMBERS, spec, out, max_epochs=EPOCHS, checkpoint_epochs=SCHEDULE,
                       progress=False, eval_batch_size=128)


def _member(tree, m: int):
    return jax.tree.map(lambda leaf: leaf[m], tree)


def _assert_trees(check, a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        check(np.asarray(x), np.asarray(y))


def _trees_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _logits(model, params, x) -> np.ndarray:
    logits, _ = model.apply({"params": params}, jnp.asarray(x))
    return np.asarray(logits, np.float64)


def _numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def _model_rows(out_dir):
    table = results.read_rows(out_dir / "results.csv")
    return table[table.probe == "model"]


# ----------------------------------------------------------------------------------------------------------
# Members and labels
# ----------------------------------------------------------------------------------------------------------


def test_member_grid_is_degree_major_and_validated():
    grid = member_grid("digits", "mlp", [0.0, 0.5], [3, 7], label_rule="per_member")
    assert [(m.degree, m.seed) for m in grid] == [(0.0, 3), (0.0, 7), (0.5, 3), (0.5, 7)]
    assert {m.label_rule for m in grid} == {"per_member"}
    with pytest.raises(ValueError, match="duplicates"):
        member_grid("digits", "mlp", [0.2, 0.2], [0])
    with pytest.raises(ValueError, match="seeds is empty"):
        member_grid("digits", "mlp", [0.2], [])
    with pytest.raises(ValueError, match="one model"):
        check_members([MemberSpec("digits", "mlp", 0.0, 0), MemberSpec("digits", "cnn", 0.0, 0)])
    with pytest.raises(ValueError, match="repeat"):
        check_members([MemberSpec("digits", "mlp", 0.0, 0)] * 2)
    with pytest.raises(ValueError, match="seeds must be integers"):
        check_members([MemberSpec("digits", "mlp", 0.0, -1)])
    keys = member_keys(grid)
    assert np.array_equal(jax.random.key_data(keys[1]), jax.random.key_data(jax.random.key(7)))


def test_member_labels_differ_by_degree_and_agree_across_reference_seeds(digits):
    labels = member_train_labels(digits, member_grid("digits", "mlp", [0.0, 0.6], [0, 1]))
    assert np.array_equal(labels[0], digits.y_train) and np.array_equal(labels[1], digits.y_train)
    assert np.array_equal(labels[2], labels[3])  # reference rule: one corruption per degree
    assert (labels[2] != digits.y_train).mean() > 0.3  # 0.6 · 9/10 expected to change
    per_member = member_train_labels(digits, member_grid("digits", "mlp", [0.6], [0, 1], label_rule="per_member"))
    assert not np.array_equal(per_member[0], per_member[1])


# ----------------------------------------------------------------------------------------------------------
# Batches, loss and one step
# ----------------------------------------------------------------------------------------------------------


def test_fixed_order_is_arange_and_shuffle_differs_per_member_and_epoch(spec):
    num = 150  # 2·64 + 22
    indices, weights = batch_order(spec, jax.random.key(0), num)
    assert indices.shape == weights.shape == (steps_per_epoch(spec, num), 64) == (3, 64)
    assert np.array_equal(np.asarray(indices).ravel()[:num], np.arange(num))
    assert np.asarray(weights).sum() == num and np.all(np.asarray(weights).ravel()[num:] == 0)

    shuffle = spec.replace(order="shuffle")
    _, train_keys = split_member_keys(member_grid("digits", "mlp", [0.0], [0, 1]))
    orders = {}
    for m in range(2):
        for epoch in (1, 2):
            order_key, _ = epoch_keys(train_keys[m], jnp.int32(epoch))
            indices, weights = batch_order(shuffle, order_key, num)
            real = np.asarray(indices).ravel()[np.asarray(weights).ravel() == 1]
            assert np.array_equal(np.sort(real), np.arange(num))  # each sample exactly once
            orders[m, epoch] = real
    for a in orders:
        for b in orders:
            if a != b:
                assert not np.array_equal(orders[a], orders[b]), (a, b)
    again, _ = epoch_keys(train_keys[1], jnp.int32(2))  # the same (member, epoch) repeats its order
    assert np.array_equal(np.asarray(batch_order(shuffle, again, num)[0]).ravel()[:num], orders[1, 2])


def test_padded_batch_loss_and_step_equal_the_real_samples_alone(model, digits, spec):
    x = normalize("digits", digits.x_train[:8])
    y = jnp.asarray(digits.y_train[:8])
    weights = jnp.asarray([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
    tx = make_optimizer(spec)
    state = init_member(model, tx, jax.random.key(0), x[:1])
    logits = model.apply({"params": state.params}, x)[0]
    expected = _numpy_cross_entropy(np.asarray(logits, np.float64), np.asarray(y))[:5].mean()
    np.testing.assert_allclose(cross_entropy(logits, y, weights), expected, rtol=1e-6)

    padded = x.copy()
    padded[5:] = 7.0  # junk in the padding rows must not matter
    step = jax.jit(lambda s, x, y, w: train_step(model, tx, s, x, y, w, jax.random.key(1)))
    new_padded, loss_padded, _ = step(state, padded, y, weights)
    new_real, loss_real, _ = step(state, x[:5], y[:5], jnp.ones(5, jnp.float32))
    np.testing.assert_allclose(loss_padded, loss_real, rtol=1e-6)
    _assert_trees(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new_padded, new_real)
    assert not _trees_equal(new_real.params, state.params)


# ----------------------------------------------------------------------------------------------------------
# The vmapped epoch
# ----------------------------------------------------------------------------------------------------------


def test_member_axis_of_one_equals_the_unbatched_epoch(model, digits, spec):
    small = dataclasses.replace(digits, x_train=digits.x_train[:100], y_train=digits.y_train[:100])
    data = device_data(small)
    tx = make_optimizer(spec)
    labels = jnp.asarray(small.y_train)
    state = init_member(model, tx, jax.random.key(3), data.x_train[:1])
    key = jax.random.key(4)
    single, single_metrics = jax.jit(make_member_epoch(model, tx, spec, 100))(state, labels, key, jnp.int32(1), data)
    stacked = jax.tree.map(lambda leaf: leaf[None], (state, labels, key))
    batched, batched_metrics = make_epoch_fn(model, tx, spec, 100)(*stacked, jnp.int32(1), data)
    _assert_trees(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), _member(batched, 0), single)
    assert not _trees_equal(single.params, state.params)
    np.testing.assert_allclose(batched_metrics.train_loss[0], single_metrics.train_loss, rtol=1e-5)


def test_member_chunks_give_the_full_vmap_result_and_frozen_members_stay_put(model, digits, spec):
    small = dataclasses.replace(digits, x_train=digits.x_train[:96], y_train=digits.y_train[:96])
    data = device_data(small)
    tx = make_optimizer(spec)
    members = member_grid("digits", "mlp", [0.0, 0.5, 1.0], [0])
    init_keys, train_keys = split_member_keys(members)
    state = jax.vmap(lambda k: init_member(model, tx, k, data.x_train[:1]))(init_keys)
    state = state._replace(active=jnp.array([True, False, True]))  # member 1 is frozen
    labels = jnp.asarray(member_train_labels(small, members))
    run = lambda chunk: make_epoch_fn(model, tx, spec, 96, member_chunk=chunk)(
        jax.tree.map(jnp.copy, state), labels, train_keys, jnp.int32(1), data)
    (full, full_metrics), (ones, ones_metrics), (twos, _) = run(3), run(1), run(2)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    _assert_trees(close, ones.params, full.params)
    _assert_trees(close, twos.params, full.params)
    np.testing.assert_array_equal(ones_metrics.train_correct, full_metrics.train_correct)
    _assert_trees(np.testing.assert_array_equal, _member(ones.params, 1), _member(state.params, 1))
    assert not _trees_equal(_member(ones.params, 0), _member(state.params, 0))
    with pytest.raises(ValueError, match="member_chunk"):
        make_epoch_fn(model, tx, spec, 96, member_chunk=0)


def test_default_member_chunk_is_member_major_on_cpu_and_a_full_vmap_elsewhere():
    assert default_member_chunk(8, "cpu") == 1
    assert default_member_chunk(8, "gpu") == 8


class _CountingModel:
    """The real model, counting how often its ``apply`` is traced."""

    def __init__(self, model):
        self.model, self.traces = model, 0

    def init(self, *args, **kwargs):
        return self.model.init(*args, **kwargs)

    def apply(self, *args, **kwargs):
        self.traces += 1
        return self.model.apply(*args, **kwargs)


def test_second_epoch_does_not_recompile_nor_transfer(model, digits, spec):
    small = dataclasses.replace(digits, x_train=digits.x_train[:64], y_train=digits.y_train[:64])
    data = device_data(small)
    counting = _CountingModel(model)
    tx = make_optimizer(spec)
    members = member_grid("digits", "mlp", [0.0], [0, 1])
    init_keys, train_keys = split_member_keys(members)
    state = jax.vmap(lambda k: init_member(model, tx, k, data.x_train[:1]))(init_keys)
    labels = jnp.asarray(member_train_labels(small, members))
    epoch_fn = make_epoch_fn(counting, tx, spec, 64)
    state, _ = epoch_fn(state, labels, train_keys, jnp.int32(1), data)
    traces = counting.traces
    assert traces > 0
    epoch = jax.device_put(jnp.int32(2))
    with jax.transfer_guard("disallow"):
        state, metrics = epoch_fn(state, labels, train_keys, epoch, data)
    assert counting.traces == traces
    assert metrics.train_correct.shape == (2,)


@pytest.mark.slow
def test_vmapped_member_equals_a_single_member_run(full_run, digits, spec, tmp_path):
    single = fit_members(digits, MEMBERS[1:2], spec, tmp_path, max_epochs=3, progress=False)
    params, _ = load_member_params(full_run.out_dir, 3)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    _assert_trees(close, _member(params, 1), _member(single.state.params, 0))
    np.testing.assert_allclose(single.metrics.train_loss[:, 0], full_run.metrics.train_loss[:4, 1], rtol=1e-4)
    assert not _trees_equal(_member(params, 1), _member(params, 2))  # same labels, other seed: another run


# ----------------------------------------------------------------------------------------------------------
# Stop rule, rows, checkpoints, resume
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stop_rule_freezes_a_member_while_others_train(full_run, digits, model):
    stop = int(full_run.stop_epoch[0])
    assert 1 <= stop < EPOCHS - 1, "setup: the clean member should stop early"
    assert list(full_run.stop_epoch[1:]) == [-1, -1]
    assert list(np.asarray(full_run.state.active)) == [False, True, True]

    x = normalize("digits", digits.x_train)
    accuracy = {e: (_logits(model, _member(load_member_params(full_run.out_dir, e)[0], 0), x).argmax(1)
                    == digits.y_train).mean() for e in SCHEDULE}
    assert stop == min(e for e in SCHEDULE if accuracy[e] >= TARGET)  # independent accuracies (degree 0)

    frozen = [_member(load_member_params(full_run.out_dir, e)[0], 0) for e in SCHEDULE if e >= stop]
    frozen.append(_member(full_run.state.params, 0))
    assert all(_trees_equal(frozen[0], p) for p in frozen[1:])
    at_stop, last = (_member(load_member_params(full_run.out_dir, e)[0], 1) for e in (stop, SCHEDULE[-1]))
    assert not _trees_equal(at_stop, last)

    rows = _model_rows(full_run.out_dir)
    assert sorted(set(rows[rows.member == 0].epoch)) == list(range(stop + 1))
    assert sorted(set(rows[rows.member == 2].epoch)) == list(range(EPOCHS + 1))
    running = rows.split == "train_running"
    assert len(rows[~running]) == 3 * (stop + 1 + 2 * (EPOCHS + 1))
    assert len(rows[running]) == 2 * (stop + 2 * EPOCHS)  # no running counts at the initialisation


def test_running_accuracy_counts_the_outputs_each_step_saw(model, digits, spec):
    """The epoch's running counts equal a plain loop of train steps that counts each batch's logits."""
    small = dataclasses.replace(digits, x_train=digits.x_train[:100], y_train=digits.y_train[:100])
    data = device_data(small)
    tx = make_optimizer(spec)
    member = MemberSpec("digits", "mlp", 0.6, 0)
    labels = jnp.asarray(member_train_labels(small, [member])[0])
    state = init_member(model, tx, jax.random.key(3), data.x_train[:1])
    key = jax.random.key(4)
    _, metrics = jax.jit(make_member_epoch(model, tx, spec, 100))(state, labels, key, jnp.int32(1), data)

    indices, weights = batch_order(spec, epoch_keys(key, jnp.int32(1))[0], 100)
    step = jax.jit(lambda s, x, y, w: train_step(model, tx, s, x, y, w, jax.random.key(0)))
    own = true = 0
    for batch, mask in zip(np.asarray(indices), np.asarray(weights) > 0):
        state, _, logits = step(state, data.x_train[batch], labels[batch], jnp.asarray(mask, jnp.float32))
        predicted = np.asarray(logits).argmax(1)
        own += int(np.sum(mask & (predicted == np.asarray(labels)[batch])))
        true += int(np.sum(mask & (predicted == small.y_train[batch])))
    assert (int(metrics.running_correct), int(metrics.running_correct_true)) == (own, true)
    assert own != int(metrics.train_correct)  # the running count is not the post-epoch pass


@pytest.mark.parametrize("stop_on", ["running", "eval"])
def test_stop_rule_reads_the_chosen_accuracy(digits, spec, tmp_path, stop_on):
    run = fit_members(digits, MEMBERS[:1], spec.replace(stop_on=stop_on), tmp_path, max_epochs=EPOCHS,
                      progress=False)
    counts = run.metrics.running_correct if stop_on == "running" else run.metrics.train_correct
    reached = np.flatnonzero(counts[1:, 0] >= math.ceil(TARGET * NUM_TRAIN)) + 1
    assert int(run.stop_epoch[0]) == int(reached[0])
    assert json.loads((tmp_path / "config.json").read_text())["train"]["stop_on"] == stop_on


@pytest.mark.slow
def test_rows_and_metrics_match_a_direct_evaluation(full_run, digits, model):
    labels = member_train_labels(digits, MEMBERS)
    x_train, x_test = normalize("digits", digits.x_train), normalize("digits", digits.x_test)
    rows = _model_rows(full_run.out_dir)
    for m in range(len(MEMBERS)):
        params = _member(full_run.state.params, m)
        train_logits, test_logits = _logits(model, params, x_train), _logits(model, params, x_test)
        last = rows[rows.member == m]
        last = last[last.epoch == last.epoch.max()].set_index(["split", "scored_against"])
        assert last.loc[("train", "corrupted"), "n_correct"] == (train_logits.argmax(1) == labels[m]).sum()
        assert last.loc[("train", "true"), "n_correct"] == (train_logits.argmax(1) == digits.y_train).sum()
        assert last.loc[("test", "true"), "n_correct"] == (test_logits.argmax(1) == digits.y_test).sum()
        assert last.loc[("test", "true"), "n_seen"] == len(digits.y_test)
        np.testing.assert_allclose(last.loc[("train", "corrupted"), "loss"],
                                   _numpy_cross_entropy(train_logits, labels[m]).mean(), rtol=1e-5)
        assert last.loc[("train", "corrupted"), "n_correct"] == full_run.metrics.train_correct[-1, m]
    assert full_run.metrics.train_correct.shape == (EPOCHS + 1, len(MEMBERS))
    assert (rows.accuracy == rows.n_correct / rows.n_seen).all()


@pytest.mark.slow
def test_checkpoints_restore_final_and_scheduled_parameters(full_run, digits, model, spec):
    params, batch_stats = load_member_params(full_run.out_dir)
    assert batch_stats == {}
    _assert_trees(np.testing.assert_array_equal, params, full_run.state.params)
    saved = sorted(int(p.name) for p in (full_run.out_dir / "epochs").iterdir())
    assert saved == list(SCHEDULE)
    initial, _ = load_member_params(full_run.out_dir, 0)
    x = normalize("digits", digits.x_train[:1])
    for m, member in enumerate(MEMBERS):
        init_key = jax.random.split(jax.random.key(member.seed))[0]
        _assert_trees(np.testing.assert_array_equal, _member(initial, m), model.init({"params": init_key}, x)["params"])
    with pytest.raises(FileNotFoundError, match="saved epochs"):
        load_member_params(full_run.out_dir, 7)
    assert read_run_config(full_run.out_dir) == (spec, MEMBERS)
    assert json.loads((full_run.out_dir / "config.json").read_text())["data"]["num_train"] == NUM_TRAIN


@pytest.mark.slow
def test_resume_equals_uninterrupted(full_run, digits, spec, tmp_path):
    first = fit_members(digits, MEMBERS, spec, tmp_path, max_epochs=2, checkpoint_epochs=SCHEDULE, progress=False,
                        eval_batch_size=128)
    assert first.metrics.train_correct.shape[0] == 3
    stale = results.read_rows(tmp_path / "results.csv").iloc[:2].to_dict("records")
    results.append_rows(tmp_path / "results.csv", stale)  # rows of an epoch killed before its checkpoint
    resumed = fit_members(digits, MEMBERS, spec, tmp_path, max_epochs=EPOCHS, checkpoint_epochs=SCHEDULE,
                          progress=False, eval_batch_size=128)
    _assert_trees(np.testing.assert_array_equal, resumed.state, full_run.state)
    assert (tmp_path / "results.csv").read_text() == (full_run.out_dir / "results.csv").read_text()
    _assert_trees(np.testing.assert_array_equal, resumed.metrics, full_run.metrics)
    assert np.array_equal(resumed.stop_epoch, full_run.stop_epoch)


@pytest.mark.slow
def test_resume_with_another_config_is_an_error(full_run, digits, spec):
    before = (full_run.out_dir / "results.csv").read_text()
    with pytest.raises(ValueError, match="different run"):
        fit_members(digits, MEMBERS, spec.replace(learning_rate=0.5), full_run.out_dir, progress=False)
    with pytest.raises(ValueError, match="different run") as fewer:
        fit_members(digits, MEMBERS[:2], spec, full_run.out_dir, progress=False)
    assert f"members: {len(MEMBERS)} in the run, 2 now" in str(fewer.value) and "layout" not in str(fewer.value)
    with pytest.raises(ValueError, match="added as runs of their own: jaxmem sweep --layout member"):
        fit_members(digits, [*MEMBERS, MemberSpec("digits", "mlp", 0.5, 7)], spec, full_run.out_dir, progress=False)
    assert (full_run.out_dir / "results.csv").read_text() == before


def test_every_preset_stops_on_the_running_accuracy():
    """The authors' trainers, their public MLP trainer (mlp_mnist.py) included, stop on the running accuracy."""
    from jaxmem.config import PRESETS
    assert {pair: preset().stop_on for pair, preset in PRESETS.items()} == {pair: "running" for pair in PRESETS}


@pytest.mark.slow
def test_a_run_resumes_under_another_stop_rule(digits, spec, tmp_path):
    """The stop rule and the cap only decide where a trajectory ends: a run started under one continues under the
    other, epoch for epoch as a run made under the new rule throughout, and config.json keeps both."""
    eval_spec = spec.replace(stop_on="eval", target_train_accuracy=1.0)
    fit_members(digits, MEMBERS, eval_spec, tmp_path / "switched", max_epochs=2, progress=False)
    switched = fit_members(digits, MEMBERS, eval_spec.replace(stop_on="running"), tmp_path / "switched",
                           max_epochs=EPOCHS, progress=False)
    straight = fit_members(digits, MEMBERS, eval_spec.replace(stop_on="running"), tmp_path / "straight",
                           max_epochs=EPOCHS, progress=False)
    _assert_trees(np.testing.assert_array_equal, switched.state.params, straight.state.params)
    config = json.loads((tmp_path / "switched" / "config.json").read_text())
    assert config["train"]["stop_on"] == "running" and config["train"]["max_epochs"] == spec.max_epochs
    assert config["resumed_with"] == [{"until_epoch": 2, "stop_on": "eval"}]
    assert (tmp_path / "switched" / "results.csv").read_text() == (tmp_path / "straight" / "results.csv").read_text()


def test_paper2_epoch_schedule():
    schedule = paper2_epoch_schedule()
    assert schedule[:14] == (0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30) and schedule[-1] == 500
    assert paper2_epoch_schedule(60, sparse_step=10) == (0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 30, 40, 50, 60)
    assert len(schedule) == 12 + 96
    assert paper2_epoch_schedule(12, dense_until=4, sparse_step=4) == (0, 1, 2, 4, 8, 12)
    with pytest.raises(ValueError, match="sparse_step"):
        paper2_epoch_schedule(sparse_step=0)


def test_a_relative_run_directory_checkpoints_and_resumes(digits, spec, tmp_path, monkeypatch):
    """Orbax only takes absolute paths; ``--out runs/x`` must work (it once failed at the first save)."""
    monkeypatch.chdir(tmp_path)
    first = fit_members(digits, MEMBERS, spec, "relative", max_epochs=1, progress=False, checkpoint_every=1)
    assert (tmp_path / "relative" / "checkpoints").is_dir()
    resumed = fit_members(digits, MEMBERS, spec, "relative", max_epochs=2, progress=False, checkpoint_every=1)
    assert resumed.metrics.train_correct.shape[0] == 3 and first.metrics.train_correct.shape[0] == 2


def test_progress_shows_the_accuracy_the_stop_rule_watches_and_the_other_one():
    """With a fixed order the running and full-pass accuracies differ by tens of points: the progress line must
    say which one the stop rule watches (running 90 / 70 % here, full pass 40 / 20 %)."""
    from types import SimpleNamespace

    from jaxmem.train.loop import progress_postfix

    metrics = SimpleNamespace(running_correct=np.array([90, 70, 0]), train_correct=np.array([40, 20, 100]),
                              test_correct=np.array([30, 10, 50]))
    trained, active = np.array([True, True, False]), np.array([True, False, False])
    running = progress_postfix(metrics, trained, active, 100, 50, "running")
    assert running == {"running min": "0.7000", "running mean": "0.8000", "full pass mean": "0.3000",
                       "test": "0.4000", "active": 1}
    full = progress_postfix(metrics, trained, active, 100, 50, "eval")
    assert (full["full pass min"], full["full pass mean"], full["running mean"]) == ("0.2000", "0.3000", "0.8000")


# ----------------------------------------------------------------------------------------------------------
# Long runs: a call at each kept epoch, snapshots that carry a run to another machine
# ----------------------------------------------------------------------------------------------------------

LONG_MEMBERS = MEMBERS[:2]
LONG_RUN = dict(max_epochs=3, checkpoint_epochs=(0, 1, 2, 9), checkpoint_every=1, progress=False)


class Interrupted(Exception):
    """Stands for the process being stopped."""


def _record_kept_epochs(out_dir, calls: list, stop_at: int | None = None):
    """An ``on_kept_epoch`` noting each call and whether ``epochs/<e>`` existed then; raises at ``stop_at``."""
    def on_kept_epoch(epoch: int) -> None:
        calls.append((epoch, (out_dir / "epochs" / str(epoch)).is_dir()))
        if epoch == stop_at:
            raise Interrupted
    return on_kept_epoch


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, digits, spec):
    """An uninterrupted run with kept epochs, and the kept epochs its ``on_kept_epoch`` saw."""
    out, calls = tmp_path_factory.mktemp("long"), []
    fit_members(digits, LONG_MEMBERS, spec, out, on_kept_epoch=_record_kept_epochs(out, calls), **LONG_RUN)
    return out, calls


def test_on_kept_epoch_sees_each_kept_epoch_once_saved_and_a_resume_only_those_after_its_checkpoint(
        long_run, digits, spec, tmp_path):
    straight, straight_calls = long_run
    assert straight_calls == [(0, True), (1, True), (2, True)]  # epoch 9 is never reached
    run, calls = tmp_path / "run", []
    with pytest.raises(Interrupted):  # stopped inside the call at epoch 2, before epoch 2's checkpoint
        fit_members(digits, LONG_MEMBERS, spec, run, on_kept_epoch=_record_kept_epochs(run, calls, stop_at=2),
                    **LONG_RUN)
    assert calls == [(0, True), (1, True), (2, True)]
    calls.clear()
    fit_members(digits, LONG_MEMBERS, spec, run, on_kept_epoch=_record_kept_epochs(run, calls), **LONG_RUN)
    assert calls == [(2, True)]  # resumed from epoch 1: the cut call again, none before the checkpoint
    assert (run / "results.csv").read_text() == (straight / "results.csv").read_text()


@pytest.mark.slow
def test_a_carried_snapshot_resumes_elsewhere_to_the_uninterrupted_table(long_run, digits, spec, tmp_path):
    straight, _ = long_run
    run, carried, elsewhere = tmp_path / "run", tmp_path / "carried", tmp_path / "elsewhere"
    with pytest.raises(Interrupted):  # a snapshot after every checkpoint, the last at epoch 1
        fit_members(digits, LONG_MEMBERS, spec, run, on_kept_epoch=_record_kept_epochs(run, [], stop_at=2),
                    carry=Carry(carried, seconds=0, epochs=(0, 2)), **LONG_RUN)
    assert sorted(p.name for p in carried.iterdir()) == ["checkpoints", "config.json", "epochs", "members.csv",
                                                         "results.csv"]
    assert [p.name for p in (carried / "checkpoints").iterdir()] == ["1"]
    assert [p.name for p in (carried / "epochs").iterdir()] == ["0"]  # 2 was not kept by then
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carried", "run"]  # no temporary folder left
    shutil.rmtree(run)  # the machine is gone
    assert restore_snapshot(carried, elsewhere) and not restore_snapshot(carried, elsewhere)
    fit_members(digits, LONG_MEMBERS, spec, elsewhere, carry=Carry(carried, epochs=(0, 2)), **LONG_RUN)
    assert (elsewhere / "results.csv").read_text() == (straight / "results.csv").read_text()
    assert [p.name for p in (carried / "checkpoints").iterdir()] == ["3"]  # the snapshot at the end
    assert sorted(p.name for p in (carried / "epochs").iterdir()) == ["0", "2"]
    assert (carried / "results.csv").read_text() == (straight / "results.csv").read_text()
    with pytest.raises(ValueError, match=r"carry.epochs \[1\] are not in checkpoint_epochs"):
        fit_members(digits, LONG_MEMBERS, spec, elsewhere, carry=Carry(carried, epochs=(1,)),
                    **{**LONG_RUN, "checkpoint_epochs": (0, 2)})


def test_a_snapshot_holds_the_committed_table_only_and_refuses_what_cannot_resume(tmp_path):
    run, dest = tmp_path / "run", tmp_path / "snapshot"
    row = results.accuracy_row(0, MEMBERS[0], epoch=0, probe="model", layer="output", subspace_labels="none",
                               split="train", scored_against="true", n_correct=3, n_seen=4)
    results.append_rows(run / "results.csv", [row])
    committed = (run / "results.csv").read_bytes()
    with (run / "results.csv").open("a") as f:  # what a writer killed mid-append leaves
        f.write("0,digits,mlp,0.0,0,reference,1,model,output,none,tr")
    errors = []

    def refused(match: str) -> None:
        with pytest.raises(ValueError, match=match) as error:
            snapshot_run(run, dest, epochs=(1, 7))
        errors.append(str(error.value))

    refused("no config.json")
    (run / "config.json").write_text("{}")
    (run / "members.csv").write_text("member\n")
    refused("no checkpoint yet")
    for checkpoint in ("2", "3", "4.orbax-checkpoint-tmp-1"):  # the last one is still being written
        (run / "checkpoints" / checkpoint).mkdir(parents=True)
        (run / "checkpoints" / checkpoint / "state").write_text(checkpoint)
    (run / "epochs" / "1").mkdir(parents=True)
    refused("no kept epoch 7")
    assert all(len(message.splitlines()) == 1 for message in errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    results.append_rows(run / "dynamics.csv", [row])
    assert snapshot_run(run, dest, epochs=(1,)) == dest
    assert (dest / "results.csv").read_bytes() == committed
    assert (dest / "dynamics.csv").read_bytes() == (run / "dynamics.csv").read_bytes()
    assert [p.name for p in (dest / "checkpoints").iterdir()] == ["3"]
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoints", "config.json", "dynamics.csv", "epochs",
                                                      "members.csv", "results.csv"]
    snapshot_run(run, dest)  # replaces the previous snapshot whole
    assert sorted(p.name for p in dest.iterdir()) == ["checkpoints", "config.json", "dynamics.csv", "members.csv",
                                                      "results.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "snapshot"]
    assert not restore_snapshot(tmp_path / "nothing", tmp_path / "fresh") and not (tmp_path / "fresh").exists()
    assert not restore_snapshot(dest, run)  # run already holds a run

    # killed between the renames: the previous snapshot aside, the new copy (perhaps incomplete) in a temporary one
    (tmp_path / "snapshot.old.x").mkdir()
    os.replace(dest, tmp_path / "snapshot.old.x" / "snapshot")
    (tmp_path / "snapshot.tmp.y" / "checkpoints").mkdir(parents=True)
    assert restore_snapshot(dest, tmp_path / "moved")  # the previous snapshot is put back and restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved", "run", "snapshot"]
    assert (tmp_path / "moved" / "results.csv").read_bytes() == committed
    (tmp_path / "snapshot.tmp.z").mkdir()  # killed while copying: the next snapshot clears it
    snapshot_run(run, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved", "run", "snapshot"]
