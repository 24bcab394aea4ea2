"""jaxmem probe --activations: the file formats, streaming from memory maps, the errors, and the MNIST check."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from jaxmem.cli import main
from jaxmem.config import MemberSpec, ProbeSpec
from jaxmem.data import load_dataset, normalize
from jaxmem.experiments.activations import load_activations
from jaxmem.experiments.probing import probe_activations, probe_input_layer
from jaxmem.results import read_rows


def _digits_arrays(noise=0.3):
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(len(y)) < noise, rng.integers(0, 10, len(y)), y)
    return {"pixels/train": x[:1000].reshape(-1, 8, 8), "pixels/test": x[1000:1300].reshape(-1, 8, 8),
            "squares/train": x[:1000] ** 2, "squares/test": x[1000:1300] ** 2,
            "y_train": noisy[:1000], "y_test": y[1000:1300], "y_train_true": y[:1000]}


def _write_folder(directory, arrays):
    for key, value in arrays.items():
        path = directory / f"{key}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, value)
    return directory


def _accuracies(rows):
    return {(r["layer"], r["probe"], r["subspace_labels"], r["split"], r["scored_against"]): r["n_correct"]
            for r in rows}


@pytest.mark.parametrize("layout", ["npz", "folder"])
def test_memory_mapped_layers_larger_than_the_budget_stream_to_the_in_memory_results(tmp_path, layout):
    arrays = _digits_arrays()
    if layout == "npz":
        path = tmp_path / "acts.npz"
        np.savez(path, **arrays)
    else:
        path = _write_folder(tmp_path / "acts", arrays)
    acts = load_activations(path)
    assert all(isinstance(a, np.memmap) for layer in acts.layers.values() for a in layer)
    budget = 8 * 1024  # bytes: far below one layer (1300 rows × 64 features × 4 bytes = 333 KB)
    assert acts.layers["pixels"].train.nbytes > 10 * budget
    probing = ProbeSpec(probes=["linear"], sensitivity=[3], precision="exact")
    streamed = probe_activations(acts, probing.replace(memory_budget=budget))
    in_memory = probe_activations(acts, probing)
    assert streamed.streamed == ("pixels", "squares") and in_memory.streamed == ()
    assert _accuracies(streamed.rows) == _accuracies(in_memory.rows)
    assert {r["probe"] for r in streamed.rows} == {"masc", "masc(n=3)", "linear"}


def test_in_memory_probes_equal_the_library_functions(tmp_path):
    from jaxmem.probes import masc
    from jaxmem.probes.registry import PROBES

    arrays = _digits_arrays()
    np.savez(tmp_path / "acts.npz", **arrays)
    run = probe_activations(load_activations(tmp_path / "acts.npz"), ProbeSpec(probes=["ncm"]))
    x_train, x_test = arrays["squares/train"].astype(np.float32), arrays["squares/test"].astype(np.float32)
    rows = _accuracies(run.rows)
    for kind, labels in (("corrupted", arrays["y_train"]), ("true", arrays["y_train_true"])):
        probe = masc.fit(x_train, labels, 10)
        assert rows["squares", "masc", kind, "test", "true"] == np.sum(
            np.asarray(masc.predict(probe, x_test)) == arrays["y_test"])
        ncm = PROBES["ncm"].fit(x_train, labels, 10)
        assert rows["squares", "ncm", kind, "train", "corrupted"] == np.sum(
            np.asarray(PROBES["ncm"].predict(ncm, x_train)) == arrays["y_train"])
    assert run.members[0].degree == pytest.approx(np.mean(arrays["y_train"] != arrays["y_train_true"]))


def test_cli_writes_a_table_that_jaxmem_report_reads(tmp_path, capsys):
    np.savez(tmp_path / "acts.npz", **_digits_arrays())
    results = tmp_path / "run" / "results.csv"
    assert main(["probe", "--activations", str(tmp_path / "acts.npz"), "--probes", "linear",
                 "--sensitivity", "0.5", "--out", str(results.parent)]) == 0
    table = read_rows(results)
    assert set(table["subspace_labels"]) == {"corrupted", "true"}
    assert set(table["probe"]) == {"masc", "masc(n=0.5)", "linear"}
    assert all((results.parent / name).exists() for name in ("summary.md", "members.csv", "config.json"))
    assert main(["report", str(results)]) == 0
    assert (results.parent / "report.md").exists()


def _break(arrays, case):
    arrays = dict(arrays)
    if case == "missing y_test":
        del arrays["y_test"]
    elif case == "no test array":
        del arrays["squares/test"]
    elif case == "feature mismatch":
        arrays["squares/test"] = arrays["squares/test"][:, :10]
    elif case == "row mismatch":
        arrays["y_train"] = arrays["y_train"][:-5]
        arrays["y_train_true"] = arrays["y_train_true"][:-5]
    elif case == "nan rows":
        arrays["squares/train"] = arrays["squares/train"].copy()
        arrays["squares/train"][[3, 7, 9], 5] = np.nan
        arrays["squares/train"][9, 6] = np.inf
    return arrays


@pytest.mark.parametrize("case, message", [
    ("missing y_test", "missing key 'y_test'"),
    ("no test array", "layer 'squares' has no test array"),
    ("feature mismatch", "layer 'squares' has 64 features per train sample but 10 per test sample"),
    ("row mismatch", "layer 'pixels' train has 1000 rows but y_train has 995 labels"),
    ("nan rows", "layer 'squares' train: 3 of 1000 rows contain NaN or infinite values"),
])
def test_bad_files_get_one_clear_line(tmp_path, capsys, case, message):
    np.savez(tmp_path / "acts.npz", **_break(_digits_arrays(), case))
    assert main(["probe", "--activations", str(tmp_path / "acts.npz"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_mnist_input_layer_npz_reproduces_probe_dataset(mnist_dir, tmp_path):
    mnist = load_dataset("mnist", mnist_dir, "files")
    x_train = normalize("mnist", mnist.x_train).reshape(len(mnist.x_train), -1)
    x_test = normalize("mnist", mnist.x_test).reshape(len(mnist.x_test), -1)
    np.savez(tmp_path / "mnist.npz", **{"input/train": x_train, "input/test": x_test,
                                        "y_train": mnist.y_train, "y_test": mnist.y_test})
    run = probe_activations(load_activations(tmp_path / "mnist.npz"), ProbeSpec(precision="exact"))
    direct = probe_input_layer(mnist, [MemberSpec("mnist", "none", 0.0, 0)], precision="exact")
    test = [r for r in run.rows if r["split"] == "test"]
    direct_test = [r for r in direct if r["split"] == "test" and r["probe"] == "masc"]
    assert [r["n_correct"] for r in test] == [r["n_correct"] for r in direct_test]
    assert round(test[0]["accuracy"], 4) == 0.8234  # the documented check figure
    assert test[0]["size"] == direct_test[0]["size"]
