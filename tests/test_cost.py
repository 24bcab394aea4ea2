"""Probe compute cost: complete rows, FLOP formulas checked against XLA's own count, and ``jaxmem cost``."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxmem import masc
from jaxmem.cli import main
from jaxmem.data import load_dataset, subset
from jaxmem.experiments.cost import COST_COLUMNS, ProbeSizes, cost_markdown, probe_cost_rows, probe_sizes, run_cost
from jaxmem.probes import gram, logreg, over_members, qda
from jaxmem.probes.registry import PROBES, masc_probe, subspace_fit_flops

COST_PROBES = tuple(PROBES)

MEMBERS, N, T, D, C = 2, 512, 64, 32, 8
# XLA counts a multiply-add as 2 flops, as the formulas do, and adds the elementwise work the formulas leave out
# (norms, argmax, softmax, Adam): at these sizes at most about 1/C + 4/D ≈ 0.25 of the products. So XLA's count
# must lie in [0.95, 1.35] × the formula; a formula off by 2× (multiply-adds counted once) or by one product
# (e.g. a features gradient in logistic regression, 6 instead of 4 per sample) falls outside.
XLA_BAND = (0.95, 1.35)


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(0)
    train = jnp.asarray(rng.normal(size=(MEMBERS, N, D)), jnp.float32)
    labels = np.tile(np.repeat(np.arange(C), N // C), (MEMBERS, 1))  # N_c = 64 ≥ D: the primal problem
    test = jnp.asarray(rng.normal(size=(MEMBERS, T, D)), jnp.float32)
    return train, labels, test, probe_sizes(train, labels, test, C)


def xla_flops(function, *args) -> float:
    """XLA's flop count of ``function`` compiled for ``args`` (a loop body counts once, whatever its trip count)."""
    analysis = jax.jit(function).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])


def assert_in_band(xla: float, formula: float) -> None:
    assert XLA_BAND[0] * formula <= xla <= XLA_BAND[1] * formula, (xla, formula, xla / formula)


def test_rows_are_complete_and_positive_for_every_probe_and_phase(layer):
    train, labels, test, _ = layer
    rows = pd.DataFrame(probe_cost_rows(train, labels, test, C, layer="fc1", repeats=1, variance=16))
    assert list(rows.columns) == list(COST_COLUMNS)
    assert len(rows) == len(COST_PROBES) * 2 and not rows.isna().any().any()
    assert set(zip(rows["probe"], rows["phase"])) == {(p, phase) for p in COST_PROBES for phase in ("fit", "score")}
    assert (rows[["members", "n_train", "n_test", "dim", "classes"]].iloc[0].tolist() == [MEMBERS, N, T, D, C])
    knn_fit = (rows["probe"] == "knn") & (rows["phase"] == "fit")
    assert (rows.loc[knn_fit, ["flops", "gflops_per_s"]] == 0).all().all()  # kNN's fit keeps the training set
    assert (rows["wall_s"] > 0).all() and (rows.loc[~knn_fit, ["flops", "gflops_per_s"]] > 0).all().all()
    table = cost_markdown(rows).splitlines()
    assert len(table) == 2 + len(COST_PROBES) and table[2].startswith("| fc1 | masc |")


SINGLE_CHUNK = {  # all queries in one chunk: no loop repeats
    "qda": functools.partial(over_members.scores, qda.scores, chunk=T),
    "knn": functools.partial(over_members.knn_scores, chunk=T, k=5),
}


@pytest.mark.parametrize("name", ["masc", "linear", "ncm", "knn", "lda", "qda", "logreg"])
def test_scoring_flops_match_xla(layer, name):
    train, labels, test, sizes = layer
    probe = masc_probe(16) if name == "masc" else PROBES[name]  # MASC keeps 16 of 32 directions: width 16
    state = probe.fit(train, labels, C, key=jax.random.key(0))
    score = SINGLE_CHUNK.get(name, probe.scores)
    assert_in_band(xla_flops(score, state, test), probe.score_flops(sizes, state))


def test_logistic_regression_fit_flops_match_xla(layer):
    train, labels, _, sizes = layer

    def one_step(train, labels):  # every member's fit, as the registry's; one epoch of one batch: no loop repeats
        fit = functools.partial(logreg.fit, num_classes=C, epochs=1, batch_size=N, learning_rate=1e-3)
        return jax.vmap(fit, in_axes=(None, 0, 0))(jax.random.key(0), train, labels)

    probe = one_step(train, jnp.asarray(labels))
    assert_in_band(xla_flops(one_step, train, jnp.asarray(labels)), PROBES["logreg"].fit_flops(sizes, probe))


def test_gram_part_of_the_masc_fit_matches_xla(layer):
    train, _, _, _ = layer
    schedule = gram.chunk_schedule(np.zeros(N, int), 1, chunk_size=N)  # one class, one chunk: no loop repeats

    def grams(features):
        return gram.accumulate(gram.gram_init(1, D), features, schedule).gram

    assert_in_band(xla_flops(grams, train[0]), masc.fit_flops(N, D, num_classes=0))  # the Gram term alone


def test_subspace_fit_counts_the_problem_each_class_solves():
    counts = np.array([[0, 10, 100]])  # empty, dual (10 < D), primal (100 ≥ D)
    sizes = ProbeSizes(counts, np.array([[False, True, False]]), n_test=1, dim=50)
    dual = 4 * 10**2 * 50 + 9 * 10**3
    primal = 2 * 100 * 50**2 + 9 * 50**3
    assert subspace_fit_flops(sizes) == dual + primal
    assert probe_sizes(np.zeros((1, 110, 50)), np.repeat([[1, 2]], [10, 100], axis=1), np.zeros((1, 1, 50)),
                       3).use_dual.tolist() == [[False, True, False]]


@pytest.fixture(scope="module")
def digits_run(train_digits_run):
    return train_digits_run("cost", "--degrees", "0,0.8", "--max-epochs", "1", "--train-subset", "200",
                            "--test-subset", "100")


@pytest.mark.slow
def test_cli_cost_writes_a_row_per_layer_probe_and_phase(digits_run, capsys):
    argv = ["cost", str(digits_run), "--layers", "input,fc1", "--repeats", "1", "--train-subset", "150",
            "--test-subset", "50"]
    assert main(argv) == 0
    table = pd.read_csv(digits_run / "cost.csv")
    assert len(table) == 2 * len(COST_PROBES) * 2
    assert set(zip(table["layer"], table["probe"], table["phase"])) == {
        (layer, probe, phase) for layer in ("input", "fc1") for probe in COST_PROBES for phase in ("fit", "score")}
    assert set(table["members"]) == {2} and set(table["n_train"]) == {150} and set(table["n_test"]) == {50}
    assert set(table["dim"]) == {64, 128}
    markdown = (digits_run / "cost.md").read_text()
    assert markdown.count("| input |") == markdown.count("| fc1 |") == len(COST_PROBES)
    assert "| fc1 | qda |" in capsys.readouterr().out


@pytest.mark.slow
def test_run_cost_refuses_data_the_run_was_not_trained_on(digits_run):
    other = subset(load_dataset("digits"), 300, 100)
    with pytest.raises(ValueError, match="not the one"):
        run_cost(digits_run, other)


@pytest.mark.slow
def test_a_cost_rerun_measures_only_the_missing_layers_and_probes_and_refuses_other_settings(digits_run, tmp_path,
                                                                                               monkeypatch):
    import json
    import shutil

    from jaxmem.experiments import cost

    dataset = subset(load_dataset("digits"), 200, 100)
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    for run in (grown, fresh):
        shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("cost.*"))
        config = json.loads((run / "config.json").read_text())
        config.pop("cost", None)  # the settings the module's other tests measured with
        (run / "config.json").write_text(json.dumps(config))
    measured = []
    real = cost.probe_cost_rows
    monkeypatch.setattr(cost, "probe_cost_rows", lambda *a, **k: measured.append((k["layer"], k["probes"])) or
                        real(*a, **k))
    kwargs = dict(repeats=1, num_train=100, num_test=50)
    run_cost(grown, dataset, layers=["fc1"], probes=["masc", "ncm"], **kwargs)
    table = run_cost(grown, dataset, layers=["fc1", "fc2"], probes=["masc", "ncm", "lda"], **kwargs)
    assert measured == [("fc1", ["masc", "ncm"]), ("fc1", ["lda"]), ("fc2", ["masc", "ncm", "lda"])]
    whole = run_cost(fresh, dataset, layers=["fc1", "fc2"], probes=["masc", "ncm", "lda"], **kwargs)
    key = ["layer", "probe", "phase", "members", "n_train", "n_test", "dim", "classes", "flops"]
    assert (table.sort_values(key[:3])[key].reset_index(drop=True)
            .equals(whole.sort_values(key[:3])[key].reset_index(drop=True)))
    assert len(pd.read_csv(grown / "cost.csv")) == len(whole) == 2 * 3 * 2
    for changed in (dict(kwargs, repeats=2), dict(kwargs, num_train=150), dict(kwargs, variance=0.5)):
        with pytest.raises(ValueError, match="other settings") as refused:
            run_cost(grown, dataset, layers=["fc3"], **changed)
        assert "\n" not in str(refused.value)
