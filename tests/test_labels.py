"""Which labels are wrong: the metrics against a planted corruption mask, the verdicts, cleanlab's path, and the
``jaxmem labels`` command on a tiny digits run (its table, report section, rerun and bad inputs)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from jaxmem.experiments.labels import (PR_RECALLS, Verdict, average_precision, cleanlab_verdict,
                                       cross_validated_probs, fold_assignment, given_label_margin, probe_verdict,
                                       roc_auc, verdict_rows)
from jaxmem.members import member_grid

NUM_CLASSES = 4


def _planted(num_samples=60, wrong_share=0.25, seed=0):
    """True labels, given labels with a planted corruption mask (each wrong label another class), the mask."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, NUM_CLASSES, num_samples)
    wrong = rng.random(num_samples) < wrong_share
    given = np.where(wrong, (true + rng.integers(1, NUM_CLASSES, num_samples)) % NUM_CLASSES, true)
    return true, given, wrong


def _by_split(rows):
    return {row["split"]: row for row in rows}


def test_flag_and_rank_metrics_match_hand_counts_and_sklearn():
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

    true, given, wrong = _planted()
    rng = np.random.default_rng(1)
    flagged = np.where(rng.random(len(true)) < 0.7, wrong, ~wrong)  # a noisy detector
    issue = wrong + rng.normal(0, 0.8, len(true))
    issue[:6] = np.round(issue[:6])  # some ties
    suggested = np.where(flagged, (given + 1) % NUM_CLASSES, given)
    rows = _by_split(verdict_rows(3, member_grid("digits", "mlp", [0.3], [1])[0], "probe", "fc1", "corrupted",
                                  Verdict(flagged, issue, suggested), given, true))
    tp = sum(1 for f, w in zip(flagged, wrong) if f and w)
    fp = sum(1 for f, w in zip(flagged, wrong) if f and not w)
    fn = sum(1 for f, w in zip(flagged, wrong) if not f and w)
    assert (rows["flag_precision"]["n_correct"], rows["flag_precision"]["n_seen"]) == (tp, tp + fp)
    assert rows["flag_precision"]["accuracy"] == pytest.approx(tp / (tp + fp))
    assert rows["flag_recall"]["accuracy"] == pytest.approx(tp / (tp + fn))
    assert rows["flag_f1"]["accuracy"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    fixed = sum(1 for s, t, w in zip(suggested, true, wrong) if w and s == t)
    broken = sum(1 for s, t, w in zip(suggested, true, wrong) if not w and s != t)
    assert (rows["relabel_fixed"]["n_correct"], rows["relabel_fixed"]["n_seen"]) == (fixed, wrong.sum())
    assert (rows["relabel_broken"]["n_correct"], rows["relabel_broken"]["n_seen"]) == (broken, (~wrong).sum())
    assert rows["rank_ap"]["accuracy"] == pytest.approx(average_precision_score(wrong, issue))
    assert rows["rank_auroc"]["accuracy"] == pytest.approx(roc_auc_score(wrong, issue))
    assert rows["rank_ap"]["n_correct"] == wrong.sum() and rows["rank_ap"]["n_seen"] == len(true)
    precision, recall, _ = precision_recall_curve(wrong, issue)
    for level in PR_RECALLS:
        assert rows[f"rank_precision@{level:g}"]["accuracy"] == pytest.approx(precision[recall >= level - 1e-9].max())
    assert all(row["member"] == 3 and row["layer"] == "fc1" and row["epoch"] == -1 for row in rows.values())


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_and_auroc_equal_sklearn_on_random_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    wrong = rng.random(50) < 0.3
    issue = rng.integers(0, 4, 50).astype(float)  # many ties
    assert average_precision(wrong, issue) == pytest.approx(average_precision_score(wrong, issue))
    assert roc_auc(wrong, issue) == pytest.approx(roc_auc_score(wrong, issue))
    # infinite scores (MASC's empty classes) rank first or last instead of failing
    issue[:3] = [np.inf, -np.inf, np.inf]
    finite = np.where(np.isinf(issue), np.sign(issue) * 1e9, issue)
    assert average_precision(wrong, issue) == pytest.approx(average_precision_score(wrong, finite))


def test_given_label_margin_is_positive_exactly_where_the_prediction_is_the_given_label():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(40, NUM_CLASSES))
    given = rng.integers(0, NUM_CLASSES, 40)
    margin = given_label_margin(scores, given)
    expected = [scores[i, g] - max(scores[i, c] for c in range(NUM_CLASSES) if c != g) for i, g in enumerate(given)]
    np.testing.assert_allclose(margin, expected)
    np.testing.assert_array_equal(margin > 0, scores.argmax(1) == given)


def test_a_probe_that_predicts_the_true_labels_scores_precision_and_recall_one():
    from jaxmem.probes.registry import PROBES

    true, given, wrong = _planted(80)
    rng = np.random.default_rng(3)
    # Well-separated classes: the nearest class mean, fitted on the corrupted labels, still predicts the true ones.
    features = np.eye(NUM_CLASSES * 2)[true] * 5 + rng.normal(0, 0.1, (len(true), NUM_CLASSES * 2))
    ncm = PROBES["ncm"]
    scores = np.asarray(ncm.scores(ncm.fit(features, given, NUM_CLASSES), features))
    np.testing.assert_array_equal(scores.argmax(1), true)
    rows = _by_split(verdict_rows(0, member_grid("digits", "mlp", [0.3], [0])[0], "ncm", "input", "corrupted",
                                  probe_verdict(scores, given), given, true))
    for split in ("flag_precision", "flag_recall", "flag_f1", "rank_ap", "rank_auroc", "relabel_fixed"):
        assert rows[split]["accuracy"] == 1.0, split
    assert rows["relabel_broken"]["n_correct"] == 0


def test_fold_assignment_covers_every_sample_once_in_near_equal_folds():
    fold = fold_assignment(23, 5, seed=4)
    assert sorted(np.bincount(fold)) == [4, 4, 5, 5, 5]
    np.testing.assert_array_equal(fold, fold_assignment(23, 5, seed=4))
    with pytest.raises(ValueError, match="folds"):
        fold_assignment(3, 4, seed=0)


def test_cleanlab_on_cross_validated_probabilities_finds_the_planted_errors():
    true, given, wrong = _planted(200, wrong_share=0.2, seed=5)
    rng = np.random.default_rng(6)
    features = np.eye(8)[true] * 3 + rng.normal(0, 0.3, (len(true), 8))
    probs = cross_validated_probs(features[None], given[None], NUM_CLASSES, folds=4, seed=0)[0]
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    verdict = cleanlab_verdict(probs, given)
    rows = _by_split(verdict_rows(0, member_grid("digits", "mlp", [0.2], [0])[0], "cleanlab_cv", "input",
                                  "corrupted", verdict, given, true))
    # Out-of-sample probabilities follow the clusters, not the memorisable labels: most planted errors are found,
    # unlike with in-sample probabilities equal to the given labels, which flag nothing.
    assert rows["flag_recall"]["accuracy"] > 0.8 and rows["flag_precision"]["accuracy"] > 0.8
    np.testing.assert_array_equal(verdict.suggested[~verdict.flagged], given[~verdict.flagged])
    in_sample = cleanlab_verdict(np.eye(NUM_CLASSES)[given] * 0.97 + 0.01, given)
    assert not in_sample.flagged.any()


def test_score_labels_fits_each_probe_once_per_layer_and_flags_as_a_fit_on_the_chosen_layer(monkeypatch):
    import jax

    from jaxmem.data import corrupt_labels, load_dataset, normalize, subset
    from jaxmem.experiments import labels
    from jaxmem.features import collect_activations, member_variables
    from jaxmem.models import get_model
    from jaxmem.probes.registry import PROBES, select_probes

    dataset = subset(load_dataset("digits"), 300)
    given = np.stack([corrupt_labels(dataset.y_train, 0.4, 10, seed) for seed in (0, 1)])
    model = get_model("mlp", 10)
    x_train = normalize("digits", dataset.x_train)
    params = jax.vmap(lambda key: model.init(key, x_train[:1])["params"])(jax.random.split(jax.random.key(0), 2))
    variables = member_variables(params)
    layers = ("input", "fc1")
    fits = {name: 0 for name in PROBES}

    def counted(name, function):
        def fit(*args, **kwargs):
            fits[name] += 1
            return function(*args, **kwargs)
        return None if function is None else fit

    def counting_probes(names, **options):
        return {name: probe._replace(fit=counted(name, probe.fit), from_stats=counted(name, probe.from_stats))
                for name, probe in select_probes(names, **options).items()}

    monkeypatch.setattr(labels, "select_probes", counting_probes)
    scoring = labels.score_labels(model, variables, dataset, given, layers=layers, probes=list(PROBES), folds=3,
                                  seed=3)
    assert fits == {name: len(layers) for name in PROBES}  # not once more for the chosen layer

    # The reference: each probe fitted again on its chosen layer's training features (same key), scored there.
    for name, probe in select_probes(list(PROBES)).items():
        for m, layer in enumerate(scoring.layers[name]):
            features = collect_activations(model, variables, x_train, (layer,))[layer]
            state = probe.fit(features, given, 10, key=jax.random.key(3))
            expected = labels.probe_verdict(np.asarray(probe.scores(state, features))[m], given[m])
            got = scoring.verdicts[name][m]
            np.testing.assert_array_equal(got.flagged, expected.flagged, err_msg=f"{name} {m}")
            np.testing.assert_array_equal(got.suggested, expected.suggested, err_msg=f"{name} {m}")
            # float32 summation order: LDA fits from the engine's shared class moments, its own fit from the rows
            np.testing.assert_allclose(got.issue, expected.issue, atol=1e-5 * np.abs(expected.issue).max(),
                                       err_msg=f"{name} {m}")


# ------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def digits_run(train_digits_run):
    return train_digits_run("labels", "--degrees", "0,0.5", "--seeds", "0", "--max-epochs", "6",
                            "--train-subset", "300")


@pytest.mark.slow
def test_cli_labels_writes_the_table_the_section_and_reruns_only_what_is_missing(digits_run, capsys):
    from jaxmem import masc
    from jaxmem.cli import main
    from jaxmem.data import load_dataset, member_train_labels, normalize, subset
    from jaxmem.features import collect_activations, member_variables
    from jaxmem.models import get_model
    from jaxmem.results import read_rows
    from jaxmem.train import load_member_params, read_run_config

    common = [str(digits_run), "--probes", "masc", "--folds", "3", "--quiet"]
    assert main(["labels", *common]) == 0
    captured = capsys.readouterr()
    assert "skipped members [0]" in captured.err  # the p = 0 member has no wrong label
    table = read_rows(digits_run / "labels.csv")
    assert set(table["member"]) == {1}
    assert set(table["probe"]) == {"model", "cleanlab_model", "masc", "cleanlab_cv"}
    assert "**digits × mlp, p = 0.5**" in captured.out and (digits_run / "labels_pr.png").stat().st_size > 0
    assert "## Which training labels are wrong" in (digits_run / "labels.md").read_text()

    # MASC's flags are its predictions at the chosen layer that differ from the given labels: recount them.
    _, members = read_run_config(digits_run)
    dataset = subset(load_dataset("digits"), 300)
    given = member_train_labels(dataset, members)[1]
    wrong = given != dataset.y_train
    rows = table[table["probe"] == "masc"].set_index("split")
    layer = rows.loc["flag_precision", "layer"]
    params, stats = load_member_params(digits_run)
    features = collect_activations(get_model("mlp", 10), member_variables(params, stats),
                                   normalize("digits", dataset.x_train), (layer,))[layer][1]
    flagged = np.asarray(masc.predict(masc.fit(features, given, 10), features)) != given
    assert abs(rows.loc["flag_precision", "n_correct"] - np.sum(flagged & wrong)) <= 2  # float32 near-ties
    assert abs(rows.loc["flag_precision", "n_seen"] - np.sum(flagged)) <= 2
    assert rows.loc["flag_recall", "n_seen"] == wrong.sum()

    # A rerun with fine-tuning computes only the fine-tuning rows; another rerun is done.
    tune = [*common, "--fine-tune", "--finetune-epochs", "2", "--patience", "1"]
    assert main(["labels", *tune]) == 0
    tuned = read_rows(digits_run / "labels.csv")
    assert len(tuned[tuned["split"] == "flag_precision"]) == 4  # the scoring rows were not appended again
    for variant in ("relabel", "drop"):
        part = tuned[tuned["split"] == f"{variant}_test_report"]
        assert set(part["probe"]) == {"model", "cleanlab_model", "masc", "cleanlab_cv"}
        assert part["epoch"].between(0, 2).all()
    capsys.readouterr()
    assert main(["labels", *tune]) == 0
    assert "done" in capsys.readouterr().out
    assert len(read_rows(digits_run / "labels.csv")) == len(tuned)
    assert main(["labels", *common[:3], "--folds", "4", "--quiet"]) == 2  # other settings: refused
    section = (digits_run / "labels.md").read_text()
    assert "## Which training labels are wrong" in section and "relabel → fine-tuned" in section


LAYERS = ("fc1", "fc3")  # two layers keep the reruns short; the layer is still chosen between them


def _copy_run(source, dest):
    """A copy of a run with its labels table and its manifest entry as ``source`` has them (none for a run no
    ``labels`` call touched)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("labels.md", "labels_pr.png", ".jaxmem.lock"))
    return dest


def _unlabelled(digits_run, dest):
    """A copy of the trained run without any labels rows or settings (other tests label digits_run itself)."""
    shutil.copytree(digits_run, dest, ignore=shutil.ignore_patterns("labels*", ".jaxmem.lock"))
    config = json.loads((dest / "config.json").read_text())
    config.pop("labels", None)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def _label(run, **settings):
    from jaxmem.experiments.cost import load_run_dataset
    from jaxmem.experiments.labels import label_issues

    return label_issues(run, load_run_dataset(run), **{"layers": LAYERS, "folds": 3, "progress": False,
                                                      **settings})


def _sorted(table):
    return table.sort_values(["member", "probe", "split", "epoch"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def masc_labelled(digits_run, tmp_path_factory):
    """The digits run labelled by MASC only (and the model and cleanlab), on LAYERS with 3 folds."""
    run = _unlabelled(digits_run, tmp_path_factory.mktemp("masc") / "run")
    first = _label(run, probes=("masc",))
    assert first.computed == [1] and set(first.table["probe"]) == {"model", "cleanlab_model", "masc", "cleanlab_cv"}
    return run


@pytest.mark.slow
def test_a_rerun_with_an_added_probe_computes_only_its_rows_and_ends_with_a_fresh_run_s_table(
        masc_labelled, digits_run, tmp_path, monkeypatch):
    from jaxmem.experiments import labels
    from jaxmem.probes.registry import select_probes

    run = _copy_run(masc_labelled, tmp_path / "rerun")
    before = read_labels(run)
    assert labels.missing_labels(before, [1], labels.label_methods(("masc",)), False) == {}
    assert labels.missing_labels(before, [1], labels.label_methods(("masc", "linear")), False) == {
        1: labels.Missing(("linear",), (), False)}
    calls = {"fit": [], "cross_validated_probs": 0, "member_logits": 0}

    def counting_probes(names, **options):
        calls["fit"] += list(names)
        return select_probes(names, **options)

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return call

    monkeypatch.setattr(labels, "select_probes", counting_probes)
    for name in ("cross_validated_probs", "member_logits"):
        monkeypatch.setattr(labels, name, counted(name, getattr(labels, name)))
    rerun = _label(run, probes=("masc", "linear"))
    # only the linear probe was fitted; neither the model's softmax nor cleanlab's cross-validation was recomputed
    assert calls == {"fit": ["linear"], "cross_validated_probs": 0, "member_logits": 0}
    assert rerun.computed == [1]
    added = rerun.table.iloc[len(before):]
    assert set(added["probe"]) == {"linear"} and len(added) == len(before) // 4  # one method's rows of 4
    monkeypatch.undo()

    fresh = _label(_unlabelled(digits_run, tmp_path / "fresh"), probes=("masc", "linear"))
    assert not rerun.table.duplicated(["member", "probe", "split"]).any()
    pd.testing.assert_frame_equal(_sorted(rerun.table), _sorted(fresh.table))

    again = _label(run, probes=("linear",))  # nothing missing (MASC always comes along): nothing computed
    assert again.computed == [] and len(again.table) == len(rerun.table)
    manifest = json.loads((run / "config.json").read_text())["labels"]
    assert manifest["identity"] == {"layers": list(LAYERS), "folds": 3, "seed": 0, "split_seed": 2345,
                                    "variance": 0.99}
    assert [r["probes"] for r in manifest["requests"]] == [["masc"], ["masc", "linear"], ["linear"]]
    assert not (run / "labels.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("change", [{"folds": 4}, {"split_seed": 1}, {"variance": 0.9}, {"seed": 1},
                                    {"layers": ("fc1", "fc2", "fc3")}], ids=lambda change: next(iter(change)))
def test_a_changed_identity_setting_is_refused_in_one_line_naming_it(masc_labelled, change):
    table = (masc_labelled / "labels.csv").read_bytes()
    with pytest.raises(ValueError) as refused:
        _label(masc_labelled, probes=("masc",), **change)
    field = next(iter(change))
    message = str(refused.value)
    assert "\n" not in message and f"{field}: " in message and "--redo" in message
    assert (masc_labelled / "labels.csv").read_bytes() == table  # nothing written


@pytest.mark.slow
def test_cli_labels_refuses_other_folds_in_one_line_and_redo_starts_over(masc_labelled, tmp_path, capsys):
    from jaxmem.cli import main

    run = _copy_run(masc_labelled, tmp_path / "run")
    before = read_labels(run)
    argv = ["labels", str(run), "--probes", "masc", "--layers", ",".join(LAYERS), "--quiet"]
    err = _one_line_error(capsys, [*argv, "--folds", "4"])
    assert "folds: 3 in the run, 4 now" in err and "--redo" in err

    assert main([*argv, "--folds", "4", "--redo"]) == 0
    redone = read_labels(run)
    assert len(redone) == len(before) and not redone.duplicated(["member", "probe", "split"]).any()
    assert (redone["split"] == "flag_precision").sum() == 4
    manifest = json.loads((run / "config.json").read_text())["labels"]
    assert manifest["identity"]["folds"] == 4 and len(manifest["requests"]) == 1  # the old entry is gone
    # the same settings again: done, nothing appended
    capsys.readouterr()
    assert main([*argv, "--folds", "4"]) == 0
    assert "done" in capsys.readouterr().out and len(read_labels(run)) == len(redone)


@pytest.mark.slow
def test_an_old_run_s_labels_json_is_adopted_into_the_manifest_once(masc_labelled, tmp_path):
    run = _copy_run(masc_labelled, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    del config["labels"]
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="--redo"):  # a table without settings: unknown rows
        _label(run, probes=("masc",))
    (run / "labels.json").write_text(json.dumps({"probes": ["masc"], "layers": list(LAYERS), "folds": 3, "seed": 0,
                                                 "split_seed": 2345, "variance": 0.99}))
    with pytest.raises(ValueError, match="folds: 3 in the run, 5 now"):
        _label(run, probes=("masc",), folds=5)
    assert not (run / "labels.json").exists()
    assert _label(run, probes=("masc",)).computed == []


def read_labels(run):
    from jaxmem.results import read_rows

    return read_rows(run / "labels.csv")


def _one_line_error(capsys, argv) -> str:
    from jaxmem.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


@pytest.mark.slow
def test_cli_labels_bad_inputs_give_one_line_and_exit_2(digits_run, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(digits_run / "config.json", bare)
    assert "no parameters" in _one_line_error(capsys, ["labels", str(bare)])
    assert "config.json" in _one_line_error(capsys, ["labels", str(tmp_path / "nothing")])

    clean = tmp_path / "clean"
    shutil.copytree(digits_run, clean, ignore=shutil.ignore_patterns("labels*"))
    config = json.loads((clean / "config.json").read_text())
    for member in config["members"]:
        member["degree"] = 0.0
    (clean / "config.json").write_text(json.dumps(config))
    assert "no training label is wrong" in _one_line_error(capsys, ["labels", str(clean)])

    monkeypatch.setitem(__import__("sys").modules, "cleanlab", None)
    assert "pip install" in _one_line_error(capsys, ["labels", str(digits_run)])


def test_report_section_averages_seeds_and_plots_from_the_table_alone(tmp_path):
    import pandas as pd

    from jaxmem.report import labels_section, labels_summary

    rows = []
    for seed in (0, 1):
        true, given, wrong = _planted(seed=seed)
        member = member_grid("digits", "mlp", [0.25], [seed])[0]
        scores = np.eye(NUM_CLASSES)[true] + np.random.default_rng(seed).normal(0, 0.6, (len(true), NUM_CLASSES))
        rows += verdict_rows(seed, member, "masc", "fc1", "corrupted", probe_verdict(scores, given), given, true)
    table = pd.DataFrame(rows)
    summary = labels_summary(table).iloc[0]
    for split in ("flag_precision", "rank_ap"):
        values = table.loc[table["split"] == split, "accuracy"]
        assert summary[f"{split}_mean"] == pytest.approx(values.mean())
        assert summary[f"{split}_std"] == pytest.approx(values.std())
    assert summary["seeds"] == 2 and summary["layers"] == "fc1"
    section = labels_section(table, tmp_path)
    assert "**digits × mlp, p = 0.25** (2 seeds" in section and "| masc | fc1 |" in section
    assert (tmp_path / "labels_pr.png").stat().st_size > 0


def test_a_negative_label_drops_its_sample_from_the_loss():
    import jax
    import jax.numpy as jnp

    from jaxmem.train import cross_entropy

    rng = np.random.default_rng(7)
    logits = jnp.asarray(rng.normal(size=(6, NUM_CLASSES)), jnp.float32)
    labels = jnp.asarray([0, -1, 2, 3, -1, 1])
    weights = jnp.asarray([1, 1, 1, 1, 1, 0], jnp.float32)  # the last one is padding
    kept = np.array([0, 2, 3])
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    expected = -np.mean(log_probs[kept, np.asarray(labels)[kept]])
    np.testing.assert_allclose(cross_entropy(logits, labels, weights), expected, rtol=1e-6)
    none_kept = jnp.full(6, -1)
    assert float(cross_entropy(logits, none_kept, weights)) == 0.0
    gradient = jax.grad(lambda z: cross_entropy(z, none_kept, weights))(logits)
    assert not np.asarray(gradient).any()
