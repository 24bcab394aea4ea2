"""The member axis sharded over 1, 2 and 4 devices gives the unsharded results (jaxmem.sharding).

Virtual CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before JAX starts, so the
multi-device runs happen in one subprocess (this file run as a script, :func:`_worker`) that saves its arrays;
the tests compare them here. The oracle is the unsharded code: ``make_epoch_fn`` with a full vmap
(``member_chunk=M``) on one device, ``init_members``, and ``masc.fit`` on all members at once beside the per-device
probing of :func:`jaxmem.experiments.distributed.probe_on_mesh`.
"""
from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DEVICE_COUNTS = (1, 2, 4)
NUM_MEMBERS = 4
EPOCHS = 2
NUM_TRAIN = 128
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")


def _worker(out_path: str) -> None:
    """Run everything on 4 virtual CPU devices and save the results to ``out_path`` (.npz)."""
    import jax
    import jax.numpy as jnp

    from jaxmem import sharding
    from jaxmem.config import MemberSpec, TrainSpec
    from jaxmem.data import load_dataset, member_train_labels, subset
    from jaxmem.experiments.distributed import probe_on_mesh
    from jaxmem.models import get_model
    from jaxmem.probes import masc
    from jaxmem.train.epoch import device_data, init_members, make_epoch_fn, split_member_keys
    from jaxmem.train.fit import fit_members
    from jaxmem.train.step import make_optimizer

    assert len(jax.devices()) == 4, jax.devices()
    saved = {}

    def save_tree(prefix, tree):
        for index, leaf in enumerate(jax.tree.leaves(tree)):
            saved[f"{prefix}/{index}"] = np.asarray(leaf)

    # Training: 4 members (2 corruption degrees × 2 seeds), MLP on a 128-sample slice of digits.
    dataset = subset(load_dataset("digits"), NUM_TRAIN, 64)
    members = [MemberSpec("digits", "mlp", degree, seed) for degree in (0.0, 0.5) for seed in (0, 1)]
    spec = TrainSpec("sgd", 1e-2, 32, 1.0)
    model, tx = get_model("mlp", dataset.num_classes), make_optimizer(spec)
    data = device_data(dataset)
    labels = member_train_labels(dataset, members)
    init_keys, train_keys = split_member_keys(members)
    initial = jax.device_get(init_members(model, tx, init_keys, data.x_train[:1]))
    save_tree("initial", initial.params)

    unsharded = make_epoch_fn(model, tx, spec, NUM_TRAIN, eval_batch_size=50, member_chunk=NUM_MEMBERS)
    state = jax.device_put(initial)
    for epoch in range(1, EPOCHS + 1):
        state, metrics = unsharded(state, jnp.asarray(labels), train_keys, jnp.asarray(epoch, jnp.int32), data)
        save_tree(f"reference_metrics/{epoch}", jax.device_get(metrics))
    save_tree("reference_params", jax.device_get(state.params))

    for count in DEVICE_COUNTS:
        mesh = sharding.member_mesh(jax.devices()[:count])
        epoch_fn = make_epoch_fn(model, tx, spec, NUM_TRAIN, eval_batch_size=50, mesh=mesh)
        if count == 4:  # fresh states made on their devices
            state, member_labels, keys, shared = sharding.place_run(model, tx, mesh, labels, init_keys, train_keys,
                                                                    data)
            save_tree("sharded_initial", sharding.gather_members(state.params))
        else:
            state = sharding.shard_members(initial, mesh)
            member_labels, keys = sharding.shard_members(labels, mesh), sharding.shard_members(train_keys, mesh)
            shared = sharding.replicate(data, mesh)
        for epoch in range(1, EPOCHS + 1):
            state, metrics = epoch_fn(state, member_labels, keys, jnp.asarray(epoch, jnp.int32), shared)
            save_tree(f"metrics{count}/{epoch}", sharding.gather_members(metrics))
        save_tree(f"params{count}", sharding.gather_members(state.params))
        kernel = state.params["fc1"]["kernel"]
        saved[f"shard_rows{count}"] = np.array([s.data.shape[0] for s in kernel.addressable_shards])
        saved[f"shard_devices{count}"] = np.array([s.device.id for s in kernel.addressable_shards])
        hlo = epoch_fn.lower(state, member_labels, keys, jnp.asarray(EPOCHS + 1, jnp.int32), shared).compile()
        saved[f"collectives{count}"] = np.array([name for name in COLLECTIVES if name in hlo.as_text()] + [""])

    # MASC: 4 members, D = 20, classes of 60, 40 and 10 samples: classes 0 and 1 take the primal problem,
    # class 2 (N_c < D) the dual one.
    rng = np.random.default_rng(0)
    probe_labels = np.stack([rng.permutation(np.repeat(np.arange(3), (60, 40, 10))) for _ in range(NUM_MEMBERS)])
    features = rng.normal(size=(NUM_MEMBERS, 110, 20)).astype(np.float32)
    features += 3.0 * np.eye(3, 20, dtype=np.float32)[probe_labels]  # class-dependent directions
    test = rng.normal(size=(NUM_MEMBERS, 40, 20)).astype(np.float32)
    test[:, :30] += 3.0 * np.eye(3, 20, dtype=np.float32)[np.arange(30) % 3]
    reference = masc.fit(features, probe_labels, 3, 0.9)
    save_tree("masc/reference", reference)
    saved["masc/reference_predictions"] = np.asarray(masc.predict(reference, test))

    def masc_rows(member_ids):  # what a device probes: its own members' fit and predictions
        probe = masc.fit(features[member_ids], probe_labels[member_ids], 3, 0.9)
        predictions = np.asarray(masc.predict(probe, test[member_ids]))
        return [dict(member=m, device=probe.basis.devices().pop().id, predictions=predictions[i],
                     num_components=np.asarray(probe.num_components[i]), eigenvalues=np.asarray(probe.eigenvalues[i]))
                for i, m in enumerate(member_ids)]

    for count in DEVICE_COUNTS:
        rows = probe_on_mesh(masc_rows, NUM_MEMBERS, sharding.member_mesh(jax.devices()[:count]))
        for field in ("member", "device", "predictions", "num_components", "eigenvalues"):
            saved[f"masc/{field}{count}"] = np.stack([row[field] for row in rows])

    if "mesh" in inspect.signature(fit_members).parameters:  # the run-directory loop on a mesh of 2 devices
        small, pair = subset(dataset, 64, 32), members[:2]
        with tempfile.TemporaryDirectory() as out_dir:
            for name, options in (("unsharded", {"member_chunk": 2}),
                                  ("sharded", {"mesh": sharding.member_mesh(jax.devices()[:2])})):
                fit_members(small, pair, spec, f"{out_dir}/{name}", max_epochs=2, progress=False, **options)
                saved[f"fit/{name}"] = np.array((Path(out_dir) / name / "results.csv").read_text())

    try:
        sharding.shard_members(np.zeros((6, 3)), sharding.member_mesh())
        saved["indivisible_error"] = np.array("")
    except ValueError as error:
        saved["indivisible_error"] = np.array(str(error))
    np.savez(out_path, **saved)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out_path = tmp_path_factory.mktemp("sharding") / "results.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, __file__, str(out_path)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    with np.load(out_path) as saved:
        return dict(saved)


def _tree(results, prefix):
    keys = sorted((k for k in results if k.startswith(prefix + "/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    return [results[k] for k in keys]


@pytest.mark.slow
def test_members_are_split_evenly_over_devices(results):
    for count in DEVICE_COUNTS:
        assert list(results[f"shard_rows{count}"]) == [NUM_MEMBERS // count] * count
        assert sorted(results[f"shard_devices{count}"]) == list(range(count))


@pytest.mark.slow
def test_sharded_init_equals_unsharded_init(results):
    initial, sharded = _tree(results, "initial"), _tree(results, "sharded_initial")
    assert len(initial) == len(sharded) == 10  # 5 Dense layers × (kernel, bias)
    for a, b in zip(initial, sharded):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(initial[1][0], initial[1][1])  # members differ (different seeds)


@pytest.mark.parametrize("count", DEVICE_COUNTS)
@pytest.mark.slow
def test_sharded_epochs_equal_unsharded_epochs(results, count):
    reference, sharded = _tree(results, "reference_params"), _tree(results, f"params{count}")
    initial = _tree(results, "initial")
    assert len(reference) == len(sharded) == len(initial)
    for before, a, b in zip(initial, reference, sharded):
        assert a.shape == b.shape and a.shape[0] == NUM_MEMBERS
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        assert np.abs(a - before).max() > 1e-4  # the epochs did train
    for epoch in range(1, EPOCHS + 1):
        reference_metrics = _tree(results, f"reference_metrics/{epoch}")
        metrics = _tree(results, f"metrics{count}/{epoch}")
        for a, b in zip(reference_metrics[:3], metrics[:3]):  # correct counts: train (own, true labels), test
            np.testing.assert_array_equal(b, a)
        np.testing.assert_allclose(metrics[3], reference_metrics[3], rtol=1e-6)  # train loss
    train_correct = _tree(results, f"metrics{count}/{EPOCHS}")[0]
    assert train_correct.shape == (NUM_MEMBERS,) and len(set(train_correct.tolist())) > 1  # members differ


@pytest.mark.parametrize("count", DEVICE_COUNTS)
@pytest.mark.slow
def test_sharded_epoch_compiles_to_local_work(results, count):
    assert [c for c in results[f"collectives{count}"] if c] == []


@pytest.mark.parametrize("count", DEVICE_COUNTS)
@pytest.mark.slow
def test_masc_probed_on_a_mesh_equals_unsharded(results, count):
    _, _, num_components, eigenvalues = _tree(results, "masc/reference")
    # every member once, in mesh order, on the device that holds it (device i: members i·M/n … (i+1)·M/n − 1)
    np.testing.assert_array_equal(results[f"masc/member{count}"], np.arange(NUM_MEMBERS))
    np.testing.assert_array_equal(results[f"masc/device{count}"], np.arange(NUM_MEMBERS) // (NUM_MEMBERS // count))
    np.testing.assert_array_equal(results[f"masc/num_components{count}"], num_components)
    assert (num_components[:, :2] > 0).all() and (num_components[:, :2] < 20).all()
    # primal classes 0, 1 and dual class 2, whose kernel is padded to the longest such class among the members
    # fitted together
    np.testing.assert_allclose(results[f"masc/eigenvalues{count}"], eigenvalues, rtol=1e-5, atol=1e-4)
    predictions = results[f"masc/predictions{count}"]
    np.testing.assert_array_equal(predictions, results["masc/reference_predictions"])
    assert len(np.unique(predictions)) == 3


@pytest.mark.slow
def test_indivisible_member_count_is_a_clear_error(results):
    message = str(results["indivisible_error"])
    assert "M = 6" in message and "multiple of 4" in message and "8 members" in message
    assert "mesh of 3 devices" in message  # the largest device count that divides 6


@pytest.mark.slow
def test_fit_members_on_a_mesh_writes_the_unsharded_rows(results):
    if "fit/sharded" not in results:
        pytest.skip("fit_members has no mesh argument (the jaxmem.sharding hook is not in the training loop)")
    unsharded, sharded = (pd.read_csv(io.StringIO(str(results[f"fit/{name}"]))) for name in ("unsharded", "sharded"))
    # 2 members × (epochs 0, 1, 2 × (train own, train true, test) + epochs 1, 2 × running own, running true)
    assert len(unsharded) == 2 * (3 * 3 + 2 * 2)
    exact = [column for column in unsharded.columns if column != "loss"]
    pd.testing.assert_frame_equal(sharded[exact], unsharded[exact])
    np.testing.assert_allclose(sharded["loss"], unsharded["loss"], rtol=1e-6)


def test_shard_members_rejects_mixed_leading_axes():
    from jaxmem import sharding

    mesh = sharding.member_mesh()
    with pytest.raises(ValueError, match="same leading member axis"):
        sharding.shard_members({"a": np.zeros((2, 3)), "b": np.zeros((3,))}, mesh)
    with pytest.raises(ValueError, match="same leading member axis"):
        sharding.shard_members({"a": np.zeros((2, 3)), "b": np.float32(1.0)}, mesh)


def test_member_mesh_and_round_trip_on_one_device():
    import jax

    from jaxmem import sharding

    mesh = sharding.member_mesh()
    assert mesh.axis_names == ("members",) and mesh.devices.size == len(jax.devices())
    tree = {"w": np.arange(12.0).reshape(len(jax.devices()) * 2, -1), "k": jax.random.split(jax.random.key(0), 2)}
    placed = sharding.shard_members(tree, mesh)
    assert placed["w"].sharding.spec == jax.sharding.PartitionSpec("members")
    np.testing.assert_array_equal(sharding.gather_members(placed["w"]), tree["w"])
    np.testing.assert_array_equal(jax.random.key_data(placed["k"]), jax.random.key_data(tree["k"]))
    shared = sharding.replicate(np.arange(3), mesh)
    assert shared.sharding.is_fully_replicated
    with pytest.raises(ValueError, match="at least one device"):
        sharding.member_mesh([])


if __name__ == "__main__":
    _worker(sys.argv[1])
