"""``benchmarks/device_suite.sh OUT --tiny``: the GPU suite's own steps at toy sizes on CPU, writing what the full
mode writes.

The schema oracle is the full-size output committed in ``benchmarks/results/`` (written by the same benchmark
scripts at full size): every key there must be in the tiny run's JSON, for the probe benchmark and for each
training workload; the grid's table must have the results columns and rows of the probes the tiny mode runs (all but QDA and
logistic regression, which take minutes on a CPU even at toy sizes).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmem.results import COLUMNS, read_rows

pytestmark = pytest.mark.slow  # every test reads the one run of the whole suite (minutes on 2 CPU cores)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    suite = subprocess.Popen(["bash", str(ROOT / "benchmarks" / "device_suite.sh"), str(out), "--tiny"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                             start_new_session=True)
    try:
        output = suite.communicate(timeout=900)[0]
    finally:
        if suite.poll() is None:  # the steps are the script's children: end its whole process group
            os.killpg(suite.pid, signal.SIGKILL)
            suite.wait()
    assert suite.returncode == 0, output[-5000:]
    return out


def _keys(path: Path) -> set[str]:
    return set(json.loads(path.read_text()))


def test_every_step_ran_and_is_recorded(suite):
    summary = json.loads((suite / "suite.json").read_text())
    assert set(summary["steps"]) == {"probe", "train_M2", "planner", "grid", "report"}
    assert all(step["exit_status"] == 0 for step in summary["steps"].values())
    assert {"probe", "train_M2", "grid"} <= set(summary["figures"])
    assert (suite / "suite.md").read_text().startswith("# Device suite on ")


def test_probe_json_has_the_full_size_keys(suite):
    assert _keys(COMMITTED / "probe_cpu.json") <= _keys(suite / "probe" / "probe.json")


def test_train_json_has_the_full_size_keys_for_both_models(suite):
    tiny = json.loads((suite / "train" / "train_M2.json").read_text())
    assert tiny["M"] == 2
    for committed_file in ("train_cpu_mlp.json", "train_cpu_cnn.json"):
        committed = json.loads((COMMITTED / committed_file).read_text())
        assert set(committed) - {"workloads"} <= set(tiny)
        for name, row in committed["workloads"].items():
            assert name in tiny["workloads"], name
            assert set(row) <= set(tiny["workloads"][name]), (name, set(row) - set(tiny["workloads"][name]))


def test_grid_table_report_and_planner(suite):
    table = read_rows(suite / "grid" / "results.csv")
    assert list(table.columns) == list(COLUMNS)
    assert {"model", "masc", "linear", "ncm", "knn", "lda"} <= set(table["probe"])  # the full mode runs all
    assert sorted(set(table["member"])) == [0, 1]
    assert (suite / "grid" / "report" / "report.md").is_file()
    planner = json.loads((suite / "planner" / "planner.json").read_text())
    assert planner["members"] == 2 and planner["training_gib"] > 0
