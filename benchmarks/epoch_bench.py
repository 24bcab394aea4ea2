"""Where the full-size MLP-MNIST epoch goes: the epoch inside ``jaxmem train`` vs its parts timed alone, one run.

One member of the paper preset (60000 samples, batch 32, SGD + momentum, PyTorch initialisers, p = 0.8) on the data
in ``--data-dir`` / ``$JAXMEM_DATA_DIR``. Timed, each after a warm-up call, best of ``--repeats``:

* ``steps``: the epoch's 1875 optimiser steps alone (the ``lax.scan`` of :func:`jaxmem.train.train_epoch`);
* ``evaluation``: the post-epoch pass alone (60000 train + 10000 test samples, :func:`jaxmem.train.evaluate`);
* ``member_epoch``: both in one jitted call, as the epoch program runs one member;
* ``member_epoch_vmapped``: the same under ``vmap`` with a member axis of one (what ``jaxmem train`` ran before a
  single member was taken out of the vmap on CPU: batched dots with a batch of one);
* ``fit_members_per_epoch``: wall time per epoch of :func:`jaxmem.train.fit_members` itself (checkpoints, rows),
  the difference of a 1-epoch and a (1 + n)-epoch run from scratch divided by n.

    python benchmarks/epoch_bench.py --data-dir "$JAXMEM_DATA_DIR" --json benchmarks/results/epoch_cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxmem.config import MemberSpec, paper_train_spec
from jaxmem.data import load_dataset, member_train_labels
from jaxmem.models import get_model
from jaxmem.train import device_data, fit_members, init_member, make_member_epoch, make_optimizer
from jaxmem.train.epoch import EVAL_BATCH_SIZE, epoch_compiler_options, train_epoch
from jaxmem.train.step import evaluate


def best_time(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="MNIST files (default: $JAXMEM_DATA_DIR)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fit-epochs", type=int, default=3, help="epochs of fit_members to time (first excluded)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    dataset = load_dataset("mnist", args.data_dir)
    member = MemberSpec("mnist", "mlp", 0.8, 0)
    spec = paper_train_spec("mnist", "mlp")
    model, tx = get_model("mlp", 10, init=spec.init), make_optimizer(spec)
    data = device_data(dataset)
    labels = jnp.asarray(member_train_labels(dataset, [member])[0])
    state = init_member(model, tx, jax.random.key(0), data.x_train[:1])
    key, epoch = jax.random.key(1), jnp.int32(1)
    options = epoch_compiler_options()
    num_train = len(dataset.y_train)

    steps = jax.jit(lambda s: train_epoch(model, tx, spec, s, labels, key, epoch, data.x_train, data.y_train),
                    compiler_options=options)
    evaluation = jax.jit(lambda s: evaluate(model, s, labels, data, batch_size=EVAL_BATCH_SIZE))
    member_epoch = make_member_epoch(model, tx, spec, num_train)
    single = jax.jit(member_epoch, compiler_options=options)
    vmapped = jax.jit(jax.vmap(member_epoch, in_axes=(0, 0, 0, None, None)), compiler_options=options)
    stacked = jax.tree.map(lambda leaf: leaf[None], (state, labels, key))
    seconds = {
        "steps": best_time(steps, state, repeats=args.repeats),
        "evaluation": best_time(evaluation, state, repeats=args.repeats),
        "member_epoch": best_time(single, state, labels, key, epoch, data, repeats=args.repeats),
        "member_epoch_vmapped": best_time(vmapped, *stacked, epoch, data, repeats=args.repeats),
    }
    def fit_seconds(epochs: int) -> float:  # from scratch: compile, epoch 0 evaluation, then `epochs` epochs
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            fit_members(dataset, [member], spec, out, max_epochs=epochs, progress=False)
            return time.perf_counter() - start

    one = fit_seconds(1)
    seconds["fit_members_per_epoch"] = (fit_seconds(1 + args.fit_epochs) - one) / args.fit_epochs

    results = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
               "machine": platform.processor() or platform.machine(), "jax": jax.__version__,
               "num_train": num_train, "steps_per_epoch": -(-num_train // spec.batch_size), "seconds": seconds}
    print(f"MLP-MNIST epoch, one member, {results['device']}:")
    for name, value in seconds.items():
        print(f"  {name:24s} {value:8.2f} s")
    print(f"  fit_members / (steps + evaluation) = "
          f"{seconds['fit_members_per_epoch'] / (seconds['steps'] + seconds['evaluation']):.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
