"""Paper-2 experiments on a tiny digits run: probes at every saved epoch, resumable, and the last-layer edit."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from jaxmem.cli import main
from jaxmem.config import paper_train_spec
from jaxmem.data import load_dataset, member_train_labels, normalize, subset
from jaxmem.editing import edit_layer
from jaxmem.experiments.dynamics import edit_rows, member_predictions, run_dynamics, saved_epochs
from jaxmem.features import collect_activations, member_variables
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


def test_every_saved_epoch_is_probed_once(run):
    dataset, members, spec, out, table = run
    assert saved_epochs(out) == [0, 1, 3]
    probed = table[table["probe"].isin(["masc", "linear"])]
    assert set(probed["epoch"]) == {0, 1, 3}
    per_epoch = probed.groupby(["epoch", "probe"]).size()
    assert (per_epoch == 2 * 5 * 2 * 3).all()  # members × layers × subspace kinds × (split, scored-against)
    again = run_dynamics(dataset, members, spec, out, checkpoint_epochs=(0, 1, 3), progress=False)
    pd.testing.assert_frame_equal(again, table)  # resumed: nothing trained or probed twice


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


def test_cli_edit_appends_rows_and_prints_them(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["edit", "--degrees", "0.5", "--max-epochs", "1", "--train-subset", "300", "--test-subset", "100",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    table = read_rows(out / "results.csv")
    assert (table["probe"] == "edited").sum() == 3
    assert "edited" in capsys.readouterr().out
