"""Relabel and fine-tune on a tiny digits run: split, layer choice, relabelling shares, early stopping."""
import dataclasses

import numpy as np
import pytest

from jaxmem import masc
from jaxmem.config import paper_train_spec
from jaxmem.data import load_dataset, member_train_labels, normalize
from jaxmem.experiments.relabel import RELABEL_FILE, choose_layers, relabel_and_finetune, split_test
from jaxmem.features import collect_activations, member_variables
from jaxmem.members import member_grid
from jaxmem.models import get_model
from jaxmem.train import fit_members, load_member_params


def test_split_test_is_seeded_disjoint_and_complete():
    select, report = split_test(1000, seed=3)
    assert len(select) == 200 and len(report) == 800
    np.testing.assert_array_equal(np.sort(np.concatenate([select, report])), np.arange(1000))
    np.testing.assert_array_equal(split_test(1000, seed=3)[0], select)
    assert not np.array_equal(split_test(1000, seed=4)[0], select)
    with pytest.raises(ValueError, match="cannot be split"):
        split_test(1)


def _same_split(ours, theirs) -> bool:
    return all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("num_test", [10000, 1797, 7])
def test_split_test_is_the_references_train_test_split(num_test):
    from sklearn.model_selection import train_test_split

    # The reference: test80_index, test20_index = train_test_split(index, test_size=0.20, random_state=2345).
    report, select = train_test_split(np.arange(num_test), test_size=0.2, random_state=2345)
    assert _same_split(split_test(num_test), (select, report))
    # The check can fail: another seed, a shuffled order or swapped parts are not the reference split.
    assert not _same_split(split_test(num_test, seed=0), (select, report))
    assert not _same_split((select[::-1], report), (select, report))
    assert not _same_split((report, select), (select, report))
    assert not _same_split((np.sort(select), np.sort(report)), (select, report))


def test_choose_layers_takes_the_best_on_the_select_part_and_the_first_on_ties():
    y = np.array([0, 1, 2, 3])
    select = np.array([0, 1, 2])  # sample 3 must not count
    predictions = {"a": np.array([[0, 1, 0, 3], [0, 1, 2, 0]]),
                   "b": np.array([[0, 1, 2, 0], [0, 1, 2, 3]])}
    np.testing.assert_array_equal(choose_layers(predictions, y[select], select), [1, 0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    full = load_dataset("digits")
    dataset = dataclasses.replace(full, x_train=full.x_train[:400], y_train=full.y_train[:400])
    members = member_grid("digits", "mlp", [0.0, 0.6], [0])
    spec = paper_train_spec("digits", "mlp").replace(max_epochs=8)
    out = tmp_path_factory.mktemp("relabel")
    fit_members(dataset, members, spec, out, progress=False)
    return dataset, members, spec, out


@pytest.mark.slow
def test_relabel_rows_shares_and_early_stopping(trained):
    dataset, members, spec, out = trained
    table = relabel_and_finetune(dataset, members, spec, out, layers=("input", "fc1", "fc2"), max_epochs=6,
                                 patience=2, progress=False)
    assert (out / RELABEL_FILE).exists()
    select, report = split_test(len(dataset.y_test))

    # The relabelling is the chosen layer's MASC prediction: recompute it for every member and kind.
    params, stats = load_member_params(out)
    model = get_model("mlp", 10)
    x_train = normalize("digits", dataset.x_train)
    acts = collect_activations(model, member_variables(params, stats), x_train, ("input", "fc1", "fc2"))
    corrupted = member_train_labels(dataset, members)
    flipped = corrupted != dataset.y_train
    relabel = table[table["probe"] == "relabel"].set_index(["subspace_labels", "member", "split"])
    for kind, grouping in (("corrupted", corrupted), ("true", np.stack([dataset.y_train] * 2))):
        for m in range(2):
            layer = relabel.loc[(kind, m, "train"), "layer"]
            probe = masc.fit(acts[layer][m], grouping[m], 10)
            right = np.asarray(masc.predict(probe, acts[layer][m])) == dataset.y_train
            assert abs(relabel.loc[(kind, m, "train"), "n_correct"] - right.sum()) <= 2  # float32 near-ties
            fixed = relabel.loc[(kind, m, "train_flipped")]
            assert fixed["n_seen"] == flipped[m].sum() and abs(fixed["n_correct"] - right[flipped[m]].sum()) <= 2
            assert relabel.loc[(kind, m, "train_unflipped"), "n_seen"] == (~flipped[m]).sum()
            assert relabel.loc[(kind, m, "test_select"), "n_seen"] == len(select)

    # Early stopping: each member-kind trains until `patience` epochs pass without a better select accuracy, and
    # the kept model is the first best epoch.
    tuned = table[table["probe"] == "finetune"]
    best = table[table["probe"] == "finetune_best"].set_index(["subspace_labels", "member", "split"])
    for (kind, m), curve in tuned[tuned["split"] == "test_select"].groupby(["subspace_labels", "member"]):
        accuracy = curve.sort_values("epoch").set_index("epoch")["n_correct"]
        best_epoch = int(accuracy.idxmax())
        assert best.loc[(kind, m, "test_select"), "epoch"] == best_epoch
        assert best.loc[(kind, m, "test_select"), "n_correct"] == accuracy.max()
        assert accuracy.index.max() == min(6, best_epoch + 2)
        report_curve = tuned[(tuned["split"] == "test_report") & (tuned["subspace_labels"] == kind)
                             & (tuned["member"] == m)].set_index("epoch")["n_correct"]
        assert best.loc[(kind, m, "test_report"), "n_correct"] == report_curve[best_epoch]
        assert best.loc[(kind, m, "test_report"), "n_seen"] == len(report)
    model = table[table["probe"] == "model"]
    assert set(model["split"]) == {"test_select", "test_report"} and len(model) == 4
    assert set(tuned[tuned["split"] == "train"]["scored_against"]) == {"relabelled"}


@pytest.mark.slow
def test_cli_relabel_and_its_report_section(tmp_path, capsys):
    from jaxmem.cli import main
    from jaxmem.report import relabel_summary
    from jaxmem.results import read_rows

    out = tmp_path / "run"
    common = ["--degrees", "0.6", "--seeds", "0,1", "--max-epochs", "3", "--out", str(out), "--quiet"]
    assert main(["run", *common, "--clean-subspaces", "none"]) == 0
    assert main(["relabel", *common, "--finetune-epochs", "2", "--layers", "fc3,fc4"]) == 0
    printed = capsys.readouterr().out
    assert "| digits | mlp | 0.6 | 2 | corrupted |" in printed and "| digits | mlp | 0.6 | 2 | true |" in printed
    table = read_rows(out / "relabel.csv")
    summary = relabel_summary(table).set_index("subspace_labels")
    fixed = table[(table["probe"] == "relabel") & (table["split"] == "train_flipped")]
    assert summary.loc["corrupted", "fixed_mean"] == pytest.approx(
        fixed[fixed["subspace_labels"] == "corrupted"]["accuracy"].mean())
    assert set(summary.loc["true", "layers"].split(",")) <= {"fc3", "fc4"}
    assert main(["report", str(out / "results.csv")]) == 0
    assert "## Relabel and fine-tune" in (out / "report.md").read_text()
