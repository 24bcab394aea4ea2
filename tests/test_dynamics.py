"""Paper-2 experiments on a tiny digits run: probes at every saved epoch, resumable, and the last-layer edit."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from jaxmem.cli import main
from jaxmem.config import paper_train_spec
from jaxmem.data import load_dataset, member_train_labels, normalize, subset
from jaxmem.editing import edit_layer
from jaxmem.experiments.dynamics import edit_rows, edit_then_continue, run_dynamics, saved_epochs
from jaxmem.features import collect_activations, member_predictions, member_variables
from jaxmem.members import member_grid
from jaxmem.models import get_model
from jaxmem.probes import linear
from jaxmem.results import read_rows
from jaxmem.train import load_member_params


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    dataset = subset(load_dataset("digits"), 400, 200)
    members = member_grid("digits", "mlp", [0.0, 0.8], [0])
    spec = dataclasses.replace(paper_train_spec("digits", "mlp"), max_epochs=3)
    out = tmp_path_factory.mktemp("dynamics")
    table = run_dynamics(dataset, members, spec, out, checkpoint_epochs=(0, 1, 3), progress=False)
    return dataset, members, spec, out, table


@pytest.mark.slow
def test_every_saved_epoch_is_probed_once(run):
    dataset, members, spec, out, table = run
    assert saved_epochs(out) == [0, 1, 3]
    probed = table[table["probe"].isin(["masc", "linear"])]
    assert set(probed["epoch"]) == {0, 1, 3}
    per_epoch = probed.groupby(["epoch", "probe"]).size()
    assert (per_epoch == 2 * 5 * 2 * 3).all()  # members × layers × subspace kinds × (split, scored-against)
    again = run_dynamics(dataset, members, spec, out, checkpoint_epochs=(0, 1, 3), progress=False)
    pd.testing.assert_frame_equal(again, table)  # resumed: nothing trained or probed twice


@pytest.mark.slow
def test_edited_model_predicts_what_the_last_layer_linear_probe_predicts(run):
    dataset, members, spec, out, _ = run
    rows = pd.DataFrame(edit_rows(dataset, members, spec, out))
    assert set(rows["probe"]) == {"edited"} and set(rows["layer"]) == {"output"}
    params, _ = load_member_params(out)
    model = get_model("mlp", 10)
    layer = edit_layer("mlp")
    x_train, x_test = normalize("digits", dataset.x_train), normalize("digits", dataset.x_test)
    acts = collect_activations(model, member_variables(params), x_train, (layer,))[layer]
    probe = linear.fit(acts, member_train_labels(dataset, members), 10)
    expected = np.asarray(linear.predict(probe, collect_activations(model, member_variables(params), x_test,
                                                                    (layer,))[layer]))
    got = rows[rows["split"] == "test"].sort_values("member")["n_correct"].to_numpy()
    np.testing.assert_array_equal(got, (expected == dataset.y_test).sum(axis=1))
    unedited = member_predictions(model, member_variables(params), x_test)
    assert not np.array_equal(unedited, expected)  # the edit changed the model


@pytest.mark.slow
def test_cli_edit_appends_rows_and_prints_them(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["edit", "--degrees", "0.5", "--max-epochs", "1", "--train-subset", "300", "--test-subset", "100",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    table = read_rows(out / "results.csv")
    assert (table["probe"] == "edited").sum() == 3
    first = capsys.readouterr().out
    assert "edited" in first
    assert main(argv) == 0  # a rerun reprints the same edit and appends nothing
    pd.testing.assert_frame_equal(read_rows(out / "results.csv"), table)
    assert capsys.readouterr().out == first


@pytest.mark.slow
def test_cli_dynamics_probes_the_chosen_layers_and_subspaces(tmp_path):
    out = tmp_path / "run"
    argv = ["dynamics", "--degrees", "0.5", "--max-epochs", "2", "--train-subset", "300", "--test-subset", "100",
            "--checkpoint-epochs", "0,2", "--subspace-labels", "corrupted", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    probed = read_rows(out / "results.csv").query("probe in ['masc', 'linear']")
    assert set(probed["epoch"]) == {0, 2} and set(probed["subspace_labels"]) == {"corrupted"}
    assert set(probed["layer"]) == {"fc1", "fc2", "fc3", "fc4"}  # default: every layer but the input
    assert main([*argv, "--layers", "fc4", "--probes", "ncm"]) == 0
    added = read_rows(out / "results.csv").query("probe == 'ncm'")
    assert set(added["layer"]) == {"fc4"} and set(added["epoch"]) == {0, 2}
    assert main([*argv, "--layers", "fc9"]) == 2  # an unknown layer: one line, nothing probed


@pytest.mark.slow
def test_edit_then_continue_starts_at_the_edit_beside_the_original_run(run):
    dataset, members, spec, out, _ = run
    table = edit_then_continue(dataset, members, spec, out, edit_epoch=1, until_epoch=3, progress=False)
    assert set(table["epoch"]) == {1, 2, 3} and set(table["probe"]) == {"unedited", "edited"}
    start = table[(table["epoch"] == 1) & (table["split"] == "test")].set_index(["probe", "member"])["n_correct"]
    edited_start = pd.DataFrame(edit_rows(dataset, members, spec, out, epoch=1))
    expected = edited_start[edited_start["split"] == "test"].sort_values("member")["n_correct"].to_numpy()
    np.testing.assert_array_equal(start.loc["edited"].sort_index().to_numpy(), expected)
    original = read_rows(out / "results.csv")
    original = original[(original["probe"] == "model") & original["split"].isin(["train", "test"])
                        & original["epoch"].between(1, 3)]
    control = table[table["probe"] == "unedited"]
    pd.testing.assert_frame_equal(control.drop(columns="probe").reset_index(drop=True),
                                  original.drop(columns="probe").reset_index(drop=True), check_dtype=False)
    flipped = member_train_labels(dataset, members) != dataset.y_train
    parts = table[(table["split"] == "train_flipped") & (table["epoch"] == 3)].groupby("member")["n_seen"].first()
    np.testing.assert_array_equal(parts.sort_index().to_numpy(), flipped.sum(axis=1))
    moved = table[(table["split"] == "train") & (table["scored_against"] == "corrupted")
                  & (table["probe"] == "edited")].pivot_table(index="epoch", columns="member", values="n_correct")
    assert (moved.loc[3] != moved.loc[1]).any()  # training went on
    with pytest.raises(ValueError, match="until_epoch"):
        edit_then_continue(dataset, members, spec, out, edit_epoch=3, until_epoch=3)


@pytest.mark.slow
def test_paper_setting_1_edits_the_initialisation(run):
    from jaxmem.experiments.dynamics import PAPER_EDIT_SETTINGS

    dataset, members, spec, out, _ = run
    assert PAPER_EDIT_SETTINGS == {1: (0, 99), 10: (10, 100), 40: (40, 100)}
    table = edit_then_continue(dataset, members, spec, out, edit_epoch=0, until_epoch=1, progress=False)
    start = table[(table["epoch"] == 0) & (table["split"] == "test") & (table["probe"] == "edited")]
    at_init = pd.DataFrame(edit_rows(dataset, members, spec, out, epoch=0))
    np.testing.assert_array_equal(start.sort_values("member")["n_correct"].to_numpy(),
                                  at_init[at_init["split"] == "test"].sort_values("member")["n_correct"].to_numpy())
    assert set(table.loc[table["probe"] == "edited", "epoch"]) == {0, 1}


@pytest.mark.slow
def test_cli_edit_then_continue_writes_its_table_and_plot(tmp_path):
    out = tmp_path / "run"
    argv = ["edit", "--degrees", "0.8", "--max-epochs", "2", "--train-subset", "300", "--test-subset", "100",
            "--edit-epoch", "1", "--continue-to", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    table = pd.read_csv(out / "edit_continue_1.csv")
    assert set(table["epoch"]) == {1, 2} and (out / "edit_continue_1.png").stat().st_size > 1000
