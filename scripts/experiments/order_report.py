"""The batch-order experiment's table, plot and tables for its page, from run directories of `jaxmem run`.

    python scripts/experiments/order_report.py --out docs/order-mnist-mlp fixed=runs/order/fixed-p0.8-n10000 \
        shuffle=runs/order/shuffle-p0.8-n10000

Writes OUT/results.csv.gz (every run's rows with a column ``order``: the one table), OUT/accuracy.png (running
and full-pass train accuracy on the corrupted labels and test accuracy per epoch, both orders), and prints the
Markdown tables of the page (curves at chosen epochs, the stop, every probe's best layer) derived from that table.
A run still in training (a run directory or its committed snapshot) shows its last epoch so far, marked so.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxmem.report import unmemorised_members  # noqa: E402
from jaxmem.results import read_rows  # noqa: E402

CURVES = (("train_running", "corrupted", "running, corrupted labels"),
          ("train", "corrupted", "full pass, corrupted labels"),
          ("test", "true", "test"))


def combined_table(runs: dict[str, Path]) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Every run's rows, ``order`` (the name given on the command line) and ``stop_on`` in front; and whether each
    run has stopped (its stop rule met, or its epoch cap reached)."""
    tables, stopped = [], {}
    for name, run_dir in runs.items():
        train = json.loads((run_dir / "config.json").read_text())["train"]
        rows = read_rows(run_dir / "results.csv")
        last = rows.loc[rows["probe"] == "model", "epoch"].max()
        stopped[name] = last >= train["max_epochs"] or not unmemorised_members(
            rows, train["target_train_accuracy"], train["stop_on"])
        tables.append(rows.assign(order=name, stop_on=train["stop_on"]))
    table = pd.concat(tables, ignore_index=True)
    return table[["order", "stop_on", *[c for c in table.columns if c not in ("order", "stop_on")]]], stopped


def model_curves(table: pd.DataFrame) -> pd.DataFrame:
    """``[order, epoch] -> accuracy (%)`` of the model per curve of :data:`CURVES`."""
    model = table[table["probe"] == "model"]
    columns = {}
    for split, against, label in CURVES:
        part = model[(model["split"] == split) & (model["scored_against"] == against)]
        columns[label] = part.set_index(["order", "epoch"])["accuracy"] * 100
    return pd.DataFrame(columns)


def plot_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4), sharey=True)
    for axis, (_, _, label) in zip(axes, CURVES):
        for order, part in curves[label].groupby(level="order"):
            axis.plot(part.index.get_level_values("epoch"), part.values, label=order)
        axis.set(title=label, xlabel="epoch")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def curve_markdown(curves: pd.DataFrame, epochs: list[int], stopped: dict[str, bool]) -> str:
    """The curves at chosen epochs and at each run's stop (or last epoch so far), one row per (order, epoch)."""
    last = curves.reset_index().groupby("order")["epoch"].max()
    rows = []
    for order in curves.index.get_level_values("order").unique():
        wanted = sorted({e for e in epochs if e <= last[order]} | {int(last[order])})
        for epoch in wanted:
            values = curves.loc[(order, epoch)]
            stop = (" (stop)" if stopped[order] else " (so far, in training)") if epoch == last[order] else ""
            rows.append(f"| {order} | {epoch}{stop} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    header = "| order | epoch | " + " | ".join(curves.columns) + " |"
    return "\n".join([header, "|---|---:|" + "---:|" * len(curves.columns), *rows])


def probe_markdown(table: pd.DataFrame) -> str:
    """Test accuracy (%) of every probe at its best hidden layer, per subspace kind, the orders side by side."""
    probes = table[(table["probe"] != "model") & (table["split"] == "test") & (table["layer"] != "input")]
    if probes.empty:
        return "(no probe rows yet: the runs have not reached their stop)"
    best = probes.loc[probes.groupby(["order", "probe", "subspace_labels"])["accuracy"].idxmax()]
    cell = best.assign(text=lambda d: (d["accuracy"] * 100).map("{:.2f}".format) + " (" + d["layer"] + ")")
    wide = cell.pivot(index=["subspace_labels", "probe"], columns="order", values="text")
    accuracy = best.pivot(index=["subspace_labels", "probe"], columns="order", values="accuracy") * 100
    orders = list(wide.columns)
    header = "| subspaces | probe | " + " | ".join(orders) + (" | difference |" if len(orders) == 2 else " |")
    lines = [header, "|---|---|" + "---:|" * (len(orders) + (len(orders) == 2))]
    for (kind, probe), row in wide.iterrows():
        difference = f" | {accuracy.loc[(kind, probe), orders[1]] - accuracy.loc[(kind, probe), orders[0]]:+.2f}" \
            if len(orders) == 2 else ""
        lines.append(f"| {kind} | {probe} | " + " | ".join(row[o] for o in orders) + difference + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR, one per order")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.csv.gz and accuracy.png")
    parser.add_argument("--epochs", default="1,20,50,100,120,150,200,250,300,400,500",
                        help="epochs shown in the curve table (each run's stop is added)")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.runs)
    table, stopped = combined_table({name: Path(path) for name, path in runs.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv.gz", index=False)
    curves = model_curves(table)
    plot_curves(curves, args.out / "accuracy.png", "MNIST MLP, p = 0.8: train accuracy by batch order")
    print(curve_markdown(curves, [int(e) for e in args.epochs.split(",")], stopped))
    print()
    print(probe_markdown(table))


if __name__ == "__main__":
    main()
