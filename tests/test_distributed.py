"""``jaxmem train | run --distributed``: two processes on this machine, two virtual CPU devices each, give exactly
the single-process results table.

The two processes (a localhost coordinator on a free port) first train one epoch with ``jaxmem train``, then
``jaxmem run`` resumes them from the checkpoint to epoch 2 and probes every layer (MASC and the linear probe),
each device probing the members it trained. The oracle is ``jaxmem run`` in this process (one device, no
``--distributed``): the same rows (no member missing, none twice), identical counts and probe sizes, losses and
final parameters within float tolerance, the same configuration and member table. In this process alone,
``probe_on_mesh`` hands each device its own members once, in mesh order.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from jaxmem import cli
from jaxmem.train import load_member_params

DATA = ["--dataset", "digits", "--train-subset", "128", "--test-subset", "64", "--degrees", "0,0.8", "--seeds", "0,1",
        "--quiet"]
PROBING = ["--probes", "linear", "--clean-subspaces", "none"]
KEYS = ["member", "epoch", "probe", "layer", "subspace_labels", "split", "scored_against"]
PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch(arguments: list[str]) -> None:
    """``python -m jaxmem.cli ARGUMENTS --distributed`` in two processes; both must exit 0."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    address = f"127.0.0.1:{_free_port()}"
    processes = [subprocess.Popen([sys.executable, "-m", "jaxmem.cli", *arguments, "--distributed",
                                   "--coordinator-address", address, "--num-processes", str(PROCESSES),
                                   "--process-id", str(index)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for index in range(PROCESSES)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=600)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for index, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"process {index} of {' '.join(arguments)}:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    split, single = base / "split", base / "single"
    _launch(["train", *DATA, "--max-epochs", "1", "--out", str(split)])
    assert (split / "checkpoints").is_dir()
    _launch(["run", *DATA, *PROBING, "--max-epochs", "2", "--out", str(split)])
    assert cli.main(["run", *DATA, *PROBING, "--max-epochs", "2", "--out", str(single)]) == 0
    return single, split


def _table(run_dir) -> pd.DataFrame:
    table = pd.read_csv(run_dir / "results.csv")
    assert not table.duplicated(KEYS).any(), table[table.duplicated(KEYS, keep=False)].sort_values(KEYS)
    return table.sort_values(KEYS).reset_index(drop=True)


@pytest.mark.slow
def test_two_processes_write_the_single_process_table(runs):
    single, split = (_table(run) for run in runs)
    assert set(single["probe"]) == {"model", "masc", "linear"} and sorted(set(single["member"])) == [0, 1, 2, 3]
    assert len(split) == len(single)  # a member dropped or written twice changes the count
    pd.testing.assert_frame_equal(split[KEYS], single[KEYS])
    for column in ("n_correct", "n_seen"):
        np.testing.assert_array_equal(split[column], single[column], err_msg=column)
    np.testing.assert_allclose(split["size"], single["size"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(split["loss"], single["loss"], rtol=1e-5)
    assert (split["epoch"].max(), single["epoch"].max()) == (2, 2)


@pytest.mark.slow
def test_two_processes_save_the_single_process_parameters_and_configuration(runs):
    single, split = runs
    expected, _ = load_member_params(single)
    actual, _ = load_member_params(split)
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (split / "members.csv").read_text() == (single / "members.csv").read_text()
    configs = [json.loads((run / "config.json").read_text()) for run in (split, single)]
    # the resumed run takes the second command's cap and keeps the first's, with the epoch it held until
    assert configs[0].pop("resumed_with") == [{"until_epoch": 1, "max_epochs": 1}]
    assert configs[0] == configs[1]


def test_probe_on_mesh_probes_each_member_once_in_mesh_order():
    from jaxmem import sharding
    from jaxmem.experiments.distributed import probe_on_mesh

    mesh = sharding.member_mesh()
    calls = []

    def probe(member_ids):
        calls.append(member_ids)
        return [{"member": m, "device": jax.numpy.zeros(()).devices().pop()} for m in member_ids]

    num_members = 2 * mesh.devices.size
    rows = probe_on_mesh(probe, num_members, mesh)
    assert [row["member"] for row in rows] == list(range(num_members))
    assert [row["device"] for row in rows] == [d for d in mesh.devices.flat for _ in range(2)]
    assert len(calls) == mesh.devices.size
