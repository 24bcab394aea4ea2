"""The run directory's manifest and lock: a rerun with a wider request adds exactly the rows a fresh run with that
request has, a setting that changes existing rows is refused in one line, and one process writes a run at a time."""
import dataclasses
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from jaxmem.cli import main
from jaxmem.config import ProbeSpec, paper_train_spec
from jaxmem.data import load_dataset, subset
from jaxmem.experiments.dynamics import edit_at_stop, edit_then_continue, probe_saved_epochs, run_dynamics
from jaxmem.experiments.relabel import relabel_and_finetune
from jaxmem.manifest import LOCK_FILE, RunDirBusy, hold
from jaxmem.members import member_grid
from jaxmem.results import read_rows

KEY = ["member", "epoch", "probe", "layer", "subspace_labels", "split", "scored_against"]
TINY = ["--dataset", "digits", "--train-subset", "200", "--test-subset", "100", "--max-epochs", "4", "--quiet"]


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal as sets of rows (no row missing, none twice), whatever their order."""
    assert not a.duplicated(KEY).any() and not b.duplicated(KEY).any()
    a, b = (t.sort_values(KEY).reset_index(drop=True) for t in (a, b))
    pd.testing.assert_frame_equal(a, b[a.columns], check_dtype=False)


@pytest.fixture(scope="module")
def tiny():
    dataset = subset(load_dataset("digits"), 200, 100)
    members = member_grid("digits", "mlp", [0.8], [0])
    spec = dataclasses.replace(paper_train_spec("digits", "mlp"), max_epochs=3)
    return dataset, members, spec


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One tiny run with epochs 0 and 3 kept, probed by nothing yet: each test copies it."""
    dataset, members, spec = tiny
    out = tmp_path_factory.mktemp("trained") / "run"
    run_dynamics(dataset, members, spec, out, checkpoint_epochs=(0, 3), progress=False, epochs=())
    return out


@pytest.fixture
def run_dir(trained, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


@pytest.mark.parametrize("first, wider", [
    ({"subspace_labels": ("corrupted",)}, {"subspace_labels": ("corrupted", "true")}),
    ({"layers": ("fc1",)}, {"layers": ("fc1", "fc3")}),
    ({"probes": ("masc",)}, {"probes": ("masc", "ncm")}),
])
@pytest.mark.slow
def test_dynamics_rerun_adds_exactly_the_rows_of_a_wider_request(tiny, trained, run_dir, tmp_path, first, wider):
    import shutil

    dataset, members, spec = tiny

    def probe(out, setting):
        probing = ProbeSpec(probes=setting.get("probes", ("masc",)), subspace_labels=setting.get("subspace_labels", ("corrupted",)))
        return probe_saved_epochs(dataset, members, spec, out, probing=probing, layers=setting.get("layers", ("fc2",)),
                                  progress=False)

    before = len(probe(run_dir, first))
    resumed = probe(run_dir, wider)
    assert len(resumed) > before
    fresh_dir = tmp_path / "fresh"
    shutil.copytree(trained, fresh_dir)
    fresh = probe(fresh_dir, wider)
    same_rows(resumed, fresh)


@pytest.mark.slow
def test_cli_dynamics_rerun_with_true_subspaces_adds_them(tmp_path):
    argv = ["dynamics", *TINY, "--degrees", "0.8", "--probes", "masc", "--checkpoint-epochs", "0,4"]
    assert main([*argv, "--subspace-labels", "corrupted", "--out", str(tmp_path / "d")]) == 0
    assert main([*argv, "--subspace-labels", "corrupted,true", "--out", str(tmp_path / "d")]) == 0
    assert main([*argv, "--subspace-labels", "corrupted,true", "--out", str(tmp_path / "fresh")]) == 0
    resumed, fresh = read_rows(tmp_path / "d" / "results.csv"), read_rows(tmp_path / "fresh" / "results.csv")
    assert "true" in set(resumed["subspace_labels"])
    same_rows(resumed, fresh)


@pytest.mark.slow
def test_edit_rows_carry_their_bias_and_each_setting_is_computed_once(tiny, run_dir):
    dataset, members, spec = tiny
    _, zero = edit_at_stop(dataset, members, spec, run_dir)
    _, kept = edit_at_stop(dataset, members, spec, run_dir, keep_bias=True)
    assert {row["probe"] for row in zero} == {"edited"} and {row["probe"] for row in kept} == {"edited(keep_bias)"}
    _, again = edit_at_stop(dataset, members, spec, run_dir, keep_bias=True)
    table = read_rows(run_dir / "results.csv")
    assert (table["probe"] == "edited").sum() == len(zero) == (table["probe"] == "edited(keep_bias)").sum()
    assert pd.DataFrame(again)[KEY].equals(pd.DataFrame(kept)[KEY])


@pytest.mark.slow
def test_relabel_keeps_its_settings_adds_subspace_kinds_and_refuses_changed_ones(tiny, trained, run_dir, tmp_path):
    import shutil

    dataset, members, spec = tiny
    options = dict(max_epochs=2, patience=1, progress=False)
    relabel_and_finetune(dataset, members, spec, run_dir, subspace_labels=("corrupted",), **options)
    resumed = relabel_and_finetune(dataset, members, spec, run_dir, subspace_labels=("corrupted", "true"), **options)
    shutil.copytree(trained, tmp_path / "fresh")
    fresh = relabel_and_finetune(dataset, members, spec, tmp_path / "fresh", subspace_labels=("corrupted", "true"),
                                 **options)
    same_rows(resumed, fresh)
    with pytest.raises(ValueError, match="patience: 1 in the run, 2 now"):
        relabel_and_finetune(dataset, members, spec, run_dir, subspace_labels=("corrupted",), max_epochs=2, patience=2)
    with pytest.raises(ValueError, match="split_seed"):
        relabel_and_finetune(dataset, members, spec, run_dir, split_seed=7, **options)
    same_rows(read_rows(run_dir / "relabel.csv"), fresh)  # a refused call leaves the table as it was


@pytest.mark.slow
def test_edit_then_continue_table_survives_an_interrupted_write(tiny, run_dir, monkeypatch):
    dataset, members, spec = tiny
    first = edit_then_continue(dataset, members, spec, run_dir, edit_epoch=0, until_epoch=1, progress=False)
    written = (run_dir / "edit_continue_0.csv").read_bytes()

    def cut_short(self, path, *args, **kwargs):
        with open(path, "w") as f:
            f.write("member,dataset,mo")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", cut_short)
    with pytest.raises(KeyboardInterrupt):
        edit_then_continue(dataset, members, spec, run_dir, edit_epoch=0, until_epoch=1, progress=False)
    assert (run_dir / "edit_continue_0.csv").read_bytes() == written and len(first)


@pytest.mark.slow
def test_a_fragment_left_in_a_finished_run_is_cut_by_the_next_writer(tmp_path):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--degrees", "0.8", "--out", str(out)]
    assert main(argv) == 0
    rows = len(pd.read_csv(out / "results.csv"))
    with (out / "results.csv").open("a") as f:  # what a second writer killed mid-append leaves
        f.write("0,digits,mlp,0.8,0,reference,3,model,output,none,tr")
    assert main(argv) == 0
    table = pd.read_csv(out / "results.csv")
    assert len(table) == rows and not table["split"].eq("tr").any() and table["accuracy"].notna().all()


HOLDER = textwrap.dedent("""
    import sys, time
    from jaxmem.manifest import hold
    with hold(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def test_a_second_writer_stops_in_one_line_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", *TINY, "--degrees", "0.8", "--out", str(out)]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"pid {holder.pid}" in error and "--out" in error
        assert not (out / "results.csv").exists()
        with pytest.raises(RunDirBusy):
            with hold(out):
                pass
    finally:
        holder.kill()  # killed, it releases the lock
        holder.wait()
    with hold(out), hold(out):  # free again, and re-entrant within a process
        assert (out / LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")


@pytest.mark.slow
def test_two_train_processes_on_one_directory_write_each_row_once(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "jaxmem.cli", "train", *TINY, "--degrees", "0.8,0.4", "--max-epochs", "6",
               "--out", str(out)]
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    codes = [(p.wait(), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in codes) in ([0, 0], [0, 2]), codes
    assert all("is being written by pid" in err for code, err in codes if code == 2)
    table = read_rows(out / "results.csv")
    assert not table.duplicated(KEY).any()
    assert main(["train", *TINY, "--degrees", "0.8,0.4", "--max-epochs", "6", "--out", str(tmp_path / "one")]) == 0
    same_rows(table, read_rows(tmp_path / "one" / "results.csv"))
