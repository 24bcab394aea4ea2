"""Probe a run's saved epochs while (or after) it trains, into a separate table: MASC + linear on the model's layers.

The paper-scale dynamics of docs/paper-mnist-mlp: each saved epoch (``RUN/epochs/<e>``) not yet in OUT_CSV is probed
with the corrupted-label subspaces (MASC at n = 0.99 and the linear probe) on every layer but ``input`` (which does
not change with training); rows go to OUT_CSV, never to the training run's own results.csv, so this can run beside
the training process. Rerun it to pick up new epochs; ``--wait`` polls until the run's ``final`` parameters exist.

    python scripts/probe_saved_epochs.py RUN_DIR OUT_CSV --data-dir "$JAXMEM_DATA_DIR" [--epochs 0,10,20] [--wait]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import load_dataset
from jaxmem.experiments.probing import probe_members
from jaxmem.features import member_variables
from jaxmem.models import get_model, probe_layers
from jaxmem.results import append_rows, read_rows
from jaxmem.train import load_member_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_csv", type=Path)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", default=None, help="only these saved epochs, comma-separated (default: all)")
    parser.add_argument("--wait", action="store_true", help="keep polling until the run has finished")
    args = parser.parse_args(argv)

    config = json.loads((args.run_dir / "config.json").read_text())
    spec, members = TrainSpec(**config["train"]), [MemberSpec(**m) for m in config["members"]]
    dataset = load_dataset(members[0].dataset, args.data_dir)
    model = get_model(members[0].model, dataset.num_classes, init=spec.init, dropout=spec.dropout)
    layers = [name for name in probe_layers(members[0].model) if name != "input"]
    while True:
        finished = (args.run_dir / "final").exists()
        done = set(read_rows(args.out_csv)["epoch"]) if args.out_csv.exists() else set()
        saved = sorted(int(p.name) for p in (args.run_dir / "epochs").glob("*") if p.name.isdigit())
        if args.epochs:
            saved = [e for e in saved if e in {int(v) for v in args.epochs.split(",")}]
        for epoch in (e for e in saved if e not in done):
            start = time.perf_counter()
            params, batch_stats = load_member_params(args.run_dir, epoch)
            rows = probe_members(model, members[0].model, member_variables(params, batch_stats), dataset, members,
                                 epoch=epoch, subspaces=("corrupted",), layers=layers, probes=("masc", "linear"))
            append_rows(args.out_csv, rows)
            print(f"epoch {epoch}: {len(rows)} rows in {time.perf_counter() - start:.0f} s", flush=True)
        if finished or not args.wait:
            break
        time.sleep(60)


if __name__ == "__main__":
    main()
