"""The resumable sweep: cells, overrides, combined table with distinct member indices, nothing recomputed."""
import json

import pytest

from jaxmem.cli import main
from jaxmem.config import ProbeSpec
from jaxmem.data import load_dataset, subset
from jaxmem.experiments.sweep import Cell, run_sweep, sweep_cells
from jaxmem.presets import preset_spec
from jaxmem.results import read_rows
from jaxmem.runner import DONE, GRID_FILE, grid_from_dict, grid_runs, run_states, shard_runs


def cell_states(out, cell) -> dict:
    """The cell's stage states, read from the grid the sweep saved beside its cells."""
    grid = grid_from_dict(json.loads((out / GRID_FILE).read_text()))
    return run_states(grid, next(run for run in grid_runs(grid) if run.name == cell.name), out)


def test_cells_and_overrides():
    cells = sweep_cells(["digits", "mnist"], ["paper", "mlp", "cnn"])
    assert cells == [Cell("digits", "mlp"), Cell("digits", "cnn"), Cell("mnist", "mlp"), Cell("mnist", "cnn")]
    with pytest.raises(ValueError, match="no preset"):
        sweep_cells(["cifar100"], ["mlp"])
    spec = preset_spec("mnist", "cnn", {"learning_rate": {"mlp": 0.02, "*": 1e-3}, "max_epochs": {"mlp": 9}})
    assert (spec.optimizer, spec.learning_rate, spec.max_epochs) == ("adam", 1e-3, 500)
    assert preset_spec("mnist", "mlp", {"learning_rate": {"mlp": 0.02}}).learning_rate == 0.02


@pytest.mark.slow
def test_sweep_resumes_after_a_failed_cell_without_recomputing_finished_ones(tmp_path, monkeypatch):
    cells = [Cell("digits", "mlp"), Cell("digits", "cnn")]
    load = lambda name: subset(load_dataset(name), 200, 100)
    from jaxmem.experiments import memorize

    calls = []
    real = memorize.run_memorization

    def flaky(dataset, members, spec, out_dir, **kwargs):
        calls.append(members[0].model)
        if members[0].model == "cnn" and calls.count("cnn") == 1:
            raise KeyboardInterrupt  # killed during the second cell
        return real(dataset, members, spec, out_dir, **kwargs)

    monkeypatch.setattr(memorize, "run_memorization", flaky)
    kwargs = dict(overrides={"max_epochs": {"*": 2}}, progress=False, probing=ProbeSpec(probes=("masc", "ncm"), clean_degrees=(0.8,)))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cells, [0.0, 0.8], [0], tmp_path, load, **kwargs)
    mlp, cnn = (cell_states(tmp_path, cell) for cell in cells)
    assert all(state in DONE for state in mlp.values())
    assert cnn["train"] == "done" and cnn["probe"] not in DONE  # the cnn trained, not probed
    partial = read_rows(tmp_path / "results.csv")
    assert set(partial["model"]) == {"mlp"}

    table = run_sweep(cells, [0.0, 0.8], [0], tmp_path, load, **kwargs)
    assert calls == ["mlp", "cnn", "cnn"]
    members = table.groupby("member")[["model", "degree", "seed"]].first()
    assert list(members.index) == list(range(4))
    assert list(members["model"]) == ["mlp"] * 2 + ["cnn"] * 2
    assert set(table["probe"]) == {"model", "masc", "ncm"}
    assert set(table[table["subspace_labels"] == "corrupted@0.8"]["degree"]) == {0.0}
    before = (tmp_path / "results.csv").read_text()
    run_sweep(cells, [0.0, 0.8], [0], tmp_path, load, **kwargs)
    assert calls == ["mlp", "cnn", "cnn"] and (tmp_path / "results.csv").read_text() == before


@pytest.mark.slow
def test_cli_sweep_dry_run_and_run(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--datasets", "digits", "--degrees", "0,0.8", "--max-epochs", "2", "--out", str(out),
            "--quiet", "--learning-rate", "mlp=0.05"]
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "digits-mlp" in printed and "not trained" in printed and "lr 0.05," in printed and not out.exists()
    assert main([*argv, "--relabel", "--finetune-epochs", "1", "--patience", "1", "--split-seed", "5"]) == 0
    assert (out / "summary.md").exists() and (out / "relabel.csv").exists()
    assert main([*argv, "--dry-run"]) == 0 and "done" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_sweep_with_one_run_per_member_adds_a_degree_alone(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--datasets", "digits", "--models", "mlp", "--layout", "member", "--train-subset", "200",
            "--test-subset", "100", "--max-epochs", "2", "--out", str(out), "--quiet"]
    assert main([*argv, "--degrees", "0.8"]) == 0
    first = out / "digits-mlp" / "p0.8-s0" / "results.csv"
    before = (first.stat().st_mtime_ns, first.read_bytes())
    assert f"jaxmem report {out}/*/*/results.csv" in capsys.readouterr().out
    assert main([*argv, "--degrees", "0,0.8", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "digits-mlp/p0-s0" in plan and "not trained" in plan and plan.count("done") == 2  # p = 0.8 stays done
    assert main([*argv, "--degrees", "0,0.8"]) == 0
    assert (first.stat().st_mtime_ns, first.read_bytes()) == before
    assert (out / "digits-mlp" / "p0-s0" / "results.csv").exists()
    assert main(["sweep", "--config", str(out / "grid.json"), "--layout", "member", "--dry-run"]) == 2
    assert "--layout is set by the grid file" in capsys.readouterr().err


@pytest.mark.slow
def test_shards_together_give_the_unsharded_sweep(tmp_path):
    cells = [Cell("digits", "mlp"), Cell("digits", "cnn")]
    load = lambda name: subset(load_dataset(name), 200, 100)
    kwargs = dict(overrides={"max_epochs": {"*": 2}}, progress=False, probing=ProbeSpec(probes=("masc",)))
    whole = run_sweep(cells, [0.8], [0], tmp_path / "whole", load, **kwargs)
    assert shard_runs(cells, (1, 2)) == [cells[1]]
    first = run_sweep(cells, [0.8], [0], tmp_path / "sharded", load, shard=(0, 2), **kwargs)
    assert set(first["model"]) == {"mlp"} and cell_states(tmp_path / "sharded", cells[1])["train"] == "not trained"
    last = run_sweep(cells, [0.8], [0], tmp_path / "sharded", load, shard=(1, 2), **kwargs)
    assert (tmp_path / "sharded" / "results.csv").read_bytes() == (tmp_path / "whole" / "results.csv").read_bytes()
    assert len(last) == len(whole)
    for bad in ((2, 2), (-1, 2), (3, 4)):
        with pytest.raises(ValueError, match="shard"):
            shard_runs(cells, bad, "cell")


def test_cli_shard_plans_its_cells_and_refuses_a_bad_one(tmp_path, capsys):
    argv = ["sweep", "--datasets", "digits", "--models", "mlp,cnn", "--out", str(tmp_path), "--dry-run"]
    assert main([*argv, "--shard", "1/2"]) == 0
    printed = capsys.readouterr().out
    assert "digits-cnn" in printed and "digits-mlp" not in printed
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--shard", bad])
        assert stop.value.code == 2
    assert main([*argv, "--shard", "3/4"]) == 2  # past the grid's cells: one line
    assert "no cell" in capsys.readouterr().err
