"""What a run survives: each fault, then the same command, must give the uninterrupted run's table.

Faults are injected at named points with ``JAXMEM_FAULT=<point>[@<n>]`` (:mod:`jaxmem.faults`: the process ends
at once, as under SIGKILL) in a subprocess running the CLI, or made by hand on a copy of a finished run (a cut
table, a corrupt or deleted checkpoint); one test sends a real SIGKILL. The reruns and the uninterrupted
references run in this process (``main``), the references once per module. Tables are compared as sorted lists
of their lines: no row missing, none twice, every value equal (the table has no wall-time column).
"""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxmem import results
from jaxmem.cli import main
from jaxmem.faults import FAULT_ENV
from jaxmem.train.rundir import CHECKPOINT_DIR, RESULTS_FILE

ROOT = Path(__file__).resolve().parents[1]
DATA = ["--dataset", "digits", "--degrees", "0,0.5", "--train-subset", "100", "--test-subset", "50", "--quiet",
        "--skip-memory-check", "--max-epochs", "3"]
EPOCHS = 3
TRAIN = ["train", *DATA]
RUN = ["run", *DATA]  # the p = 0 member is also probed with labels corrupted at q = 0.5: a second pass
DYNAMICS = ["dynamics", *DATA, "--checkpoint-epochs", "0,3", "--probes", ""]  # MASC at two kept epochs
PROBE_COLUMN = results.COLUMNS.index("probe")


def lines(path: Path) -> list[str]:
    """The table's header, then its rows sorted (as text: every value compared exactly)."""
    header, *rows = path.read_text().splitlines()
    return [header, *sorted(rows)]


def model_lines(path: Path) -> list[str]:
    header, *rows = lines(path)
    return [header, *(row for row in rows if next(csv.reader([row]))[PROBE_COLUMN] == "model")]


def command(arguments: list[str], out: Path) -> list[str]:
    return [*arguments, "--out", str(out)]


def run_cli(arguments: list[str], out: Path, **env) -> subprocess.Popen:
    """The CLI in a subprocess with this checkout's code; ``env`` adds variables (e.g. the fault)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "jaxmem.cli", *command(arguments, out)], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def die_at(point: str, arguments: list[str], out: Path) -> None:
    """Run the command with the fault at ``point`` and check that it ended there (status 137, as SIGKILL)."""
    process = run_cli(arguments, out, **{FAULT_ENV: point})
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 137, f"expected the fault {point} to end the run, got {process.returncode}: {stderr}"


def rerun(arguments: list[str], out: Path, capsys) -> str:
    """The same command again, in this process; returns what it wrote to stderr (after checking it succeeded)."""
    capsys.readouterr()
    status = main(command(arguments, out))
    stderr = capsys.readouterr().err
    assert status == 0, stderr
    assert "Traceback" not in stderr
    return stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def reference_run(workdir) -> Path:
    """``jaxmem run`` uninterrupted: training rows, then the probe rows."""
    out = workdir / "reference-run"
    assert main(command(RUN, out)) == 0
    return out


@pytest.fixture(scope="module")
def reference_dynamics(workdir) -> Path:
    out = workdir / "reference-dynamics"
    assert main(command(DYNAMICS, out)) == 0
    return out


@pytest.fixture(scope="module")
def two_checkpoints(workdir, reference_run) -> Path:
    """``jaxmem train`` stopped at epoch 2 and resumed to the end: checkpoints at 2 and 3 (the last two kept)."""
    out = workdir / "two-checkpoints"
    assert main(command([*TRAIN, "--max-epochs", str(EPOCHS - 1)], out)) == 0  # the later flag wins
    assert main(command(TRAIN, out)) == 0
    assert sorted(int(p.name) for p in (out / CHECKPOINT_DIR).iterdir() if p.name.isdigit()) == [EPOCHS - 1, EPOCHS]
    assert model_lines(out / RESULTS_FILE) == model_lines(reference_run / RESULTS_FILE)  # a resume is exact
    return out


def copy_run(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------------------------------- injected faults


@pytest.mark.parametrize("point", [
    "epoch@2",  # epoch 2's rows are written, its checkpoint is not
    "checkpoint@1",  # the last checkpoint is being written
    "append@3",  # half of epoch 2's rows are on disk (append 1 is the initialisation's)
])
@pytest.mark.slow
def test_training_killed_at_a_fault_point_then_rerun_equals_the_uninterrupted_table(point, reference_run, tmp_path,
                                                                                   capsys):
    out = tmp_path / "train"
    die_at(point, TRAIN, out)
    stderr = rerun(TRAIN, out, capsys)
    if point.startswith("append"):
        assert "dropped an unfinished append" in stderr and "will be recomputed" in stderr
    assert lines(out / RESULTS_FILE) == model_lines(reference_run / RESULTS_FILE)


@pytest.mark.parametrize("point", [
    f"append@{EPOCHS + 2}",  # half of the first probing pass's rows are on disk (after the 1 + EPOCHS of training)
    "probe@1",  # the first probing pass is in the table, the second is not
])
@pytest.mark.slow
def test_probing_killed_at_a_fault_point_then_rerun_equals_the_uninterrupted_table(point, reference_run, tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    die_at(point, RUN, out)
    probed = results.count_rows(out / RESULTS_FILE) - len(model_lines(reference_run / RESULTS_FILE)) + 1
    assert 0 <= probed < len(lines(reference_run / RESULTS_FILE)) - len(model_lines(reference_run / RESULTS_FILE))
    stderr = rerun(RUN, out, capsys)
    if point.startswith("append"):
        assert "dropped an unfinished append" in stderr and "will be recomputed" in stderr
    assert lines(out / RESULTS_FILE) == lines(reference_run / RESULTS_FILE)


@pytest.mark.slow
def test_dynamics_killed_between_probed_epochs_then_rerun_equals_the_uninterrupted_table(reference_dynamics,
                                                                                         tmp_path, capsys):
    out = tmp_path / "dynamics"
    die_at("dynamics@1", DYNAMICS, out)
    probed = {row["epoch"] for row in csv.DictReader((out / RESULTS_FILE).open()) if row["probe"] != "model"}
    assert len(probed) == 1  # killed mid-dynamics: one kept epoch probed, one to go
    rerun(DYNAMICS, out, capsys)
    assert lines(out / RESULTS_FILE) == lines(reference_dynamics / RESULTS_FILE)


@pytest.mark.slow
def test_a_real_sigkill_after_some_epochs_then_rerun_equals_the_uninterrupted_table(reference_run, tmp_path,
                                                                                   capsys):
    out = tmp_path / "run"
    header, *rows = model_lines(reference_run / RESULTS_FILE)
    after_epoch_1 = sum(int(next(csv.reader([row]))[results.COLUMNS.index("epoch")]) <= 1 for row in rows)
    process = run_cli(TRAIN, out)
    while process.poll() is None and results.count_rows(out / RESULTS_FILE) < after_epoch_1:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    rerun(TRAIN, out, capsys)
    assert lines(out / RESULTS_FILE) == model_lines(reference_run / RESULTS_FILE)


# ------------------------------------------------------------------------------------ faults made by hand


@pytest.mark.slow
def test_a_table_cut_mid_line_is_recomputed(two_checkpoints, reference_run, tmp_path, capsys):
    out = copy_run(two_checkpoints, tmp_path)
    table = out / RESULTS_FILE
    data = table.read_bytes()
    cut = len(data) * 2 // 3
    while data[cut - 1:cut] == b"\n":  # mid-line, not at a line's end
        cut += 1
    table.write_bytes(data[:cut])
    stderr = rerun(TRAIN, out, capsys)
    assert "dropped an unfinished append" in stderr
    assert lines(table) == model_lines(reference_run / RESULTS_FILE)


def corrupt(checkpoint: Path) -> None:
    """Cut the checkpoint's largest array file to half its size (random bytes in its middle were not always noticed:
    the test failed now and then)."""
    array = max((p for p in (checkpoint / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(array, array.stat().st_size // 2)


@pytest.mark.parametrize("fault", ["corrupt array", "state folder deleted", "checkpoint folder deleted"])
@pytest.mark.slow
def test_a_broken_newest_checkpoint_resumes_from_the_one_before(fault, two_checkpoints, reference_run, tmp_path,
                                                                capsys):
    out = copy_run(two_checkpoints, tmp_path)
    newest = out / CHECKPOINT_DIR / str(EPOCHS)
    if fault == "corrupt array":
        corrupt(newest)
    elif fault == "state folder deleted":
        shutil.rmtree(newest / "state")
    else:
        shutil.rmtree(newest)
    stderr = rerun(TRAIN, out, capsys)
    if fault != "checkpoint folder deleted":  # a step Orbax no longer lists is simply not there
        assert f"checkpoint {newest}" in stderr and "does not restore" in stderr
        assert len(stderr.strip().splitlines()) == 1
    assert lines(out / RESULTS_FILE) == model_lines(reference_run / RESULTS_FILE)


@pytest.mark.slow
def test_no_checkpoint_restoring_stops_with_one_line_and_the_ways_out(two_checkpoints, tmp_path, capsys):
    out = copy_run(two_checkpoints, tmp_path)
    for checkpoint in (out / CHECKPOINT_DIR).iterdir():
        if checkpoint.name.isdigit():
            corrupt(checkpoint)
    capsys.readouterr()
    assert main(command(TRAIN, out)) == 2
    *passed_over, error = capsys.readouterr().err.strip().splitlines()
    assert len(passed_over) == 2 and "Traceback" not in error
    assert error.startswith("jaxmem train: error: no checkpoint") and "--no-resume" in error and "--out" in error


# ------------------------------------------------------------------------------------------------ report


@pytest.mark.slow
def test_report_on_a_training_table_gives_the_training_curves(two_checkpoints, tmp_path):
    assert main(["report", str(two_checkpoints / RESULTS_FILE), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "report.md").read_text()
    assert "training_digits-mlp.png" in page and (tmp_path / "training_digits-mlp.png").stat().st_size > 0
    assert "Probes fitted" not in page and not (tmp_path / "summary.csv").exists()
    last = results.read_rows(two_checkpoints / RESULTS_FILE).query("epoch == @EPOCHS and member == 0")
    full_pass = last.query("split == 'train' and scored_against == 'corrupted'")["accuracy"].item()
    running = last.query("split == 'train_running' and scored_against == 'corrupted'")["accuracy"].item()
    row = next(line for line in page.splitlines() if line.startswith("| digits | mlp | 0 |"))
    assert f"| {100 * full_pass:.1f} | {100 * running:.1f} |" in row


@pytest.mark.parametrize("content", ["", "header"])
def test_report_on_an_empty_table_says_so_in_one_line(content, tmp_path, capsys):
    table = tmp_path / RESULTS_FILE
    table.write_text(",".join(results.COLUMNS) + "\n" if content else "")
    capsys.readouterr()
    assert main(["report", str(table)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and ("no rows" in error or "is empty" in error)


# -------------------------------------------------------------------------------------------- bad inputs


def test_verify_on_a_folder_without_dataset_files_stops_at_once(tmp_path, capsys):
    assert main(["verify", "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(tmp_path) in error and "no mnist or cifar10 files" in error


@pytest.mark.parametrize("subcommand", ["probe", "train", "run", "dynamics", "edit", "relabel", "sweep"])
@pytest.mark.parametrize("flag", ["--degrees", "--seeds"])
def test_an_empty_degrees_or_seeds_list_names_the_flag(subcommand, flag, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([subcommand, flag, ""])
    assert stopped.value.code == 2
    assert f"argument {flag}: is empty" in capsys.readouterr().err.strip().splitlines()[-1]


def _row(epoch, probe, accuracy):
    """A results row: every column "x" but those named."""
    return {**{name: "x" for name in results.COLUMNS}, "epoch": epoch, "probe": probe, "accuracy": accuracy}


def test_a_completed_copy_joins_side_probed_dynamics_rows_once(tmp_path):
    """commit_run (the runner's copy of a finished run): the run's table up to its last finished append, plus every
    row of dynamics.csv it lacks (a row in both appears once), with its pages but no parameters."""
    from jaxmem.runner import commit_run

    run, dest = tmp_path / "run", tmp_path / "dest"
    with pytest.raises(ValueError, match="no results.csv"):
        commit_run(run, dest)
    results.append_rows(run / RESULTS_FILE, [_row(0, "masc", 0.5), _row(240, "masc", 0.25)])
    with (run / RESULTS_FILE).open("a") as f:
        f.write("0,mnist,cut")  # an append cut mid-line
    results.append_rows(run / "dynamics.csv", [_row(0, "masc", 0.5), _row(1, "masc", 0.125)])
    (run / "summary.md").write_text("| summary |\n")
    (run / CHECKPOINT_DIR).mkdir()
    commit_run(run, dest)
    table = results.read_rows(dest / RESULTS_FILE)
    assert list(zip(table.epoch, table.probe, table.accuracy)) == [(0, "masc", 0.5), (240, "masc", 0.25),
                                                                    (1, "masc", 0.125)]
    assert sorted(p.name for p in dest.iterdir()) == [RESULTS_FILE, "summary.md"]


def test_side_probed_rows_join_the_run_table_once(tmp_path):
    """append_missing (the dynamics stage joins the kept epochs probed during training): the rows of the side
    table that the run's table lacks are appended once, after an unfinished append is dropped; a table with other
    columns is refused."""
    run, side = tmp_path / RESULTS_FILE, tmp_path / "dynamics.csv"
    results.append_rows(run, [_row(0, "masc", 0.5), _row(240, "masc", 0.25)])
    with run.open("a") as f:
        f.write("0,mnist,cut")  # an append cut short
    results.append_rows(side, [_row(0, "masc", 0.5), _row(5, "masc", 0.125), _row(5, "linear", 0.75)])
    assert [results.append_missing(run, side) for _ in range(2)] == [2, 0]
    table = results.read_rows(run)
    assert list(zip(table.epoch, table.probe, table.accuracy)) == [(0, "masc", 0.5), (240, "masc", 0.25),
                                                                    (5, "masc", 0.125), (5, "linear", 0.75)]
    other = tmp_path / "other.csv"
    other.write_text("member,epoch\n0,1\n")
    with pytest.raises(ValueError, match="not a jaxmem results table"):
        results.append_missing(run, other)


def test_a_rebuilt_compressed_table_has_the_same_bytes(tmp_path):
    pandas = pytest.importorskip("pandas")
    table = pandas.DataFrame({"epoch": [0, 1], "probe": ["masc", "linear"], "accuracy": [0.5, 0.25]})
    path = tmp_path / "results.csv.gz"
    results.write_table(table, path)
    first = path.read_bytes()
    time.sleep(1.1)  # the gzip header's time stamp has a resolution of one second
    results.write_table(table, path)
    assert path.read_bytes() == first
    assert pandas.read_csv(path)["accuracy"].tolist() == [0.5, 0.25]
