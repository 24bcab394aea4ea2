"""The batch-order experiment's table, plot and tables for its page, from run directories of `jaxmem run`.

    python scripts/experiments/order_report.py --out docs/order-mnist-mlp fixed=runs/order/fixed-p0.8-n10000 \
        shuffle=runs/order/shuffle-p0.8-n10000

Writes OUT/results.csv.gz (every run's rows with a column ``order``: the one table), OUT/accuracy.png (running
and full-pass train accuracy on the corrupted labels and test accuracy per epoch, both orders), OUT/dynamics.png
when the runs probed their kept epochs (MASC and the linear probe per hidden layer, corrupted-label subspaces), and
prints the Markdown tables of the page derived from that table: the curves at chosen epochs and the stop, every
probe's best layer at each run's stop, and the dynamics' best layer at the chosen epochs both runs kept. A run
still in training (a run directory or its committed snapshot) shows its last epoch so far, marked so.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxmem.results import read_rows  # noqa: E402
from jaxmem.runner import stop_epochs  # noqa: E402
from jaxmem.train import read_run_config  # noqa: E402

CURVES = (("train_running", "corrupted", "running, corrupted labels"),
          ("train", "corrupted", "full pass, corrupted labels"),
          ("test", "true", "test"))


def combined_table(runs: dict[str, Path]) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Every run's rows (with those of ``dynamics.csv`` beside a run in training), ``order`` (the name given on the
    command line) and ``stop_on`` in front; and whether each run has stopped (its stop rule met, or its epoch cap
    reached)."""
    tables, stopped = [], {}
    for name, run_dir in runs.items():
        spec, _ = read_run_config(run_dir)
        rows = read_rows(run_dir / "results.csv")
        if (run_dir / "dynamics.csv").exists():  # a run in training: its kept epochs' rows beside its table
            rows = pd.concat([rows, read_rows(run_dir / "dynamics.csv")], ignore_index=True).drop_duplicates()
        stopped[name] = stop_epochs(rows, spec) is not None
        tables.append(rows.assign(order=name, stop_on=spec.stop_on))
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


def _probe_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The probes' test rows (true labels) on the hidden layers."""
    return table[(table["probe"] != "model") & (table["split"] == "test") & (table["scored_against"] == "true")
                 & (table["layer"] != "input")]


def probe_markdown(table: pd.DataFrame, stopped: dict[str, bool]) -> str:
    """Test accuracy (%) of every probe at its best hidden layer at each stopped run's stop, per subspace kind,
    the orders side by side."""
    last = table[table["probe"] == "model"].groupby("order")["epoch"].max()
    probes = _probe_rows(table)
    probes = probes[[stopped[o] and e == last[o] for o, e in zip(probes["order"], probes["epoch"])]]
    if probes.empty:
        return "(no probe rows at a stop yet: the runs have not reached it)"
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


DYNAMICS_PROBES = ("masc", "linear")


def dynamics_curves(table: pd.DataFrame) -> pd.DataFrame:
    """``[order, probe, layer, epoch] -> accuracy (%)`` of the dynamics' probes (corrupted-label subspaces) at
    every epoch a run probed them."""
    rows = _probe_rows(table)
    rows = rows[rows["probe"].isin(DYNAMICS_PROBES) & (rows["subspace_labels"] == "corrupted")]
    return rows.set_index(["order", "probe", "layer", "epoch"])["accuracy"].sort_index() * 100


def plot_dynamics(curves: pd.Series, path: Path, title: str) -> None:
    layers = sorted(curves.index.get_level_values("layer").unique())
    figure, axes = plt.subplots(len(DYNAMICS_PROBES), len(layers), figsize=(3.4 * len(layers), 2.9 * 2),
                                sharex=True, sharey=True, squeeze=False)
    for row, probe in zip(axes, DYNAMICS_PROBES):
        for axis, layer in zip(row, layers):
            for order in curves.index.get_level_values("order").unique():
                if (order, probe, layer) in curves.droplevel("epoch").index:
                    part = curves.loc[(order, probe, layer)]
                    axis.plot(part.index, part.values, marker=".", label=order)
            axis.set(title=f"{probe}, {layer}")
            axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    for axis in axes[:, 0]:
        axis.set_ylabel("test accuracy (%)")
    axes[0, 0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def dynamics_markdown(curves: pd.Series, epochs: list[int]) -> str:
    """Per chosen epoch that every run kept: each dynamics probe's best layer in each order."""
    orders = list(curves.index.get_level_values("order").unique())
    kept = [set(curves.loc[order].index.get_level_values("epoch")) for order in orders]
    shared = sorted(set(epochs).intersection(*kept))
    header = "| epoch | " + " | ".join(f"{probe}, {order}" for probe in DYNAMICS_PROBES for order in orders) + " |"
    lines = [header, "|---:|" + "---:|" * (len(DYNAMICS_PROBES) * len(orders))]
    for epoch in shared:
        cells = []
        for probe in DYNAMICS_PROBES:
            for order in orders:
                at = curves.loc[order].xs(probe, level="probe").xs(epoch, level="epoch")
                cells.append(f"{at.max():.2f} ({at.idxmax()})" if len(at) else "–")
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_DIR, one per order")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.csv.gz and accuracy.png")
    parser.add_argument("--epochs", default="1,20,50,100,120,150,200,250,300,400,500",
                        help="epochs shown in the curve table (each run's stop is added)")
    parser.add_argument("--dynamics-epochs", default="0,2,10,20,40,80,120,160,200,240,280",
                        help="epochs shown in the dynamics table, of those every run kept")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.runs)
    table, stopped = combined_table({name: Path(path) for name, path in runs.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "results.csv.gz", index=False)
    curves = model_curves(table)
    degrees = ", ".join(f"{d:g}" for d in sorted(table["degree"].unique()))
    plot_curves(curves, args.out / "accuracy.png", f"MNIST MLP, p = {degrees}: train accuracy by batch order")
    print(curve_markdown(curves, [int(e) for e in args.epochs.split(",")], stopped))
    print()
    print(probe_markdown(table, stopped))
    dynamics = dynamics_curves(table)
    if dynamics.groupby(level="order").apply(lambda d: d.index.get_level_values("epoch").nunique()).min() > 1:
        plot_dynamics(dynamics, args.out / "dynamics.png",
                      f"MNIST MLP, p = {degrees}: probes on corrupted-label subspaces at the kept epochs, "
                      "by batch order")
        print()
        print(dynamics_markdown(dynamics, [int(e) for e in args.dynamics_epochs.split(",")]))


if __name__ == "__main__":
    main()
