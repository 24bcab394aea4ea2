"""Full probing of one member: each probe on its own (the registry) vs the engine vs scikit-learn + numpy.

Workload: one trained MNIST MLP member (``--run-dir`` of a trained run, else a short training of ``--epochs``
epochs), its hidden layers ``fc1 … fc4`` on ``--num-train`` training and all test images, every probe of the
registry (MASC at n = 0.99 and at 0.25, 0.5, 0.75, 1; linear, NCM, kNN, LDA, QDA, logistic regression) with both
subspace kinds (the member's corrupted labels and the true ones), fitted and scored on train and test. Timed three
ways, layer by layer (each layer's three back to back; the totals sum them), each once from the activations in
memory; first, untimed, the engine probes one layer of each width, which compiles every kernel that both jaxmem
ways call (so neither is charged for compilation, at the cost of one layer):

* ``per_probe``: every (layer, kind, probe) fitted on its own through the registry (``probe.fit`` / ``predict``);
* ``engine``: :func:`jaxmem.probes.engine.probe_source` (shared eigendecompositions, class moments, kNN search);
* ``peer``: what a user would write instead: scikit-learn ``LinearDiscriminantAnalysis``,
  ``QuadraticDiscriminantAnalysis``, ``KNeighborsClassifier`` (cosine, brute), ``LogisticRegression``,
  ``NearestCentroid`` (on unit rows), and numpy MASC and linear probe (per class ``X_cᵀX_c``,
  ``np.linalg.eigh``, one scoring matmul) fitted per probe and variance.

``rows_identical``: the engine's predictions equal the per-probe ones everywhere; ``prediction_agreement``: the
share of equal predictions over all rows (train and test of every layer, kind and probe).

    python benchmarks/probing_bench.py --run-dir runs/grid-mnist-mlp/p0.8-s0 --json benchmarks/results/probing_cpu.json
    python benchmarks/probing_bench.py --num-train 5000 --epochs 3     # reduced size

``--json`` is rewritten after each layer; ``--resume`` keeps the layers it holds for the same workload and times
the others, so the full-size run (≈ 30 min of an idle 2-core box per layer) can be spread over several sittings.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from jaxmem.config import MemberSpec, paper_train_spec
from jaxmem.data import load_dataset, member_train_labels, normalize, subset
from jaxmem.features import collect_activations, member_variables
from jaxmem.models import get_model
from jaxmem.probes.engine import array_source, probe_source
from jaxmem.probes.registry import PROBES, variant_variance, select_probes
from jaxmem.train import fit_members, load_member_params
from jaxmem.train.rundir import read_run_config

SENSITIVITY = (0.25, 0.5, 0.75, 1)
HIDDEN = ("fc1", "fc2", "fc3", "fc4")


def member_activations(args, layers):
    """({layer: (train [N, D], test [T, D])}, corrupted labels [N], true labels [N], test labels, classes, name)."""
    if args.run_dir is not None:
        spec, members = read_run_config(args.run_dir)
        member = members[args.member]
        dataset = load_dataset(member.dataset, args.data_dir)
        params, batch_stats = load_member_params(args.run_dir)
        pick = lambda tree: jax.tree.map(lambda a: a[args.member : args.member + 1], tree)  # noqa: E731
        params, batch_stats = pick(params), pick(batch_stats) if batch_stats else batch_stats
        source = str(args.run_dir)
        train_labels = member_train_labels(dataset, [member])[0]  # the run's own labels, then the first N
        dataset = subset(dataset, args.num_train, None)
    else:
        dataset = subset(load_dataset(args.dataset, args.data_dir), args.num_train, None)
        member = MemberSpec(args.dataset, "mlp", args.degree, 0)
        spec = paper_train_spec(args.dataset, "mlp")
        with tempfile.TemporaryDirectory() as out:
            fit_members(dataset, [member], spec, out, max_epochs=args.epochs, progress=False)
            params, batch_stats = load_member_params(out)
        source = f"{args.epochs} epochs on {len(dataset.y_train)} samples"
        train_labels = member_train_labels(dataset, [member])[0]
    model = get_model("mlp", dataset.num_classes, init=spec.init)
    variables = member_variables(params, batch_stats)
    x_train, x_test = normalize(dataset.name, dataset.x_train), normalize(dataset.name, dataset.x_test)
    acts = {split: collect_activations(model, variables, x, layers) for split, x in (("train", x_train),
                                                                                     ("test", x_test))}
    layers = {name: (np.asarray(acts["train"][name][0]), np.asarray(acts["test"][name][0])) for name in layers}
    return (layers, train_labels[: len(dataset.y_train)], dataset.y_train, dataset.y_test, dataset.num_classes,
            f"{member.dataset} mlp p={member.degree:g} ({source})")


def per_probe(layers, groupings, num_classes, probes):
    out = {}
    for layer, (train, test) in layers.items():
        for kind, labels in groupings.items():
            for name, probe in probes.items():
                state = probe.fit(train, labels, num_classes, key=jax.random.key(0))
                out[layer, kind, name] = (np.asarray(probe.predict(state, train)),
                                          np.asarray(probe.predict(state, test)))
    return out


def engine(layers, groupings, num_classes, probes):
    probed = probe_source(array_source(layers), groupings, num_classes, probes, memory_budget=float("inf"))
    return {key: (scored.train, scored.test) for key, scored in probed.scored.items()}


def _numpy_subspace(train, labels, num_classes, variance):
    """MASC (variance) or the linear probe (variance None): per class X_cᵀX_c, eigh, one scoring matmul."""
    bases, complements = [], []
    for c in range(num_classes):
        rows = train[labels == c].astype(np.float32)
        values, vectors = np.linalg.eigh(rows.T @ rows)
        values, vectors = values[::-1], vectors[:, ::-1]
        if variance is None:
            vector = vectors[:, :1] * np.sign(vectors[:, 0] @ train.mean(0) or 1)
            bases.append(vector)
            continue
        if isinstance(variance, int):
            k = min(variance, len(values))
        else:
            k = min(int(np.sum(np.cumsum(values) / values.sum() <= variance)) + 1, len(values))
        bases.append(vectors[:, :k])
        complements.append(k)
    if variance is None:
        kernel = np.concatenate(bases, 1)
        return lambda x: np.argmax(x @ kernel, 1)
    width = max(b.shape[1] for b in bases)
    stacked = np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in bases], 1)

    def predict(x):
        captured = ((x @ stacked) ** 2).reshape(len(x), num_classes, width).sum(-1)
        return np.argmax(captured / np.maximum((x**2).sum(1, keepdims=True), 1e-30), 1)

    return predict


def peer(layers, groupings, num_classes, names):
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis, QuadraticDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)

    estimators = {"ncm": NearestCentroid, "knn": lambda: KNeighborsClassifier(5, metric="cosine", algorithm="brute"),
                  "lda": LinearDiscriminantAnalysis, "qda": QuadraticDiscriminantAnalysis,
                  "logreg": lambda: LogisticRegression(max_iter=100)}
    out = {}
    for layer, (train, test) in layers.items():
        for kind, labels in groupings.items():
            y = labels[0]
            for name in names:
                if name == "masc" or name.startswith("masc("):
                    predict = _numpy_subspace(train, y, num_classes, 0.99 if name == "masc" else variant_variance(name))
                elif name == "linear":
                    predict = _numpy_subspace(train, y, num_classes, None)
                else:
                    estimator = estimators[name]()
                    prepare = unit if name == "ncm" else (lambda x: x)
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            estimator.fit(prepare(train), y)
                        predict = lambda x, e=estimator, p=prepare: e.predict(p(x))  # noqa: E731
                    except np.linalg.LinAlgError:  # scikit-learn refuses a rank-deficient QDA
                        predict = lambda x: np.full(len(x), -1)  # noqa: E731
                out[layer, kind, name] = (predict(train), predict(test))
    return out


def timed(function, *args):
    """The result and the seconds of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def warm_up(layers, groupings, num_classes, probes):
    """Probe one layer of each width through the engine, untimed: compiles the kernels of both jaxmem ways."""
    first = {}
    for name, (train, _) in layers.items():
        first.setdefault(train.shape[1], name)
    engine({name: layers[name] for name in first.values()}, groupings, num_classes, probes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a trained MNIST MLP run (its final parameters)")
    parser.add_argument("--member", type=int, default=0, help="which member of --run-dir")
    parser.add_argument("--dataset", default="mnist", help="without --run-dir: the dataset of the short training")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--degree", type=float, default=0.8, help="without --run-dir: the member's corruption")
    parser.add_argument("--epochs", type=int, default=3, help="without --run-dir: epochs of the short training")
    parser.add_argument("--num-train", type=int, default=60000, help="training samples probed")
    parser.add_argument("--layers", default=",".join(HIDDEN), help="hidden layers probed, comma-separated")
    parser.add_argument("--skip-peer", action="store_true", help="time jaxmem only")
    parser.add_argument("--json", type=Path, help="write the results here (after each layer)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the layers --json already holds for the same workload and time only the others")
    args = parser.parse_args(argv)

    requested = tuple(args.layers.split(","))
    try:
        previous = _previous_run(args) if args.resume else {}
    except ValueError as error:
        parser.error(str(error))
    done = previous.get("per_layer", {})
    todo = tuple(layer for layer in requested if layer not in done)
    per_layer = {layer: done[layer] for layer in requested if layer in done}
    if todo:
        layers, corrupted, true, _, num_classes, name = member_activations(args, todo)
        groupings = {"corrupted": corrupted[None], "true": true[None]}
        probes = select_probes(list(PROBES), sensitivity=SENSITIVITY)
        jax.block_until_ready(jax.numpy.zeros(1))
        warm_up(layers, groupings, num_classes, probes)
        for layer in todo:
            one = {layer: layers[layer]}
            engine_out, engine_s = timed(engine, one, groupings, num_classes, probes)
            single_out, single_s = timed(per_probe, one, groupings, num_classes, probes)
            equal = sum(int(np.sum(a == b)) for key in single_out for a, b in zip(single_out[key], engine_out[key]))
            total = sum(a.size for pair in single_out.values() for a in pair)
            per_layer[layer] = dict(width=int(one[layer][0].shape[1]), per_probe_s=round(single_s, 2),
                                    engine_s=round(engine_s, 2), equal=equal, total=total)
            if not args.skip_peer:
                per_layer[layer]["peer_s"] = round(timed(peer, one, groupings, num_classes, list(probes))[1], 2)
            results = _summary(args, name, len(corrupted), list(probes), per_layer)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=2) + "\n")
    else:
        results = _summary(args, previous["workload"], previous["num_train"], previous["probes"], per_layer)
    print(json.dumps(results, indent=2))
    return results


def _previous_run(args) -> dict:
    """What --json holds for this workload (the same run, member and number of samples); {} when nothing."""
    if args.json is None or not args.json.exists():
        return {}
    previous = json.loads(args.json.read_text())
    if previous.get("source") != _source(args) or previous.get("num_train") != args.num_train:
        raise ValueError(f"{args.json} holds another workload ({previous.get('source')}, "
                         f"{previous.get('num_train')} samples): no --resume, or another --json")
    return previous


def _source(args) -> str:
    return (f"{args.run_dir} member {args.member}" if args.run_dir is not None
            else f"{args.dataset} p={args.degree:g}, {args.epochs} epochs")


def _summary(args, name, num_train, probes, per_layer) -> dict:
    """Totals over the timed layers (each layer's three ways were timed back to back in one process)."""
    total = lambda key: sum(entry[key] for entry in per_layer.values())  # noqa: E731
    results = dict(workload=name, source=_source(args), num_train=num_train,
                   layers={layer: entry["width"] for layer, entry in per_layer.items()}, probes=probes,
                   per_probe_s=round(total("per_probe_s"), 2), engine_s=round(total("engine_s"), 2),
                   speedup=round(total("per_probe_s") / total("engine_s"), 2),
                   rows_identical=total("equal") == total("total"),
                   prediction_agreement=total("equal") / total("total"), device=jax.devices()[0].device_kind,
                   machine=platform.machine(), per_layer=per_layer)
    if all("peer_s" in entry for entry in per_layer.values()):
        results.update(peer_s=round(total("peer_s"), 2), speedup_vs_peer=round(total("peer_s") / total("engine_s"), 2))
    return results


if __name__ == "__main__":
    main()
