"""Grid files and the runner: a mistake in a file is one line naming its place, what is done is read from the
tables alone, and a grid interrupted, moved and resumed gives the tables of one run whole."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jaxmem.cli import main
from jaxmem.runner import DONE, STAGES, grid_from_dict, grid_runs, read_grid, run_states, train_spec

ROOT = Path(__file__).parents[1]
BASE = {"datasets": ["digits"], "groups": [{"degrees": [0.8], "seeds": [0]}]}


@pytest.mark.parametrize("change, message", [
    ({"datasets": []}, "datasets must be a non-empty list"),
    ({"dataset": ["digits"]}, "unknown setting 'dataset'"),
    ({"groups": []}, "groups must be a non-empty list"),
    ({"groups": [{"degrees": [1.5]}]}, r"groups\[1\].degrees must lie in \[0, 1\]"),
    ({"groups": [{"degrees": [0.8], "stages": ["train", "probes"]}]}, "unknown stage 'probes'"),
    ({"groups": [{"degrees": [0.8], "seed": [0]}]}, r"groups\[1\]: unknown setting 'seed'"),
    ({"groups": [{"degrees": [0.8], "seeds": [0.5]}]}, "seeds must be a non-empty list of int"),
    ({"groups": [{"degrees": [0.8]}, {"degrees": [0.8]}], "layout": "member"}, "run digits-mlp/p0.8-s0 twice"),
    ({"layout": "cells"}, "layout must be one of"),
    ({"label_rule": "random"}, "label_rule must be one of"),
    ({"models": ["mlp", "vgg"]}, "unknown model 'vgg'"),
    ({"train": {"learning_rat": 0.1}}, r"\[train\]: unknown setting 'learning_rat'"),
    ({"train": {"learning_rate": -1}}, r"\[train\] for digits × mlp: learning_rate must be > 0"),
    ({"train": {"checkpoint_epochs": "paper"}}, r"checkpoint_epochs must be a non-empty list of int"),
    ({"probe": {"variance": 1.5}}, r"\[probe\]: variance must be"),
    ({"probe": {"probes": ["masc", "svm"]}}, r"\[probe\]: unknown probes"),
    ({"dynamics": {"subspace_labels": ["noisy"]}}, r"\[dynamics\]: DynamicsSpec.subspace_labels"),
    ({"edit": {"subspace_labels": "given"}}, r"\[edit\]: EditSpec.subspace_labels"),
    ({"edit_continue": {"edit_epoch": 10, "until_epoch": 5}}, r"\[edit_continue\]: EditContinueSpec needs"),
    ({"relabel": {"patience": 0}}, r"\[relabel\]: RelabelSpec.patience must be"),
    ({"labels": {"folds": 1}}, r"\[labels\]: LabelsSpec.folds must be >= 2"),
    ({"cost": {"repeat": 3}}, r"\[cost\]: unknown setting 'repeat'"),
    ({"data": {"train_subst": 10}}, r"\[data\]: unknown setting 'train_subst'"),
    ({"report": {"title": "x"}}, r"\[report\] needs its 'out'"),
])
def test_a_grid_file_mistake_is_one_line_naming_its_place(change, message):
    with pytest.raises(ValueError, match=message) as raised:
        grid_from_dict({**BASE, **change}, "g.toml")
    assert str(raised.value).startswith("g.toml") and "\n" not in str(raised.value)


def test_the_cli_refuses_a_bad_grid_file_or_a_flag_the_file_sets_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("datasets = [digits]\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BASE))
    for argv, message in [(["--config", str(bad)], "bad.toml: not valid TOML"),
                          (["--config", str(tmp_path / "none.toml")], "no grid file"),
                          (["--config", str(good), "--degrees", "0.4"], "--degrees is set by the grid file")]:
        assert main(["sweep", *argv, "--dry-run"]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error


def test_layouts_name_one_run_per_cell_or_per_member():
    grid = grid_from_dict({**BASE, "models": ["mlp", "cnn"], "groups": [{"degrees": [0, 0.8], "seeds": [0, 1]}]})
    assert [(run.name, len(run.members)) for run in grid_runs(grid)] == [("digits-mlp", 4), ("digits-cnn", 4)]
    grid = grid_from_dict({**BASE, "layout": "member", "groups": [
        {"degrees": [0.8], "seeds": [0], "stages": ["probe", "labels"]}, {"degrees": [0, 1], "seeds": [2]}]})
    runs = grid_runs(grid)
    assert [run.name for run in runs] == ["digits-mlp/p0.8-s0", "digits-mlp/p0-s2", "digits-mlp/p1-s2"]
    assert runs[0].stages == ("train", "probe", "labels") and runs[1].stages == ("train", "probe")
    assert grid_from_dict(grid.as_dict()) == grid  # what OUT/grid.json holds reads back as the same grid


def test_every_paper_config_plans_its_runs(tmp_path):
    """configs/: one file per paper setting (18 members each, nothing trained yet in an empty OUT)."""
    configs = sorted(path for path in (ROOT / "configs").glob("*.toml")
                     if path.stem not in ("mlp_mnist_grid", "order_mnist_mlp"))
    assert len(configs) == 8
    for path in configs:
        grid = read_grid(path)
        (run,) = grid_runs(grid)
        assert len(run.members) == 18 and "relabel" in run.stages
        assert run_states(grid, run, tmp_path)["train"] == "not trained"


def test_the_full_scale_order_members_are_the_shuffled_preset_and_p08_is_committed_done(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # the grid file's folders are relative to the checkout
    grid = read_grid("configs/order_mnist_mlp.toml")
    run, later = grid_runs(grid)
    spec = train_spec(grid, run)
    assert (spec.order, spec.stop_on, spec.max_epochs, run.members[0].degree) == ("shuffle", "running", 500, 0.8)
    states = run_states(grid, run, tmp_path)  # docs/order-mnist-mlp/full/mnist-mlp/p0.8-s0
    assert states.keys() == {"train", "probe", "edit", "dynamics"} and set(states.values()) == {"done"}
    assert later.name == "mnist-mlp/p0.4-s0" and run_states(grid, later, tmp_path)["train"] == "not trained"


def test_the_mlp_mnist_grid_reports_its_committed_members_done(monkeypatch, capsys):
    """The full-scale grid on the committed member tables (docs/paper-mnist-mlp/grid): every stage of p = 0.8,
    0, 0.4, 0.2, 0.6 and 1.0 (seed 0) and p = 0.8 seeds 1 and 2 done or not needed, from their tables alone."""
    monkeypatch.chdir(ROOT)
    grid = read_grid("configs/mlp_mnist_grid.toml")
    states = {run.name: run_states(grid, run, "runs/no-such-grid") for run in grid_runs(grid)}
    # p = 0.2's kept epochs 90-160, lost with a machine, were regained by retraining (the same model rows to 160)
    for name in ("p0.8-s0", "p0-s0", "p0.4-s0", "p0.2-s0", "p0.6-s0", "p1-s0", "p0.8-s1", "p0.8-s2"):
        assert all(state in DONE for state in states[f"mnist-mlp/{name}"].values()), states[f"mnist-mlp/{name}"]
    assert states["mnist-mlp/p0.8-s0"].keys() == set(STAGES) - {"cost"}
    assert main(["sweep", "--config", "configs/mlp_mnist_grid.toml", "--out", "runs/no-such-grid", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "8 runs" in printed and "edit_continue  done" in printed


def _digits_grid(root: Path) -> dict:
    """The full-scale grid's shape on 200 digits: every stage, snapshots and completed copies, a report."""
    return {"datasets": ["digits"], "models": ["mlp"], "layout": "member", "out": str(root / "runs"),
            "snapshots": str(root / "snapshots"), "completed": str(root / "completed"), "snapshot_minutes": 0,
            "groups": [{"degrees": [0.8], "seeds": [0], "stages": list(STAGES)},
                       {"degrees": [0], "seeds": [0], "stages": ["train", "probe", "dynamics"]}],
            "data": {"train_subset": 200, "test_subset": 100},
            "train": {"max_epochs": 5, "checkpoint_epochs": [0, 1, 2, 4]},
            "probe": {"probes": ["ncm"], "clean_degrees": [0.8]},
            "labels": {"probes": ["masc", "ncm"]},
            "edit_continue": {"edit_epoch": 2, "until_epoch": 4},
            "relabel": {"max_epochs": 2, "patience": 1},
            "cost": {"probes": ["ncm"], "repeats": 1},
            "report": {"out": str(root / "report")}}


def _sweep(config: Path, fault: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "JAXMEM_FAULT"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's jaxmem, whichever one the venv installed
    if fault:
        env["JAXMEM_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "jaxmem.cli", "sweep", "--config", str(config), "--quiet", *extra],
                          env=env, capture_output=True, text=True, timeout=1200)


def _sorted(path: Path):
    from jaxmem.results import read_rows

    table = read_rows(path)
    return table.sort_values(list(table.columns)).reset_index(drop=True)


@pytest.mark.slow
def test_a_digits_grid_interrupted_moved_and_resumed_equals_an_uninterrupted_one(tmp_path):
    """The grid killed in training, then killed while probing, then its run directories deleted (another machine)
    and resumed from its snapshots: every completed table equals an uninterrupted grid's, cost's keys too."""
    import pandas as pd

    configs = {}
    for name in ("whole", "moved"):
        configs[name] = tmp_path / f"{name}.json"
        configs[name].write_text(json.dumps(_digits_grid(tmp_path / name)))
    done = _sweep(configs["whole"])
    assert done.returncode == 0, done.stderr[-2000:]

    moved = tmp_path / "moved"
    for fault in ("epoch@3", "probe"):
        killed = _sweep(configs["moved"], fault)
        assert killed.returncode == 137, killed.stderr[-2000:]
    run = "digits-mlp/p0.8-s0"
    assert (moved / "snapshots" / run / "checkpoints").is_dir() and (moved / "snapshots" / run / "dynamics.csv").exists()
    shutil.rmtree(moved / "runs")  # the machine is gone; the snapshots (committed) are not
    plan = _sweep(configs["moved"], None, "--dry-run")
    assert f"resumes at epoch 5 from the snapshot {moved / 'snapshots' / run}" in plan.stdout
    resumed = _sweep(configs["moved"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # resumed, not retrained: of the kept epochs only the one the snapshot carries (edit-then-continue's) is here
    assert sorted(p.name for p in (moved / "runs" / run / "epochs").iterdir()) == ["2"]

    whole = tmp_path / "whole"
    for name in ("digits-mlp/p0.8-s0", "digits-mlp/p0-s0"):
        files = sorted(p.name for p in (whole / "completed" / name).iterdir())
        assert files == sorted(p.name for p in (moved / "completed" / name).iterdir())
        for table in ("results.csv", "labels.csv", "relabel.csv", "edit_continue_2.csv"):
            if table in files:
                pd.testing.assert_frame_equal(_sorted(whole / "completed" / name / table),
                                              _sorted(moved / "completed" / name / table))
    keys = lambda root: pd.read_csv(root / "completed" / run / "cost.csv")[["layer", "probe"]]
    pd.testing.assert_frame_equal(keys(whole), keys(moved))
    assert {"labels.csv", "relabel.csv", "edit_continue_2.csv", "cost.csv"} <= {
        p.name for p in (moved / "completed" / run).iterdir()}
    assert not (moved / "snapshots" / run).exists() and (moved / "report" / "report.md").exists()
    finished = _sweep(configs["moved"], None, "--dry-run").stdout
    assert finished.count("done") == len(STAGES) + 3 and "missing" not in finished and "lost" not in finished


@pytest.mark.slow
def test_a_member_grid_adds_a_seed_alone_copies_a_missing_copy_and_finishes_with_lost_epochs(tmp_path):
    """Members are added as runs of their own (layout ``member``): the rerun trains the new seed only, leaves the
    first untouched, and both copies equal those of a grid made with both seeds. A copy a kill prevented is made
    by the next call without recomputing; a kept epoch whose parameters are gone leaves the run finished, lost; a
    run killed before its final parameters were saved is still in training, and the next call saves them."""
    from jaxmem.presets import load_data
    from jaxmem.results import read_rows, write_table
    from jaxmem.runner import run_grid, settled

    def grid(seeds, root):
        return grid_from_dict({"datasets": ["digits"], "models": ["mlp"], "layout": "member",
                               "out": str(root / "runs"), "completed": str(root / "completed"),
                               "groups": [{"degrees": [0.8], "seeds": seeds, "stages": ["train", "probe", "dynamics"]}],
                               "data": {"train_subset": 200, "test_subset": 100},
                               "train": {"max_epochs": 2, "checkpoint_epochs": [0, 1, 2]},
                               "probe": {"probes": ["ncm"]}, "dynamics": {"probes": ["masc"]}})

    def files(folder: Path) -> dict:
        return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in folder.rglob("*") if path.is_file()}

    grown, fresh, first, added = tmp_path / "grown", tmp_path / "fresh", "digits-mlp/p0.8-s0", "digits-mlp/p0.8-s1"
    run_grid(grid([0], grown), load_data, progress=False)
    before = files(grown / "runs" / first) | files(grown / "completed" / first)
    states = run_grid(grid([0, 1], grown), load_data, progress=False)
    assert all(state in DONE for run in states for state in run.values())
    assert files(grown / "runs" / first) | files(grown / "completed" / first) == before
    run_grid(grid([0, 1], fresh), load_data, progress=False)
    for name in (first, added):
        assert (grown / "completed" / name / "results.csv").read_bytes() == \
            (fresh / "completed" / name / "results.csv").read_bytes()

    copy = (grown / "completed" / added / "results.csv").read_bytes()
    shutil.rmtree(grown / "completed" / added)  # killed after the last stage, before the copy
    run_dir = files(grown / "runs" / added)
    run_grid(grid([0, 1], grown), load_data, progress=False)
    assert (grown / "completed" / added / "results.csv").read_bytes() == copy and files(grown / "runs" / added) == run_dir

    shutil.rmtree(grown / "runs" / added / "epochs" / "1")  # a kept epoch gone before its dynamics were probed
    for table in ("results.csv", "dynamics.csv"):
        rows = read_rows(grown / "runs" / added / table)
        write_table(rows[(rows["epoch"] != 1) | (rows["probe"] != "masc")], grown / "runs" / added / table)
    states = run_grid(grid([0, 1], grown), load_data, progress=False)
    assert states[1]["dynamics"] == "lost: 1 kept epoch whose parameters are gone (1)" and all(map(settled, states[1].values()))
    masc = read_rows(grown / "completed" / added / "results.csv").query("probe == 'masc'")
    assert sorted(set(masc["epoch"])) == [0, 2]  # the copy was made again, without the lost epoch

    shutil.rmtree(grown / "runs" / added / "final")  # killed after the stop's rows and checkpoint, before the final save
    both = grid([0, 1], grown)
    states = run_states(both, grid_runs(both)[1], grown / "runs")
    assert states["train"] == "at epoch 2 (rows to the stop at epoch 2; the final parameters not saved yet)"
    assert states["probe"] == "waits for training"
    table = (grown / "runs" / added / "results.csv").read_bytes()
    states = run_grid(both, load_data, progress=False)
    assert all(map(settled, states[1].values())) and (grown / "runs" / added / "final").is_dir()
    assert (grown / "runs" / added / "results.csv").read_bytes() == table


@pytest.mark.slow
def test_the_grid_report_names_the_runs_not_complete_and_where_each_stands(tmp_path, capsys):
    """A grid killed in its second run: the report (written by the grid when the first completed, and by
    ``jaxmem report --config``) leaves the others out of its tables and names them, the killed one at the last
    epoch of its table with the accuracies there, the third not trained; before any run completes, one line."""
    from jaxmem.results import read_rows

    root = tmp_path / "grid"
    config = tmp_path / "grid.json"
    config.write_text(json.dumps({
        "datasets": ["digits"], "models": ["mlp"], "layout": "member", "out": str(root / "runs"),
        "completed": str(root / "completed"), "groups": [{"degrees": [0.8], "seeds": [0, 1, 2],
                                                           "stages": ["train", "probe", "dynamics"]}],
        "data": {"train_subset": 200, "test_subset": 100},
        "train": {"max_epochs": 3, "checkpoint_epochs": [0, 1, 2, 3]}, "probe": {"probes": ["ncm"]},
        "report": {"out": str(root / "report")}}))
    assert main(["report", "--config", str(config)]) == 2
    assert "no run of the grid is complete yet" in capsys.readouterr().err
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({key: value for key, value in json.loads(config.read_text()).items() if key != "report"}))
    assert main(["report", "--config", str(bare)]) == 2 and "has no [report]" in capsys.readouterr().err
    assert main(["report", "--config", str(config), "--out", str(tmp_path)]) == 2
    assert "give only --config" in capsys.readouterr().err
    assert main(["report"]) == 2 and "give results tables or --config" in capsys.readouterr().err

    killed = _sweep(config, "epoch@5")  # the first run's 3 epochs arrive first; the second run dies in its epoch 2
    assert killed.returncode == 137, killed.stderr[-2000:]
    written_by_grid = (root / "report" / "report.md").read_text()
    assert "| digits-mlp/p0.8-s1 | – |" in written_by_grid and "| digits-mlp/p0.8-s2 | – |" in written_by_grid

    assert main(["report", "--config", str(config)]) == 0
    page = (root / "report" / "report.md").read_text()
    table = read_rows(root / "runs" / "digits-mlp/p0.8-s1" / "results.csv")
    model = table[table["probe"] == "model"]
    last = model[model["epoch"] == model["epoch"].max()]
    accuracy = {split: 100 * last.query("split == @split and scored_against == @against")["accuracy"].item()
                for split, against in (("train", "corrupted"), ("test", "true"))}
    row = next(line for line in page.splitlines() if line.startswith("| digits-mlp/p0.8-s1 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == str(model["epoch"].max()) == "2"
    assert (cells[2], cells[4]) == (f"{accuracy['train']:.1f}", f"{accuracy['test']:.1f}")
    # the full state is saved about once a minute: none yet, so these rows are recomputed from epoch 0; the kept
    # epochs probed beside the training so far are named
    kept = sorted(set(read_rows(root / "runs" / "digits-mlp/p0.8-s1" / "dynamics.csv")["epoch"]))
    assert kept and cells[5] == (f"train: starts over: rows to epoch 2, no checkpoint yet; dynamics: waits for "
                                 f"training ({len(kept)} kept epoch{'s' * (len(kept) > 1)} probed so far: "
                                 f"{'–'.join(map(str, sorted({kept[0], kept[-1]})))}); then probe")
    assert "| digits-mlp/p0.8-s2 | – | – | – | – | train: not trained; then probe, dynamics |" in page
    assert "digits-mlp/p0.8-s0 |" not in page.split("### Runs not complete")[1]


def test_the_report_names_each_member_of_an_unfinished_run_that_holds_several():
    """A run of layout ``cell`` holds several members: each gets its row, named by degree and seed, at its own
    last epoch (the committed p = 0.6 and p = 0.4 members joined as one run)."""
    import pandas as pd

    from jaxmem.report.tables import unfinished_markdown
    from jaxmem.results import read_rows

    grid = ROOT / "docs/paper-mnist-mlp/grid/mnist-mlp"
    parts = [read_rows(grid / name / "results.csv").assign(member=m) for m, name in enumerate(("p0.6-s0", "p0.4-s0"))]
    page = unfinished_markdown([("cell", {"train": "at epoch 3", "probe": "waits for training"}, pd.concat(parts))])
    for part, degree in zip(parts, ("0.6", "0.4")):
        model = part[(part["probe"] == "model") & (part["epoch"] == part["epoch"].max())]
        test = model.query("split == 'test'")["accuracy"].item()
        assert f"| cell (p = {degree}, seed 0) | {part['epoch'].max()} | " in page
        assert f"| {100 * test:.1f} | train: at epoch 3; then probe |" in page


def test_a_run_killed_after_its_epoch_0_rows_has_not_stopped(tmp_path):
    """Epoch 0 has no steps, so no running accuracy: a run whose table ends there (killed before its first epoch)
    is in training, not stopped by the running rule (it read 'train done' and the next stages ran on it)."""
    from jaxmem.report import unmemorised_members
    from jaxmem.results import read_rows
    from jaxmem.runner import stop_epochs

    grid = read_grid(ROOT / "configs/mlp_mnist_grid.toml")
    run = next(run for run in grid_runs(grid) if run.name == "mnist-mlp/p0.6-s0")
    table = read_rows(ROOT / "docs/paper-mnist-mlp/grid/mnist-mlp/p0.6-s0/results.csv")
    first = table[(table["epoch"] == 0) & (table["probe"] == "model")]
    assert "train_running" not in set(first["split"])
    assert stop_epochs(first, train_spec(grid, run)) is None
    (epoch, accuracy), = unmemorised_members(first, 1.0, "running").values()
    assert epoch == 0 and accuracy != accuracy  # NaN: nothing to read
    assert stop_epochs(table, train_spec(grid, run)) == {0: 304}  # the whole table did stop
