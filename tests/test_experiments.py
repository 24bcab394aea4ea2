"""Probing experiments, the CLI and the report, on the embedded digits data and tiny synthetic tables."""
import jax
import json

import numpy as np
import pandas as pd
import pytest

from jaxmem import masc
from jaxmem.cli import main
from jaxmem.config import MemberSpec
from jaxmem.data import corrupt_labels, load_dataset, member_train_labels, normalize
from jaxmem.experiments.probing import probe_input_layer, probe_members
from jaxmem.features import collect_activations, member_variables, model_source
from jaxmem.models import get_model
from jaxmem.probes.engine import probe_source
from jaxmem.probes.registry import PROBES, masc_probe
from jaxmem.report import (best_layer_markdown, final_model_rows, peak_epochs, plot_layers, seed_curves, summary,
                           summary_markdown)
from jaxmem.results import read_rows


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def two_mlps(digits):
    """Two randomly initialised MLP members (stacked params) for the digits shape."""
    model = get_model("mlp", 10)
    x = normalize("digits", digits.x_train[:1])
    params = jax.vmap(lambda k: model.init(k, x)["params"])(jax.random.split(jax.random.key(0), 2))
    return model, member_variables(params)


def test_input_probe_rows_match_a_direct_fit(digits):
    members = [MemberSpec("digits", "none", p, 0) for p in (0.0, 0.6)]
    rows = pd.DataFrame(probe_input_layer(digits, members, precision="exact"))
    assert len(rows) == 6 and set(rows["layer"]) == {"input"}
    x_train = normalize("digits", digits.x_train).reshape(len(digits.x_train), -1)
    x_test = normalize("digits", digits.x_test).reshape(len(digits.x_test), -1)
    for m, p in enumerate((0.0, 0.6)):
        labels = corrupt_labels(digits.y_train, p, 10)
        probe = masc.fit(x_train, labels, 10, precision="exact")
        mine = rows[(rows["member"] == m)].set_index(["split", "scored_against"])
        expected_test = np.mean(np.asarray(masc.predict(probe, x_test)) == digits.y_test)
        expected_train = np.mean(np.asarray(masc.predict(probe, x_train)) == labels)
        assert mine.loc[("test", "true"), "accuracy"] == pytest.approx(expected_test)
        assert mine.loc[("train", "corrupted"), "accuracy"] == pytest.approx(expected_train)
        assert mine.loc[("test", "true"), "size"] == pytest.approx(float(masc.mean_components(probe)))


@pytest.mark.slow
def test_streamed_and_in_memory_probing_agree(digits, two_mlps):
    model, variables = two_mlps
    x = normalize("digits", digits.x_train)
    labels = np.stack([digits.y_train, corrupt_labels(digits.y_train, 0.5, 10)])
    layers = ("fc1", "fc2")
    source = model_source(model, variables, x, x[:300], layers, batch_size=500)
    probes = {"masc": masc_probe(0.99, "exact")}
    streamed = probe_source(source, {"corrupted": labels}, 10, probes, precision="exact", memory_budget=0)
    acts = collect_activations(model, variables, x, layers, batch_size=500)
    assert acts["fc2"].shape == (2, len(x), 512) and streamed.streamed == layers
    for name in layers:
        direct = masc.fit(acts[name], labels, 10, 0.99, "exact")  # dual problem: N_c < 2048
        scored = streamed.scored[name, "corrupted", "masc"]
        np.testing.assert_array_equal(scored.size, masc.mean_components(direct))
        agreement = np.mean(scored.train == np.asarray(masc.predict(direct, acts[name])))
        assert agreement >= 0.995  # model activations are float32; near-ties may flip


@pytest.mark.slow
def test_probe_members_streams_layers_over_the_budget(digits, two_mlps):
    model, variables = two_mlps
    members = [MemberSpec("digits", "mlp", p, 0) for p in (0.0, 0.5)]
    kwargs = dict(epoch=[3, 4], subspace_labels=("corrupted",), precision="exact", layers=("input", "fc1", "fc2"),
                  sensitivity=(1,), probes=tuple(PROBES))
    everything = pd.DataFrame(probe_members(model, "mlp", variables, digits, members, **kwargs))
    streamed = pd.DataFrame(probe_members(model, "mlp", variables, digits, members, memory_budget=0, **kwargs))
    assert list(dict.fromkeys(everything["layer"])) == ["input", "fc1", "fc2"]
    assert set(everything["epoch"]) == {3, 4} and set(everything["probe"]) == {*PROBES, "masc(n=1)"}
    assert set(streamed["probe"]) == {"masc", "masc(n=1)", "linear", "ncm", "lda", "qda"}  # kNN, logreg need rows
    merged = everything.merge(streamed, on=["member", "probe", "layer", "split", "scored_against"])
    assert np.abs(merged["accuracy_x"] - merged["accuracy_y"]).max() <= 0.01
    np.testing.assert_array_equal(merged["size_x"], merged["size_y"])


@pytest.mark.slow
def test_cli_probe_writes_a_run_directory(tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "--degrees", "0,0.5", "--seeds", "0,1", "--label-rule", "per_member",
                 "--out", str(out)]) == 0
    table = read_rows(out / "results.csv")
    assert len(table) == 12 and len(pd.read_csv(out / "members.csv")) == 4 and (out / "summary.md").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["probing"]["identity"] == {"variance": 0.99, "precision": "fast", "bn_mode": "eval"}
    np.testing.assert_allclose(table["accuracy"], table["n_correct"] / table["n_seen"])
    printed = capsys.readouterr().out
    assert "test acc" in printed and "components/class" in printed


@pytest.mark.parametrize("argv,message", [
    (["probe", "--degrees", "1.5"], "corruption degree must be in [0, 1]"),
    (["probe", "--dataset", "cifar10", "--data-dir", "/nonexistent"], "original files not found"),
    (["probe", "--dataset", "imagenet"], "unknown dataset"),
])
def test_cli_reports_bad_input_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["probe", "--variance", "2.5"],
    ["probe", "--train-subset", "0"],
    ["train", "--checkpoint-epochs", "1,x"],
    ["train", "--checkpoint-epochs", "-3"],
])
def test_cli_rejects_malformed_arguments_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_report_on_a_csv_that_is_not_a_results_table_is_one_line(tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["report", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not a jaxmem results table" in err and err.count("\n") == 1


def test_out_naming_an_existing_file_is_refused(tmp_path, capsys):
    existing = tmp_path / "file.txt"
    existing.write_text("x")
    assert main(["train", "--out", str(existing), "--max-epochs", "1", "--quiet"]) == 2
    assert "is an existing file" in capsys.readouterr().err


@pytest.mark.slow
def test_run_stopped_by_max_epochs_is_not_called_memorised(tmp_path, capsys):
    assert main(["run", "--degrees", "0.8", "--max-epochs", "1", "--train-subset", "200", "--test-subset", "100",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "after memorisation" not in printed
    assert "NOT memorised" in printed and "member 0 epoch 1 train" in printed


def synthetic_table():
    """Two degrees × two seeds; model rows at two epochs, probe rows on two layers."""
    rows = []
    for member, (degree, seed) in enumerate([(0.0, 0), (0.0, 1), (0.8, 0), (0.8, 1)]):
        base = dict(member=member, dataset="mnist", model="mlp", degree=degree, seed=seed, label_rule="reference",
                    n_correct=0, n_seen=1, size=np.nan, loss=np.nan)
        for epoch, acc in [(1, 0.5), (9, 0.9 - degree / 2 + seed / 100)]:
            rows.append({**base, "epoch": epoch, "probe": "model", "layer": "output", "subspace_labels": "none",
                         "split": "test", "scored_against": "true", "accuracy": acc})
        for layer, acc in [("fc1", 0.7), ("fc2", 0.85 - degree / 10 + seed / 100)]:
            rows.append({**base, "epoch": 9, "probe": "masc", "layer": layer, "subspace_labels": "corrupted",
                         "split": "test", "scored_against": "true", "accuracy": acc, "size": 5.0})
            rows.append({**base, "epoch": 9, "probe": "masc(n=1)", "layer": layer, "subspace_labels": "corrupted",
                         "split": "test", "scored_against": "true", "accuracy": acc - 0.2, "size": 1.0})
            if degree == 0:  # the clean variant: the p = 0 members with subspaces from labels corrupted at 0.8
                rows.append({**base, "epoch": 9, "probe": "masc", "layer": layer, "subspace_labels": "corrupted@0.8",
                             "split": "test", "scored_against": "true", "accuracy": acc - 0.4, "size": 7.0})
    return pd.DataFrame(rows)


def test_report_summary_and_plot(tmp_path):
    table = synthetic_table()
    assert set(final_model_rows(table)["epoch"]) == {9}
    everything = summary(table)
    rows = everything[(everything["probe"] == "masc") & (everything["subspace_labels"] == "corrupted")]
    rows = rows.set_index("degree")
    assert rows.loc[0.8, "model_test"] == pytest.approx(0.505)
    assert rows.loc[0.8, "model_test_std"] == pytest.approx(np.std([0.5, 0.51], ddof=1))
    assert rows.loc[0.8, "best_layer"] == "fc2"
    assert rows.loc[0.8, "best_test"] == pytest.approx(0.775)
    assert rows.loc[0.0, "seeds"] == 2
    markdown = summary_markdown(table)
    assert "| mnist | mlp | 0.8 | 2 | 50.5 ± 0.7 | masc | corrupted | fc2 | 77.5 ± 0.7 |" in markdown
    png = plot_layers(table, tmp_path / "layers.png")
    assert png.stat().st_size > 1000
    assert "| mnist | mlp | 0.8 | 2 | 50.5 ± 0.7 | 77.5 ± 0.7 (fc2) |" in best_layer_markdown(table)
    clean = best_layer_markdown(table, "clean")
    assert "| dataset | model | q (p = 0 model) |" in clean
    assert "| mnist | mlp | 0.8 | 2 | 90.5 ± 0.7 | 45.5 ± 0.7 (fc2) |" in clean
    sensitivity = best_layer_markdown(table, sensitivity=True)
    assert "| masc(n=1) | masc |" in sensitivity  # n = 1 component before the default 0.99
    assert "| mnist | mlp | 0 | 2 | 90.5 ± 0.7 | 65.5 ± 0.7 (fc2, 1 comp.) | 85.5 ± 0.7 (fc2, 5 comp.) |" in sensitivity
    assert best_layer_markdown(table, "true").count("\n") == 1  # no rows: header only


@pytest.mark.slow
def test_run_trains_probes_and_resumes_without_reprobing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--degrees", "0,0.8", "--max-epochs", "2", "--out", str(out), "--quiet", "--sensitivity", "1"]
    assert main(argv) == 0
    first = read_rows(out / "results.csv")
    masc_rows = first[first["probe"] == "masc"]
    kinds = masc_rows.groupby("subspace_labels")["member"].agg(["size", "max"])
    # members × layers × (split, scored-against); the clean variant only for the p = 0 member (index 0)
    assert kinds.to_dict("index") == {"corrupted": {"size": 2 * 5 * 3, "max": 1}, "true": {"size": 2 * 5 * 3, "max": 1},
                                      "corrupted@0.8": {"size": 5 * 3, "max": 0}}
    assert set(masc_rows["epoch"]) == {2}
    one_component = first[first["probe"] == "masc(n=1)"]
    assert len(one_component) == len(masc_rows) and (one_component["size"] == 1).all()
    assert (out / "layers.png").exists() and "| digits | mlp |" in (out / "summary.md").read_text()
    printed = capsys.readouterr().out
    assert "MASC corrupted" in printed
    assert main(argv) == 0  # resumes: training and probing are done, nothing is recomputed
    pd.testing.assert_frame_equal(read_rows(out / "results.csv"), first)


def test_extra_probes_give_rows_that_match_the_probe_itself(digits, two_mlps):
    from jaxmem.probes import linear

    model, variables = two_mlps
    members = [MemberSpec("digits", "mlp", p, 0) for p in (0.0, 0.5)]
    rows = pd.DataFrame(probe_members(model, "mlp", variables, digits, members, epoch=1, subspace_labels=("corrupted",),
                                      layers=("fc1",), probes=("masc", "linear", "ncm")))
    assert set(rows["probe"]) == {"masc", "linear", "ncm"}
    assert rows[rows["probe"] != "masc"]["size"].isna().all()
    x_test = normalize("digits", digits.x_test)
    acts = collect_activations(model, variables, normalize("digits", digits.x_train), ("fc1",))["fc1"]
    probe = linear.fit(acts, member_train_labels(digits, members), 10)
    predicted = np.asarray(linear.predict(probe, collect_activations(model, variables, x_test, ("fc1",))["fc1"]))
    got = rows[(rows["probe"] == "linear") & (rows["split"] == "test")].sort_values("member")["n_correct"]
    np.testing.assert_array_equal(got.to_numpy(), (predicted == digits.y_test).sum(axis=1))
    with pytest.raises(ValueError, match="unknown probes"):
        probe_members(model, "mlp", variables, digits, members, epoch=1, probes=("svm",))


def test_report_page_from_a_tiny_table_with_dynamics(tmp_path):
    table = synthetic_table()
    early = table[(table["probe"] == "masc")].assign(epoch=1, accuracy=0.95)  # probes peak at epoch 1
    table = pd.concat([table, early], ignore_index=True)
    rows = summary(table).query("probe == 'masc' and subspace_labels == 'corrupted'").set_index("degree")
    assert rows.loc[0.8, "best_test"] == pytest.approx(0.775)  # last epoch only
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    assert main(["report", str(path), "--out", str(tmp_path / "page")]) == 0
    page = (tmp_path / "page" / "report.md").read_text()
    assert "| mnist | mlp | 0.8 | 2 | 50.5 ± 0.7 | 77.5 ± 0.7 (fc2) |" in page
    assert "Clean model" in page and "MASC sensitivity" in page and "true labels" not in page
    assert "| 0.8 | masc | fc1 | 1 | 95.0 |" in page and "| 0.8 | model | output | 9 | 50.5 |" in page
    assert (tmp_path / "page" / "summary.csv").exists()
    for name in ("layers_mnist-mlp.png", "degrees_mnist-mlp.png", "dynamics.png"):
        assert f"({name})" in page and (tmp_path / "page" / name).stat().st_size > 1000
    assert main(["report", str(tmp_path / "missing.csv")]) == 2


def test_peak_epochs_average_only_points_every_seed_reached_and_align_the_seeds_stops():
    """Seeds stopping at different epochs: an epoch only one seed reached is not a mean over seeds, and the stops
    are one point (the model's mean there, shown as the range of the stops)."""
    table = synthetic_table()
    early = table[table["probe"] == "masc"].assign(epoch=1, accuracy=0.6)  # masc probed at epoch 1 too
    table = pd.concat([table, early], ignore_index=True)
    late = table[(table["member"] == 3) & (table["epoch"] == 9)].assign(epoch=10)  # seed 1 of p = 0.8 stops later
    table = pd.concat([table[~((table["member"] == 3) & (table["epoch"] == 9))], late], ignore_index=True)
    lone = late[late["probe"].isin(["model", "masc"])].assign(epoch=5, accuracy=0.99)  # only seed 1 has epoch 5
    peaks = peak_epochs(pd.concat([table, lone], ignore_index=True)).set_index(["degree", "probe", "layer"])
    assert peaks.loc[(0.8, "model", "output"), "peak_epoch"] == "9–10"  # not epoch 5: seed 0 never reached it
    assert peaks.loc[(0.8, "model", "output"), "peak_test"] == pytest.approx(0.505)
    assert peaks.loc[(0.8, "masc", "fc2"), "peak_epoch"] == "9–10"
    assert peaks.loc[(0.8, "masc", "fc2"), "peak_test"] == pytest.approx(0.775)
    assert peaks.loc[(0.0, "masc", "fc2"), "peak_epoch"] == "9"
    assert "masc(n=1)" not in peaks.index.get_level_values("probe")  # probed at the stop alone: no curve, no peak
    curve = seed_curves(table, table[table["probe"] == "model"], ["degree"])
    assert curve[curve["degree"] == 0.8]["epoch"].tolist() == [1, 9.5]


def test_clean_variant_equals_the_member_trained_at_that_degree_probed_with_the_same_labels(digits, two_mlps):
    """A p = 0 member probed with "corrupted@0.6" subspaces is the same fit as a member whose own labels are
    corrupted at 0.6 (same weights): identical rows apart from the member columns and the kind."""
    model, variables = two_mlps
    kwargs = dict(epoch=1, precision="exact", layers=("input", "fc1"), sensitivity=(0.5,))
    clean = pd.DataFrame(probe_members(model, "mlp", variables, digits, [MemberSpec("digits", "mlp", 0.0, 0)] * 2,
                                       subspace_labels=("corrupted@0.6",), member_ids=[4, 7], **kwargs))
    noisy = pd.DataFrame(probe_members(model, "mlp", variables, digits, [MemberSpec("digits", "mlp", 0.6, 0)] * 2,
                                       subspace_labels=("corrupted",), **kwargs))
    assert set(clean["member"]) == {4, 7} and set(clean["subspace_labels"]) == {"corrupted@0.6"}
    assert set(clean["probe"]) == {"masc", "masc(n=0.5)"}
    columns = ["probe", "layer", "split", "scored_against", "n_correct", "size"]
    pd.testing.assert_frame_equal(clean[columns], noisy[columns])
    acts = collect_activations(model, variables, normalize("digits", digits.x_train), ("fc1",))["fc1"]
    half = masc.fit(acts, corrupt_labels(digits.y_train, 0.6, 10)[None].repeat(2, 0), 10, 0.5, "exact")
    sizes = clean[(clean["probe"] == "masc(n=0.5)") & (clean["layer"] == "fc1")]["size"].unique()
    np.testing.assert_allclose(sizes, np.unique(masc.mean_components(half)))
    with pytest.raises(ValueError, match="unknown subspace labels"):
        probe_members(model, "mlp", variables, digits, [MemberSpec("digits", "mlp", 0.0, 0)] * 2, epoch=1,
                      subspace_labels=("shuffled",))


def test_report_can_leave_out_the_input_layer(tmp_path):
    table = synthetic_table()
    table = pd.concat([table, table[table["layer"] == "fc2"].assign(layer="input", accuracy=0.99)], ignore_index=True)
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    assert main(["report", str(path), "--out", str(tmp_path / "all")]) == 0
    assert "(input)" in (tmp_path / "all" / "report.md").read_text()
    assert main(["report", str(path), "--out", str(tmp_path / "hidden"), "--exclude-layers", "input"]) == 0
    page = (tmp_path / "hidden" / "report.md").read_text()
    assert "(input" not in page and "| mnist | mlp | 0.8 | 2 | 50.5 ± 0.7 | 77.5 ± 0.7 (fc2) |" in page


def test_paper_comparison_puts_the_published_figure_beside_ours():
    from jaxmem.paper import MASC_CORRUPTED, MODEL
    from jaxmem.report import compare, comparison_markdown

    table = compare(synthetic_table()).set_index(["table", "probe", "degree"])
    model = table.loc[("model", "model", 0.8)]
    assert model["paper"] == MODEL[("mnist", "mlp")][0.8]
    assert model["jaxmem"] == pytest.approx(50.5) and model["difference"] == pytest.approx(50.5 - 32.10)
    masc = table.loc[("masc_corrupted", "masc", 0.8)]
    assert masc["paper"] == MASC_CORRUPTED[("mnist", "mlp")][0.8] and masc["layer"] == "fc2"
    assert masc["jaxmem"] == pytest.approx(77.5) and masc["difference"] == pytest.approx(77.5 - 83.43)
    assert table.loc[("sensitivity", "masc(n=1)", 0.0), "jaxmem"] == pytest.approx(65.5)
    assert ("masc_corrupted", "masc", 0.0) not in table.index  # not published at p = 0
    assert ("masc_true", "masc", 0.8) not in table.index  # no true-label rows in this table
    assert masc["checkpoints"] == "paper 1"
    assert table.loc[("sensitivity", "masc(n=1)", 0.0), "checkpoints"] == "public trainer"
    assert "| masc_corrupted | mnist × mlp | 0.8 | masc | corrupted | 83.43 | 77.50 (fc2) | -5.93 | paper 1 |" in \
        comparison_markdown(compare(synthetic_table()))


def test_run_comparison_puts_each_seed_and_their_spread_beside_the_authors_three_runs():
    from jaxmem.paper import MASC_CORRUPTED, MLP_MNIST_EPOCHS, MLP_MNIST_RUN_TEST, MODEL
    from jaxmem.report import compare_runs, runs_markdown

    for degree, runs in MLP_MNIST_RUN_TEST.items():  # each degree's three runs give the published mean
        assert sum(runs) / 3 == pytest.approx(MODEL[("mnist", "mlp")][degree], abs=0.01)

    table = compare_runs(synthetic_table()).set_index(["degree", "measure"])
    stop = table.loc[(0.8, "epochs to the stop")]
    assert stop["ours"] == "9 / 9" and stop["seeds"] == "0 / 1" and stop["paper_runs"] == "130 / 123 / 133"
    assert stop["paper"] == pytest.approx(round(sum(MLP_MNIST_EPOCHS[0.8]) / 3, 2)) and stop["std"] == 0
    model = table.loc[(0.8, "model test")]
    assert model["ours"] == "50.00 / 51.00" and model["mean"] == pytest.approx(50.5)
    assert model["std"] == pytest.approx(np.std([50, 51], ddof=1), abs=0.01)
    assert model["paper"] == MODEL[("mnist", "mlp")][0.8] and model["difference"] == pytest.approx(50.5 - 32.10)
    masc = table.loc[(0.8, "MASC test, corrupted-label subspaces")]  # at fc2, the best layer by the mean
    assert masc["ours"] == "77.00 / 78.00" and masc["paper"] == MASC_CORRUPTED[("mnist", "mlp")][0.8]
    assert np.isnan(table.loc[(0.0, "MASC test, corrupted-label subspaces"), "paper"])  # not published at p = 0
    assert (0.8, "train, full pass after the epoch") not in table.index  # this table has no training rows
    assert model["paper_runs"] == "31.73 / 32.51 / 32.05"  # paper 1's runs, whose mean is the published 32.10
    public = table.loc[(0.8, "epochs to the stop, public trainer")]
    assert public["paper_runs"] == "296 / 266 / 324" and public["paper"] == pytest.approx(295.33)
    assert table.loc[(0.0, "model test, public trainer"), "paper_runs"] == "98.17 / 97.87 / 98.11"
    assert "| 0.8 | model test | 0 / 1 | 50.00 / 51.00 | 50.50 ± 0.71 | 31.73 / 32.51 / 32.05 | 32.10 | +18.40 |" in runs_markdown(
        compare_runs(synthetic_table()))
    assert compare_runs(synthetic_table().assign(model="cnn")).empty


def test_dynamics_comparison_puts_paper_2_beside_ours_at_the_epochs_both_hold(tmp_path):
    from jaxmem.paper import DYNAMICS
    from jaxmem.report import compare_dynamics

    base = dict(dataset="mnist", model="mlp", degree=0.8, label_rule="reference", subspace_labels="corrupted",
                split="test", scored_against="true", n_correct=0, n_seen=1, size=np.nan, loss=np.nan)
    rows = [{**base, "member": seed, "seed": seed, "epoch": epoch, "probe": probe, "layer": "fc4",
             "accuracy": 0.5 + epoch / 1000 + seed / 100}
            for seed in (0, 1) for epoch in (0, 10, 11, 40) for probe in ("masc", "linear")]
    rows.append({**base, "member": 0, "seed": 0, "epoch": 10, "probe": "masc", "layer": "fc4",
                 "subspace_labels": "true", "accuracy": 0.99})  # true-label subspaces are not paper 2's
    table = compare_dynamics(pd.DataFrame(rows)).set_index(["probe", "layer", "epoch"])
    assert set(table.index) == {("masc", "fc4", 0), ("masc", "fc4", 10), ("masc", "fc4", 40),
                                ("linear", "fc4", 10), ("linear", "fc4", 40)}  # the authors have no linear @ 0, 11
    row = table.loc[("masc", "fc4", 40)]
    assert row["paper"] == DYNAMICS[("masc", "fc4")][40] and row["seeds"] == 2
    assert row["jaxmem"] == pytest.approx(100 * (0.54 + 0.005)) and row["difference"] == pytest.approx(
        100 * 0.545 - DYNAMICS[("masc", "fc4")][40])
    other = pd.DataFrame(rows).assign(degree=0.4)
    assert compare_dynamics(other).empty


@pytest.mark.slow
def test_a_rerun_with_other_probes_adds_only_the_missing_rows(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["run", "--degrees", "0,0.8", "--max-epochs", "1", "--train-subset", "200", "--test-subset", "100",
            "--out", str(out), "--quiet", "--clean-subspaces", "none"]
    assert main(base) == 0
    first = read_rows(out / "results.csv")
    assert set(first["probe"]) == {"model", "masc"}
    assert main(base + ["--probes", "ncm", "--sensitivity", "1"]) == 0
    second = read_rows(out / "results.csv")
    pd.testing.assert_frame_equal(second.iloc[:len(first)], first)  # nothing rewritten
    added = second.iloc[len(first):]
    assert set(added["probe"]) == {"ncm", "masc(n=1)"}
    keys = ["member", "epoch", "probe", "layer", "subspace_labels", "split", "scored_against"]
    assert not second.duplicated(keys).any()
    assert len(added) == 2 * len(first[first["probe"] == "masc"])
    assert main(base + ["--probes", "ncm"]) == 0  # everything asked for exists: nothing is added
    assert len(read_rows(out / "results.csv")) == len(second)
    config = json.loads((out / "config.json").read_text())
    assert config["probing"]["identity"]["variance"] == 0.99 and len(config["probing"]["requests"]) == 3
    capsys.readouterr()

    assert main(base + ["--variance", "0.5"]) == 2
    assert "variance: 0.99 in the run, 0.5 now" in capsys.readouterr().err
    assert main(base + ["--learning-rate", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate: 0.01 in the run, 0.5 now" in err and "--no-resume" in err and "--out" in err


def test_training_commands_refuse_a_run_the_planner_says_will_not_fit(tmp_path, monkeypatch, capsys):
    import jaxmem.planner

    monkeypatch.setattr(jaxmem.planner, "device_memory_bytes", lambda device=None: 2**20)  # a 1 MiB device
    argv = ["train", "--degrees", "0", "--max-epochs", "1", "--train-subset", "100", "--test-subset", "50",
            "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "M = 1 needs" in err and "0 fit in 0.0 GiB" in err and "--skip-memory-check" in err
    assert not (tmp_path / "run").exists()
    assert main(argv + ["--skip-memory-check"]) == 0


@pytest.mark.slow
def test_train_on_mnist_writes_the_running_stop_rule(mnist_dir, tmp_path):
    """`jaxmem train --dataset mnist` takes the MLP preset, whose stop rule is the authors' running accuracy."""
    out = tmp_path / "mnist"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--degrees", "0.8", "--seeds", "0",
                 "--train-subset", "64", "--test-subset", "32", "--max-epochs", "1", "--quiet", "--out",
                 str(out)]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["stop_on"], train["optimizer"], train["batch_size"]) == ("running", "sgd", 32)


@pytest.mark.slow
def test_report_joins_one_run_directory_per_member_and_can_be_rebuilt_from_its_folder(tmp_path, capsys):
    table = synthetic_table()
    paths = []
    for member, part in table.groupby("member"):  # one run directory per member, each numbering its member 0
        folder = tmp_path / f"m{member}"
        folder.mkdir()
        part.assign(member=0).to_csv(folder / "results.csv", index=False)
        paths.append(str(folder / "results.csv"))
    edit = table[(table["member"] == 2) & (table["probe"] == "model")].assign(member=0, probe="unedited")
    edit = pd.concat([edit, edit.assign(probe="edited", accuracy=edit["accuracy"] + 0.1)], ignore_index=True)
    edit.to_csv(tmp_path / "m2" / "edit_continue_1.csv", index=False)
    out = tmp_path / "joined"
    assert main(["report", *paths, "--out", str(out), "--title", "grid"]) == 0
    joined = read_rows(out / "results.csv.gz")
    assert sorted(joined["member"].unique()) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(joined.sort_values(["member", "epoch", "probe", "layer"]).reset_index(drop=True),
                                  table.sort_values(["member", "epoch", "probe", "layer"]).reset_index(drop=True),
                                  check_dtype=False)
    assert set(pd.read_csv(out / "edit_continue_1.csv")["member"]) == {2}  # the member's id in the joined table
    page = (out / "report.md").read_text()
    assert "## Edit at epoch 1, then continue" in page and (out / "edit_continue_1.png").exists()
    assert "### Where each member stopped" in page
    assert main(["report", str(out / "results.csv.gz"), "--title", "grid"]) == 0  # rebuilt from the folder alone
    assert (out / "report.md").read_text() == page
    capsys.readouterr()
