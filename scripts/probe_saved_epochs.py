"""Probe a run's saved epochs while (or after) it trains, into a separate table: MASC + linear on the model's layers.

The paper-scale dynamics of docs/paper-mnist-mlp: each saved epoch (``RUN/epochs/<e>``) not yet in OUT_CSV is probed
with the corrupted-label subspaces (MASC at n = 0.99 and the linear probe) on every layer but ``input`` (which does
not change with training), by :func:`jaxmem.experiments.dynamics.probe_saved_epochs`; rows go to OUT_CSV, never to
the training run's own results.csv, so this can run beside the training process. Rerun it to pick up new epochs;
``--wait`` polls (from before the run has started) until the run's ``final`` parameters exist. ``--join``
appends OUT_CSV's rows that the run's results.csv lacks to it (only when nothing else writes the run), so that
``jaxmem dynamics`` skips those epochs.

    python scripts/probe_saved_epochs.py RUN_DIR OUT_CSV --data-dir "$JAXMEM_DATA_DIR" [--epochs 0,10,20] [--wait]
    python scripts/probe_saved_epochs.py RUN_DIR OUT_CSV --join
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from jaxmem.data import load_dataset
from jaxmem.experiments.dynamics import DYNAMICS_PROBING, probe_saved_epochs
from jaxmem.models import trained_probe_layers
from jaxmem.results import append_missing
from jaxmem.train.rundir import CONFIG_FILE, RESULTS_FILE, read_run_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_csv", type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", default=None, help="only these saved epochs, comma-separated (default: all)")
    parser.add_argument("--wait", action="store_true", help="keep polling until the run has finished")
    parser.add_argument("--join", action="store_true",
                        help="probe nothing: append OUT_CSV's rows that RUN_DIR/results.csv lacks to it")
    args = parser.parse_args(argv)
    if args.join:
        added = append_missing(args.run_dir / RESULTS_FILE, args.out_csv)
        print(f"{added} rows of {args.out_csv} joined into {args.run_dir / RESULTS_FILE}")
        return

    while args.wait and not (args.run_dir / CONFIG_FILE).exists():  # the training has not started yet
        time.sleep(10)
    spec, members = read_run_config(args.run_dir)
    dataset = load_dataset(members[0].dataset, args.data_dir)
    layers = trained_probe_layers(members[0].model)
    epochs = None if args.epochs is None else [int(v) for v in args.epochs.split(",")]
    while True:
        finished = (args.run_dir / "final").exists()
        probe_saved_epochs(dataset, members, spec, args.run_dir, epochs=epochs, layers=layers,
                           probing=DYNAMICS_PROBING.replace(subspaces=("corrupted",)), results_path=args.out_csv)
        if finished or not args.wait:
            break
        time.sleep(60)


if __name__ == "__main__":
    main()
