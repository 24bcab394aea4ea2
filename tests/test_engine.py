"""The probing engine: both feature sources, streamed vs in memory, shared statistics vs each probe on its own."""
import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxmem.data import corrupt_labels
from jaxmem.features import collect_activations, member_variables, model_source
from jaxmem.models import get_model
from jaxmem.probes.engine import array_source, plan_memory, probe_source
from jaxmem.probes.registry import PROBES, select_probes

SENSITIVITY = (0.25, 0.5, 0.75, 1)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    noisy = corrupt_labels(y[:600], 0.4, 10)
    return x[:600], x[600:800], np.stack([y[:600], noisy])  # train, test, grouping labels [2, N]


def _predictions(probed):
    return {key: (scored.train, scored.test) for key, scored in probed.scored.items()}


@pytest.mark.parametrize("precision", ["fast", "exact"])
def test_shared_statistics_equal_each_probe_fitted_on_its_own(digits, precision):
    train, test, labels = digits
    probes = select_probes(list(PROBES), sensitivity=SENSITIVITY, precision=precision)
    groupings = {"true": labels[:1].repeat(2, 0), "corrupted": labels}
    probed = probe_source(array_source({"pixels": (train, test)}), groupings, 10, probes, precision=precision,
                          train_scores=True)
    dtype = np.float64 if precision == "exact" else np.float32
    x_train, x_test = train.astype(dtype), test.astype(dtype)
    assert len(probed.scored) == len(groupings) * len(probes) == 2 * 11
    for kind, grouping in groupings.items():
        for name, probe in probes.items():
            state = probe.fit(x_train, grouping, 10, key=jax.random.key(0))
            scored = probed.scored["pixels", kind, name]
            np.testing.assert_array_equal(scored.train, probe.predict(state, x_train), err_msg=f"{kind} {name}")
            np.testing.assert_array_equal(scored.test, probe.predict(state, x_test), err_msg=f"{kind} {name}")
            np.testing.assert_array_equal(scored.size, probe.member_sizes(state, 2))
            # float32 summation order: NCM, LDA and QDA fit from the shared class moments, their own fit from rows
            expected_scores = np.asarray(probe.scores(state, x_train))
            np.testing.assert_allclose(scored.train_scores, expected_scores, err_msg=f"{kind} {name}",
                                       rtol=1e-4, atol=1e-5 * np.abs(expected_scores).max())


def test_progress_names_each_layer_as_it_is_probed_and_changes_no_prediction(digits, capsys):
    train, test, labels = digits
    source = array_source({"pixels": (train, test), "squares": (train**2, test**2)})
    probes = select_probes(["masc", "ncm"])
    quiet = probe_source(source, {"corrupted": labels}, 10, probes)
    assert capsys.readouterr().err == ""
    shown = probe_source(source, {"corrupted": labels}, 10, probes, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["probed pixels", "probed squares"]
    assert "(2/2 layers; 2 probes on corrupted-label subspaces) in" in lines[1]
    streamed = probe_source(source, {"corrupted": labels}, 10, probes, memory_budget=0, progress=True)
    assert capsys.readouterr().err.startswith("probed pixels, squares (2/2 layers;")
    assert _predictions(streamed).keys() == _predictions(quiet).keys()
    for key, (train_pred, test_pred) in _predictions(shown).items():
        np.testing.assert_array_equal(train_pred, _predictions(quiet)[key][0])
        np.testing.assert_array_equal(test_pred, _predictions(quiet)[key][1])


def test_every_streaming_probe_streams_to_its_in_memory_predictions(digits):
    train, test, labels = digits
    probes = select_probes(list(PROBES), sensitivity=SENSITIVITY, precision="exact")
    source = array_source({"pixels": (train, test), "squares": (train**2, test**2)})
    assert plan_memory(source, 0) == ((), ("pixels", "squares"))
    in_memory = probe_source(source, {"corrupted": labels}, 10, probes, precision="exact")
    streamed = probe_source(source, {"corrupted": labels}, 10, probes, precision="exact", memory_budget=100_000,
                            train_scores=True)
    assert in_memory.scored["pixels", "corrupted", "masc"].train_scores is None  # kept only when asked
    assert streamed.streamed == ("pixels", "squares") and in_memory.streamed == ()
    assert set(streamed.skipped["pixels"]) == {"knn", "logreg"}
    streaming = [name for name, probe in probes.items() if probe.streams]
    assert set(streaming) == {"masc", "linear", "ncm", "lda", "qda", *(f"masc(n={n:g})" for n in SENSITIVITY)}
    for layer in ("pixels", "squares"):
        for name in streaming:
            memory, stream = in_memory.scored[layer, "corrupted", name], streamed.scored[layer, "corrupted", name]
            if name in ("ncm", "lda", "qda"):  # float32 in memory, from float64 Grams streamed: near-ties may flip
                assert np.mean(memory.test == stream.test) >= 0.99, (layer, name)
            else:
                np.testing.assert_array_equal(memory.train, stream.train, err_msg=f"{layer} {name}")
                np.testing.assert_array_equal(memory.test, stream.test, err_msg=f"{layer} {name}")
                np.testing.assert_array_equal(memory.size, stream.size)
            # the streamed training scores, gathered chunk by chunk, are those its predictions are the argmax of
            assert stream.train_scores.shape == (*labels.shape, 10)
            np.testing.assert_array_equal(stream.train_scores.argmax(-1), stream.train, err_msg=f"{layer} {name}")


@pytest.mark.parametrize("budget", [float("inf"), 100_000])  # bytes: 100_000 streams both layers
def test_a_models_layers_and_the_same_features_as_arrays_give_the_same_rows(digits, budget):
    train, test, labels = digits
    model = get_model("mlp", 10)
    x_train, x_test = (train / 16.0).reshape(-1, 8, 8, 1).astype(np.float32), (test / 16.0).reshape(
        -1, 8, 8, 1).astype(np.float32)
    params = jax.vmap(lambda k: model.init(k, x_train[:1])["params"])(jax.random.split(jax.random.key(0), 1))
    variables = member_variables(params)
    layers = ("input", "fc1")
    acts = {split: collect_activations(model, variables, x, layers) for split, x in (("train", x_train),
                                                                                     ("test", x_test))}
    files = array_source({name: (np.asarray(acts["train"][name][0]), np.asarray(acts["test"][name][0]))
                          for name in layers})
    probes = select_probes(list(PROBES), sensitivity=(0.5,))
    groupings = {"corrupted": labels[1:]}
    from_model = probe_source(model_source(model, variables, x_train, x_test, layers), groupings, 10, probes,
                              memory_budget=budget)
    from_files = probe_source(files, groupings, 10, probes, memory_budget=budget)
    assert from_model.streamed == from_files.streamed == (() if budget == float("inf") else layers)
    assert list(from_model.scored) == list(from_files.scored) and len(from_model.scored) >= 2 * 6
    for key, model_pred in _predictions(from_model).items():
        for got, expected in zip(model_pred, _predictions(from_files)[key]):
            np.testing.assert_array_equal(got, expected, err_msg=str(key))
