"""Smoke tests for the benchmarks in ``benchmarks/``: the smallest settings, the JSON they write, and the matmul
flop count behind the training roofline. No timing thresholds: the machine may be busy."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from jaxmem.models import get_model

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_bench():
    return _load("train_bench")


def _torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _positive_finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


# SPEC §2 MLP on 28×28×1, one sample, multiply-adds × 2: 784·128 + 128·512 + 512·2048 + 2048·2048 + 2048·10.
MLP_MNIST_FORWARD_FLOPS = 2 * (784 * 128 + 128 * 512 + 512 * 2048 + 2048 * 2048 + 2048 * 10)
# SPEC §2 CNN on 32×32×3: per conv H·W·C_out·9·C_in at sides 32, 32, 16, 16, 8, 8; then 1024·250 + 2·250² + 250·10.
CNN_CIFAR10_FORWARD_FLOPS = 2 * (32 * 32 * 16 * 9 * (3 + 16) + 16 * 16 * 32 * 9 * (16 + 32) + 8 * 8 * 64 * 9 * (32 + 64)
                                 + 1024 * 250 + 2 * 250 * 250 + 250 * 10)


@pytest.mark.parametrize("model_name, image_shape, expected", [
    ("mlp", (28, 28, 1), MLP_MNIST_FORWARD_FLOPS),
    ("cnn", (32, 32, 3), CNN_CIFAR10_FORWARD_FLOPS),
])
def test_forward_flops_match_the_hand_count_of_the_spec_layers(train_bench, model_name, image_shape, expected):
    model = get_model(model_name, 10)
    params = model.init(jax.random.key(0), jnp.zeros((1, *image_shape)))["params"]
    assert train_bench.forward_flops(model, params, image_shape) == expected


def test_matmul_flops_counts_batched_dots_inside_nested_jaxprs(train_bench):
    # [4, 3, 5] @ [4, 5, 7] batched over 4, under a nested jit: 2 · 4·3·7 · 5 = 840.
    inner = jax.jit(lambda a, b: jnp.einsum("mij,mjk->mik", a, b))
    jaxpr = jax.make_jaxpr(lambda a, b: jnp.tanh(inner(a, b)))(jnp.ones((4, 3, 5)), jnp.ones((4, 5, 7))).jaxpr
    assert train_bench.matmul_flops(jaxpr) == 840


def test_small_run_writes_json_with_positive_finite_ratios(train_bench, tmp_path):
    path = tmp_path / "train.json"
    returned = train_bench.main(["--small", "--json", str(path)])
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(returned))
    small = train_bench.SMALL
    assert written["M"] == small["members"] and written["steps"] == small["steps"]
    assert written["device"] and written["jax"] == jax.__version__
    assert set(written["workloads"]) == {train_bench.WORKLOADS[m].name for m in small["models"]}
    row = written["workloads"]["mlp_mnist"]
    assert written["headline_workload"] == "mlp_mnist"
    assert row["batch_size"] == 32 and row["num_train"] == small["steps"] * 32  # SPEC §3 MNIST × MLP batch
    assert row["forward_flop_per_sample"] == MLP_MNIST_FORWARD_FLOPS
    assert row["train_step_gflop"] == pytest.approx(3 * MLP_MNIST_FORWARD_FLOPS * 32 / 1e9)
    assert _positive_finite(written["vmapped_over_sequential"])
    assert written["vmapped_over_sequential"] == row["vmapped_over_sequential"]
    assert row["vmapped_over_sequential"] == pytest.approx(row["sequential_s"] / row["vmapped_s"])
    for key in ("vmapped_s", "sequential_s", "compile_vmapped_s", "compile_sequential_s", "vmapped_gflops",
                "matmul_peak_gflops"):
        assert _positive_finite(row.get(key, written.get(key))), key
    if _torch_installed():
        assert _positive_finite(written["vmapped_over_torch"])
        assert written["vmapped_over_torch"] == pytest.approx(row["torch_s"] / row["vmapped_s"])
        assert written["torch_threads"] >= 1
    else:
        assert written["vmapped_over_torch"] is None and written["torch"] is None


def test_rejects_an_unknown_model(train_bench, capsys):
    with pytest.raises(SystemExit):
        train_bench.main(["--small", "--models", "mlp,resnet"])
    assert "'mlp,resnet'" in capsys.readouterr().err


@pytest.mark.slow
def test_probing_bench_tiny_writes_its_ratios(tmp_path):
    bench = _load("probing_bench")
    out = tmp_path / "probing.json"
    results = bench.main(["--dataset", "digits", "--num-train", "300", "--epochs", "1", "--layers", "fc1",
                          "--json", str(out)])
    assert json.loads(out.read_text()) == results and results["num_train"] == 300
    for key in ("per_probe_s", "engine_s", "peer_s", "speedup", "speedup_vs_peer"):
        assert _positive_finite(float(results[key])), key
    assert results["rows_identical"] is True and results["prediction_agreement"] == 1.0
    assert list(results["per_layer"]) == ["fc1"]


@pytest.mark.slow
def test_probing_bench_resumes_layer_by_layer(tmp_path, capsys):
    """--resume keeps the layers --json holds and times only the others; another workload is refused (exit 2)."""
    bench = _load("probing_bench")
    out = tmp_path / "probing.json"
    common = ["--dataset", "digits", "--epochs", "1", "--skip-peer", "--json", str(out)]
    first = bench.main([*common, "--num-train", "200", "--layers", "fc1"])
    both = bench.main([*common, "--num-train", "200", "--layers", "fc1,fc2", "--resume"])
    assert both["per_layer"]["fc1"] == first["per_layer"]["fc1"] and list(both["per_layer"]) == ["fc1", "fc2"]
    assert both["engine_s"] == round(sum(entry["engine_s"] for entry in both["per_layer"].values()), 2)
    with pytest.raises(SystemExit) as refused:
        bench.main([*common, "--num-train", "300", "--layers", "fc1", "--resume"])
    assert refused.value.code == 2 and "another workload" in capsys.readouterr().err
