"""MASC probe benchmark: jaxmem fast and exact modes vs the plain numpy reference, in one run.

Workload: one layer shaped like MLP-MNIST ``fc3`` — 60000 × 2048 train, 10000 × 2048 test, 10 overlapping classes
of ReLU features with a flat spectrum (n = 0.99 keeps most of the 2048 directions, as in trained ReLU layers).
Timed work is the whole probe: fit, then scoring of both the train and the test set. Classes overlap: 30 % of
each class's samples come from another class's distribution.

The roofline is the sum of the essential kernels, each timed alone at fast-mode precision: the per-class Gram
products X_cᵀX_c, the per-class eigendecompositions, and the scoring products against the kept columns.

    python benchmarks/probe_bench.py --json benchmarks/results/probe_cpu.json
    python benchmarks/probe_bench.py --small          # well under a minute on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmem import masc
from jaxmem.probes.gram import HIGHEST
from jaxmem.probes.masc import spectrum
from jaxmem.reference import numpy_masc as reference

FULL = dict(num_train=60000, num_test=10000, dim=2048, num_classes=10)
SMALL = dict(num_train=6000, num_test=1000, dim=256, num_classes=10)
TINY = dict(num_train=600, num_test=100, dim=32, num_classes=10)  # the device suite's --tiny mode (tests)


def make_layer(num_train, num_test, dim, num_classes, *, spread=0.7, overlap=0.3, seed=0):
    """ReLU features h = relu(z (S + R_g)) with z ~ N(0, I): shared S, per-class R_g.

    The generating class g is the sample's label with probability 1 − ``overlap`` and a uniformly drawn class
    otherwise, so the classes overlap and no classifier exceeds about 1 − overlap · (C − 1) / C accuracy.
    """
    keys = jax.random.split(jax.random.key(seed), 7)
    shared = jax.random.normal(keys[0], (dim, dim)) / np.sqrt(dim)
    own = jax.random.normal(keys[1], (num_classes, dim, dim)) * (spread / np.sqrt(dim))
    mixing = shared[None] + own  # [C, D, D]

    @jax.jit
    def draw(key, labels):
        swap_key, class_key, latent_key = jax.random.split(key, 3)
        swapped = jax.random.bernoulli(swap_key, overlap, labels.shape)
        source = jnp.where(swapped, jax.random.randint(class_key, labels.shape, 0, num_classes), labels)
        latent = jax.random.normal(latent_key, (labels.shape[0], dim))
        out = jnp.zeros((labels.shape[0], dim))
        for c in range(num_classes):  # C dense products instead of a per-sample gather of [D, D] matrices
            out = jnp.where((source == c)[:, None], latent @ mixing[c], out)
        return jax.nn.relu(out)

    y_train = np.asarray(jax.random.randint(keys[2], (num_train,), 0, num_classes), np.int32)
    y_test = np.asarray(jax.random.randint(keys[3], (num_test,), 0, num_classes), np.int32)
    return np.asarray(draw(keys[4], y_train)), y_train, np.asarray(draw(keys[5], y_test)), y_test


def timed(function, *args, repeat=1):
    """Best wall time of ``repeat`` calls (results blocked until ready) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = jax.block_until_ready(function(*args))
        best = min(best, time.perf_counter() - start)
    return best, result


def jaxmem_probe(x_train, y_train, x_test, num_classes, precision):
    """The whole probe: fit, then predictions for the train and the test set."""
    probe = masc.fit(x_train, y_train, num_classes, 0.99, precision)
    return probe, masc.predict(probe, x_train), masc.predict(probe, x_test)


def reference_probe(x_train, y_train, x_test, num_classes):
    subspaces = reference.fit(x_train, y_train, num_classes, 0.99)
    return subspaces, reference.predict(subspaces, x_train), reference.predict(subspaces, x_test)


def roofline(x_train, y_train, x_test, num_classes, probe, repeat):
    """Essential kernels alone, fast precision, best of ``repeat``: Gram products, eigh per class, scoring."""
    classes = [jnp.asarray(x_train[y_train == c]) for c in range(num_classes)]
    gram_fn = jax.jit(lambda xs: [jnp.matmul(x.T, x, precision=HIGHEST) for x in xs])
    gram_fn(classes)
    gram_time, grams = timed(gram_fn, classes, repeat=repeat)
    grams = jnp.stack(grams)
    jax.jit(spectrum)(grams)
    eigh_time, _ = timed(jax.jit(spectrum), grams, repeat=repeat)
    dim, width = probe.basis.shape[-2], probe.basis.shape[-1]
    stacked = jnp.asarray(np.random.default_rng(0).normal(size=(dim, num_classes * width)), jnp.float32)
    score_fn = jax.jit(lambda h, b: jnp.matmul(h, b, precision=HIGHEST))
    train, test = jnp.asarray(x_train), jnp.asarray(x_test)
    score_fn(train, stacked), score_fn(test, stacked)
    score_time = timed(score_fn, train, stacked, repeat=repeat)[0] + timed(score_fn, test, stacked, repeat=repeat)[0]
    return {"gram_s": gram_time, "eigh_s": eigh_time, "scoring_s": score_time}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="6000 × 256 workload, for a quick check")
    parser.add_argument("--tiny", action="store_true", help="600 × 32 workload: the code path only, in seconds")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fast-mode and roofline timings are the best of this many calls (exact and reference: one)")
    parser.add_argument("--skip-reference", action="store_true", help="time jaxmem only (no ratios)")
    args = parser.parse_args(argv)
    shape = TINY if args.tiny else SMALL if args.small else FULL
    x_train, y_train, x_test, y_test = make_layer(**shape)
    num_classes = shape["num_classes"]
    results = {"workload": shape, "device": str(jax.devices()[0]), "platform": jax.default_backend(),
               "jax": jax.__version__, "cpu": platform.processor() or platform.machine(), "repeat": args.repeat}

    for precision in ("fast", "exact"):
        start = time.perf_counter()
        jaxmem_probe(x_train, y_train, x_test, num_classes, precision)  # compile and warm up
        results[f"{precision}_first_call_s"] = time.perf_counter() - start
        results[f"{precision}_s"], (probe, train_pred, test_pred) = timed(
            jaxmem_probe, x_train, y_train, x_test, num_classes, precision,
            repeat=args.repeat if precision == "fast" else 1)
        results[f"{precision}_predictions"] = (np.asarray(train_pred), np.asarray(test_pred))
        results[f"{precision}_mean_components"] = float(masc.mean_components(probe))
        results[f"{precision}_test_accuracy"] = float(np.mean(np.asarray(test_pred) == y_test))
        if precision == "fast":
            results["scoring_width"] = int(probe.basis.shape[-1])
            flops = masc.fit_flops(shape["num_train"], shape["dim"], num_classes) + masc.scoring_flops(
                probe, shape["num_train"] + shape["num_test"])
            results["fast_gflop_per_s"] = flops / results["fast_s"] / 1e9
            results["roofline"] = roofline(x_train, y_train, x_test, num_classes, probe, args.repeat)
    results["roofline_s"] = sum(results["roofline"].values())
    results["roofline_fraction"] = results["roofline_s"] / results["fast_s"]

    if not args.skip_reference:
        results["reference_s"], (subspaces, train_ref, test_ref) = timed(
            reference_probe, x_train, y_train, x_test, num_classes)
        reference_pred = np.concatenate([train_ref, test_ref])
        results["reference_mean_components"] = float(reference.num_components(subspaces).mean())
        results["reference_test_accuracy"] = float(np.mean(test_ref == y_test))
        for precision in ("fast", "exact"):
            ours = np.concatenate(results[f"{precision}_predictions"])
            results[f"agreement_{precision}_vs_reference"] = float(np.mean(ours == reference_pred))
            results[f"speedup_{precision}_vs_reference"] = results["reference_s"] / results[f"{precision}_s"]
    for precision in ("fast", "exact"):
        del results[f"{precision}_predictions"]

    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results):
    w = results["workload"]
    print(f"MASC probe benchmark on {results['device']} (jax {results['jax']}): "
          f"{w['num_train']}×{w['dim']} train, {w['num_test']} test, {w['num_classes']} classes")
    rows = [("jaxmem fast", "fast_s"), ("jaxmem exact", "exact_s"), ("numpy reference", "reference_s"),
            ("roofline (kernels alone)", "roofline_s")]
    for name, key in rows:
        if key in results:
            print(f"  {name:<26} {results[key]:9.2f} s")
    r = results["roofline"]
    print(f"  roofline parts: gram {r['gram_s']:.2f} s, eigh {r['eigh_s']:.2f} s, scoring {r['scoring_s']:.2f} s "
          f"(scoring width {results['scoring_width']} of {w['dim']})")
    for key in ("speedup_fast_vs_reference", "speedup_exact_vs_reference", "agreement_fast_vs_reference",
                "agreement_exact_vs_reference", "roofline_fraction", "fast_gflop_per_s", "fast_mean_components",
                "fast_test_accuracy"):
        if key in results:
            print(f"  {key:<32} {results[key]:.4f}")


if __name__ == "__main__":
    main()
