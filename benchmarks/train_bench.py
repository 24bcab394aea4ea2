"""Training benchmark: M members vmapped vs the same member program run M times, vs PyTorch.

Workloads: MLP on MNIST-shaped data (28×28×1, SGD + momentum 0.9, lr 1e-3, batch 32) and CNN on CIFAR-10-shaped
data (32×32×3, Adam 2e-4, batch 32), the models with the preset settings. The data are synthetic
(normalised Gaussian pixels, N = steps · batch train and N / 4 test samples), each member with its own labels.

The timed unit is one epoch of every member, as jaxmem runs it (:func:`jaxmem.train.make_member_epoch`): ``steps``
optimiser steps in a fixed order, then the per-epoch evaluation the stop rule needs (train accuracy vs the
member's and the true labels, train loss, test accuracy).

* **vmapped**: :func:`jaxmem.train.make_epoch_fn` as jaxmem runs it, all M members in one jitted call, with the
  backend's default member chunking (:func:`jaxmem.train.default_member_chunk`: one ``vmap`` over all members on
  an accelerator, member-major chunks of one on CPU). The pure ``vmap`` over all M is also timed on CPU
  (``pure_vmap_*``), to show why CPU does not use it.
* **sequential**: the un-vmapped member epoch under ``jax.jit`` (same XLA options), called once per member.
* **torch**: the same networks in PyTorch (``zero_grad``, forward, ``cross_entropy``, ``backward``, ``step``,
  then the same evaluation under ``no_grad``), members one after another: what a user would otherwise write.
  Skipped, with a note, when PyTorch is not installed.

Throughput is member-samples per second (M · N / epoch time); the ratios compare throughputs. Compile time is
reported apart; each side's time is the best of ``--repeats`` epochs. The roofline is matmul-only: the
dot/conv flops of one forward pass counted from its jaxpr, × 3 for a training step (forward + backward) and × 1
for evaluation, divided by the time and set against a large jitted matmul on the same device.

    python benchmarks/train_bench.py --json benchmarks/results/train_cpu.json
    python benchmarks/train_bench.py --small          # a few seconds on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from jaxmem.config import TrainSpec, paper_train_spec
from jaxmem.models import get_model
from jaxmem.train import (DeviceData, default_member_chunk, epoch_compiler_options, init_members, make_epoch_fn,
                          make_member_epoch, make_optimizer)

FULL = dict(members=8, steps=100, repeats=3, models=("mlp", "cnn"), matmul_size=2048)
SMALL = dict(members=2, steps=8, repeats=1, models=("mlp",), matmul_size=512)


class Workload(NamedTuple):
    """A (dataset, model) pair: its model and the preset training settings."""

    name: str
    model: str
    dataset: str
    image_shape: tuple[int, int, int]  # (H, W, C)
    num_classes: int


WORKLOADS = {
    "mlp": Workload("mlp_mnist", "mlp", "mnist", (28, 28, 1), 10),
    "cnn": Workload("cnn_cifar10", "cnn", "cifar10", (32, 32, 3), 10),
}


def synthetic_data(workload: Workload, num_train: int, num_test: int, members: int,
                   seed: int = 0) -> tuple[DeviceData, np.ndarray]:
    """``(data, labels [M, N] int32)`` on the host: standard-normal images (as if normalised), random true
    labels, and each member's own random labels."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.standard_normal((n, *workload.image_shape), dtype=np.float32)
    classes = lambda *shape: rng.integers(0, workload.num_classes, shape, dtype=np.int32)
    data = DeviceData(x_train=images(num_train), y_train=classes(num_train), x_test=images(num_test),
                      y_test=classes(num_test))
    return data, classes(members, num_train)


# ----------------------------------------------------------------------------------------------------------
# Roofline (matmul-only)
# ----------------------------------------------------------------------------------------------------------


def matmul_flops(jaxpr: jex.Jaxpr) -> int:
    """Flops (2 per multiply-add) of every ``dot_general`` and ``conv_general_dilated`` in ``jaxpr``, nested
    jaxprs included; everything else (bias, ReLU, pooling, softmax) is left out."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            outputs = math.prod(eqn.outvars[0].aval.shape)
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            total += 2 * outputs * math.prod(lhs_shape[d] for d in lhs_contracting)
        elif eqn.primitive.name == "conv_general_dilated":
            outputs = math.prod(eqn.outvars[0].aval.shape)
            kernel_shape = eqn.invars[1].aval.shape
            kernel_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
            total += 2 * outputs * math.prod(kernel_shape[d] for d in kernel_spec[1:])
        total += sum(matmul_flops(sub) for sub in jex.jaxprs_in_params(eqn.params))
    return total


def forward_flops(model, params, image_shape: tuple[int, int, int]) -> int:
    """Matmul flops of one sample's forward pass (eval mode)."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    return matmul_flops(jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, x).jaxpr)


def matmul_peak_gflops(size: int, repeats: int = 3) -> float:
    """GFLOP/s of a jitted ``[size, size] @ [size, size]`` float32 product: the device's matmul ceiling."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    product(a, a).block_until_ready()
    seconds = min(_seconds(lambda: product(a, a).block_until_ready()) for _ in range(repeats))
    return 2 * size ** 3 / seconds / 1e9


def _seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def best_seconds(run_epoch: Callable[[jax.Array], object], epochs: list[jax.Array]) -> float:
    """Best wall time of ``run_epoch(epoch)`` over ``epochs``, its outputs blocked until ready."""
    return min(_seconds(lambda: jax.block_until_ready(run_epoch(epoch))) for epoch in epochs)


# ----------------------------------------------------------------------------------------------------------
# The three sides
# ----------------------------------------------------------------------------------------------------------


def bench_jax(workload: Workload, spec: TrainSpec, data: DeviceData, labels: np.ndarray, repeats: int) -> dict:
    """Compile and best epoch times of the vmapped program and of the jitted member program run M times."""
    members, num_train = labels.shape
    model, tx = get_model(workload.model, workload.num_classes), make_optimizer(spec)
    eval_batch_size = data.x_test.shape[0]
    data = jax.device_put(data)
    init_keys = jax.random.split(jax.random.key(0), members)
    train_keys = jax.random.split(jax.random.key(1), members)
    labels = jnp.asarray(labels)
    epochs = [jnp.asarray(e, jnp.int32) for e in range(1, repeats + 1)]

    initial = init_members(model, tx, init_keys, data.x_train[:1])  # each side trains its own copy (donated)

    def time_program(member_chunk):
        """Compile time and best epoch time of jaxmem's epoch program, on its own copy of the members."""
        state = jax.tree.map(jnp.copy, initial)
        program = make_epoch_fn(model, tx, spec, num_train, eval_batch_size=eval_batch_size, member_chunk=member_chunk)
        start = time.perf_counter()
        compiled = program.lower(state, labels, train_keys, epochs[0], data).compile()
        compile_s = time.perf_counter() - start

        def epoch_fn(epoch):
            nonlocal state
            state, metrics = compiled(state, labels, train_keys, epoch, data)
            return state, metrics

        return compile_s, best_seconds(epoch_fn, epochs)

    out = dict(zip(("compile_vmapped_s", "vmapped_s"), time_program(None)))
    out["member_chunk"] = default_member_chunk(members)
    if out["member_chunk"] != members:
        out["pure_vmap_s"] = time_program(members)[1]

    member_fn = jax.jit(make_member_epoch(model, tx, spec, num_train, eval_batch_size=eval_batch_size),
                        donate_argnums=0, compiler_options=epoch_compiler_options())
    states = [jax.tree.map(lambda leaf: leaf[m], initial) for m in range(members)]
    member_labels = [labels[m] for m in range(members)]
    member_keys = [train_keys[m] for m in range(members)]
    start = time.perf_counter()
    single = member_fn.lower(states[0], member_labels[0], member_keys[0], epochs[0], data).compile()
    out["compile_sequential_s"] = time.perf_counter() - start

    def sequential_epoch(epoch):
        outputs = [single(states[m], member_labels[m], member_keys[m], epoch, data) for m in range(members)]
        states[:] = [member_state for member_state, _ in outputs]
        return outputs

    out["sequential_s"] = best_seconds(sequential_epoch, epochs)
    out["forward_flop_per_sample"] = forward_flops(model, states[0].params, workload.image_shape)
    return out


def _torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_model(torch, workload: Workload):
    """The network in PyTorch (default initialisation); the CNN takes NCHW, the MLP NHWC."""
    if workload.model == "cnn":
        from jaxmem.reference.torch_cnn import TorchCNN
        return TorchCNN(workload.image_shape, workload.num_classes)
    widths = (math.prod(workload.image_shape), 128, 512, 2048, 2048)
    layers = [torch.nn.Flatten()]
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], workload.num_classes))


def _logits(model, x):
    """Logits of either network (:class:`~jaxmem.reference.torch_cnn.TorchCNN` also returns its activations)."""
    output = model(x)
    return output[0] if isinstance(output, tuple) else output


def bench_torch(torch, workload: Workload, spec: TrainSpec, data: DeviceData, labels: np.ndarray,
                repeats: int) -> dict:
    """Best time of one epoch of every member, members one after another, plain PyTorch loop (on CUDA when torch
    has it)."""
    members, num_train = labels.shape
    device = "cuda" if torch.cuda.is_available() else "cpu"
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    as_tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device)
    as_input = lambda x: as_tensor(x.transpose(0, 3, 1, 2) if workload.model == "cnn" else x)
    x_train, x_test = as_input(data.x_train), as_input(data.x_test)
    y_train, y_test = as_tensor(data.y_train.astype(np.int64)), as_tensor(data.y_test.astype(np.int64))
    member_labels = [as_tensor(labels[m].astype(np.int64)) for m in range(members)]
    eval_batch_size = x_test.shape[0]

    def optimizer(model):
        if spec.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=spec.learning_rate, momentum=spec.momentum)
        return torch.optim.Adam(model.parameters(), lr=spec.learning_rate)

    def epoch(model, opt, own_labels):
        model.train()
        for start in range(0, num_train, spec.batch_size):
            opt.zero_grad(set_to_none=True)
            logits = _logits(model, x_train[start:start + spec.batch_size])
            loss = torch.nn.functional.cross_entropy(logits, own_labels[start:start + spec.batch_size])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            counts = torch.zeros(4, device=device)
            for start in range(0, num_train, eval_batch_size):
                logits = _logits(model, x_train[start:start + eval_batch_size])
                predicted, own = logits.argmax(1), own_labels[start:start + eval_batch_size]
                counts[0] += (predicted == own).sum()
                counts[1] += (predicted == y_train[start:start + eval_batch_size]).sum()
                counts[2] += torch.nn.functional.cross_entropy(logits, own, reduction="sum")
            logits = _logits(model, x_test)
            counts[3] += (logits.argmax(1) == y_test).sum()
        return counts.tolist()

    torch.manual_seed(0)
    pairs = [(model, optimizer(model)) for model in (torch_model(torch, workload).to(device) for _ in range(members))]
    warm_up = torch_model(torch, workload).to(device)
    epoch(warm_up, optimizer(warm_up), member_labels[0])
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for (model, opt), own_labels in zip(pairs, member_labels):
            epoch(model, opt, own_labels)
        synchronize()
        times.append(time.perf_counter() - start)
    return {"torch_s": min(times), "torch_device": device}


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------


def bench_workload(workload: Workload, members: int, steps: int, repeats: int, torch) -> dict:
    """All sides for one workload: times, member-samples/s, ratios and the matmul-only roofline."""
    spec = paper_train_spec(workload.dataset, workload.model)
    num_train = steps * spec.batch_size
    num_test = num_train // 4
    data, labels = synthetic_data(workload, num_train, num_test, members)
    row = {"model": workload.model, "image_shape": list(workload.image_shape), "num_classes": workload.num_classes,
           "optimizer": spec.optimizer, "learning_rate": spec.learning_rate, "batch_size": spec.batch_size,
           "steps": steps, "num_train": num_train, "num_test": num_test, "eval_batch_size": num_test}
    row.update(bench_jax(workload, spec, data, labels, repeats))
    if torch is not None:
        row.update(bench_torch(torch, workload, spec, data, labels, repeats))
    sides = [side for side in ("vmapped", "sequential", "torch") if f"{side}_s" in row]

    forward = row["forward_flop_per_sample"]
    row["train_step_gflop"] = 3 * forward * spec.batch_size / 1e9  # one member, forward + backward
    row["epoch_gflop"] = members * forward * (3 * num_train + num_train + num_test) / 1e9  # all members
    for side in sides:
        row[f"{side}_member_samples_per_s"] = members * num_train / row[f"{side}_s"]
        row[f"{side}_gflops"] = row["epoch_gflop"] / row[f"{side}_s"]
    row["vmapped_over_sequential"] = row["sequential_s"] / row["vmapped_s"]
    if "pure_vmap_s" in row:
        row["pure_vmap_over_sequential"] = row["sequential_s"] / row["pure_vmap_s"]
    row["vmapped_over_torch"] = row["torch_s"] / row["vmapped_s"] if "torch_s" in row else None
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true",
                        help=f"M = {SMALL['members']}, {SMALL['steps']} steps, {','.join(SMALL['models'])} only, "
                             f"{SMALL['repeats']} repeat: a few seconds")
    parser.add_argument("--members", type=int, help=f"M, members trained together (default {FULL['members']})")
    parser.add_argument("--steps", type=int,
                        help=f"optimiser steps per epoch; N = steps · batch (default {FULL['steps']})")
    parser.add_argument("--repeats", type=int, help=f"timed epochs per side, best kept (default {FULL['repeats']})")
    parser.add_argument("--models", help=f"comma-separated subset of {','.join(WORKLOADS)} "
                                         f"(default {','.join(FULL['models'])})")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    settings = dict(SMALL if args.small else FULL)
    for name in ("members", "steps", "repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
        settings[name] = settings[name] if value is None else value
    if args.models is not None:
        settings["models"] = tuple(name.strip() for name in args.models.split(",") if name.strip())
        unknown = [name for name in settings["models"] if name not in WORKLOADS]
        if unknown or not settings["models"]:
            parser.error(f"--models must be a comma-separated subset of {','.join(WORKLOADS)}, got {args.models!r}")

    torch = _torch()
    torch_note = None
    if torch is not None and jax.default_backend() != "cpu" and not torch.cuda.is_available():
        torch, torch_note = None, "PyTorch has no CUDA here: the torch side was skipped on this accelerator"
    results = {"M": settings["members"], "steps": settings["steps"], "repeats": settings["repeats"],
               "device": str(jax.devices()[0]), "platform": jax.default_backend(), "jax": jax.__version__,
               "torch": torch.__version__ if torch else None,
               "torch_threads": torch.get_num_threads() if torch else None,
               "torch_interop_threads": torch.get_num_interop_threads() if torch else None,
               "cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
               "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "matmul_size": settings["matmul_size"],
               "matmul_peak_gflops": matmul_peak_gflops(settings["matmul_size"]),
               "notes": ["one epoch = `steps` optimiser steps + the per-epoch evaluation (train and test "
                         "accuracies, train loss) on every side; member-samples/s = M · N / epoch time"]}
    if torch is None:
        results["notes"].append(torch_note or "PyTorch is not installed: the torch side was skipped")
    results["workloads"] = {}
    for model in settings["models"]:
        workload = WORKLOADS[model]
        row = bench_workload(workload, settings["members"], settings["steps"], settings["repeats"], torch)
        row["vmapped_fraction_of_peak"] = row["vmapped_gflops"] / results["matmul_peak_gflops"]
        results["workloads"][workload.name] = row
    headline = "mlp_mnist" if "mlp_mnist" in results["workloads"] else next(iter(results["workloads"]))
    results["headline_workload"] = headline
    results["batch_size"] = results["workloads"][headline]["batch_size"]
    results["vmapped_over_sequential"] = results["workloads"][headline]["vmapped_over_sequential"]
    results["vmapped_over_torch"] = results["workloads"][headline]["vmapped_over_torch"]

    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results):
    torch = f"torch {results['torch']}, {results['torch_threads']} threads" if results["torch"] else "no torch"
    print(f"Training benchmark on {results['device']} (jax {results['jax']}; {torch}; {results['cpu_count']} "
          f"cores): M = {results['M']} members, best of {results['repeats']} epochs of {results['steps']} steps "
          f"+ evaluation")
    print(f"  {'':<12} {'member-samples/s':^32}  {'ratios':^16}  {'compile s':^11}  {'GFLOP/s (matmul only)':^22}")
    print(f"  {'workload':<12} {'vmapped':>10} {'sequential':>10} {'torch':>10}  {'vm/seq':>7} {'vm/torch':>8}  "
          f"{'vm':>5} {'seq':>5}  {'vm':>6} {'seq':>6} {'torch':>8}")
    dash = lambda value, spec: "—".rjust(int(spec.split(".")[0])) if value is None else format(value, spec)
    for name, row in results["workloads"].items():
        print(f"  {name:<12} {row['vmapped_member_samples_per_s']:10.0f} {row['sequential_member_samples_per_s']:10.0f} "
              f"{dash(row.get('torch_member_samples_per_s'), '10.0f')}  {row['vmapped_over_sequential']:7.2f} "
              f"{dash(row['vmapped_over_torch'], '8.2f')}  {row['compile_vmapped_s']:5.1f} "
              f"{row['compile_sequential_s']:5.1f}  {row['vmapped_gflops']:6.1f} {row['sequential_gflops']:6.1f} "
              f"{dash(row.get('torch_gflops'), '8.1f')}")
    print(f"  matmul ceiling ({results['matmul_size']}² jitted matmul): {results['matmul_peak_gflops']:.1f} GFLOP/s; "
          + ", ".join(f"{name} vmapped reaches {row['vmapped_fraction_of_peak']:.0%} of it, "
                      f"{row['train_step_gflop']:.3f} GFLOP per member step"
                      for name, row in results["workloads"].items()))
    for name, row in results["workloads"].items():
        if "pure_vmap_over_sequential" in row:
            print(f"  {name}: member chunk {row['member_chunk']} (backend default); a pure vmap over all "
                  f"{results['M']} members runs at {row['pure_vmap_over_sequential']:.2f}× sequential here")
    print("  On CPU the ratios are what counts; absolute times mean something only on a GPU.")
    for note in results["notes"][1:]:
        print(f"  note: {note}")


if __name__ == "__main__":
    main()
