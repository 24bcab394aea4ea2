"""Every figure of the report, drawn with matplotlib (imported only when a figure is drawn, on the Agg backend)
from a results, labels or edit-then-continue table and saved as a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem.config import registry_order
from jaxmem.report.tables import (GROUP, TRAINING_CURVES, _label_method_order, _probe_test_rows, is_sensitivity,
                                  seed_curves, summary)
from jaxmem.results import final_model_rows


def _headline(probes):
    """Probe rows with corrupted- or true-label subspaces, without the sensitivity variants."""
    return probes[probes["subspace_labels"].isin(["corrupted", "true"]) & ~probes["probe"].map(is_sensitivity)]


def plot_layers(df, path: str | Path) -> Path:
    """Test accuracy vs layer for one (dataset, model): a panel per (probe, subspace kind), a line per degree, the
    model's final test accuracy dashed in the same colour. Sensitivity variants and the clean variant are left out
    (they are in the tables)."""
    plt = _pyplot()
    probes = _headline(_probe_test_rows(df))
    model = final_model_rows(df)
    model = model[model["split"] == "test"].groupby("degree")["accuracy"].mean()
    kinds = sorted(dict.fromkeys(zip(probes["probe"], probes["subspace_labels"])),
                   key=lambda pair: (pair[1], registry_order(pair[0])))
    layers = list(dict.fromkeys(probes["layer"]))
    degrees = sorted(probes["degree"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(degrees)))
    columns = min(4, len(kinds))
    rows_of_panels = -(-len(kinds) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.4 * rows_of_panels), squeeze=False,
                             sharey=True)
    for ax, (probe, kind) in zip(axes.flat, kinds):
        rows = probes[(probes["probe"] == probe) & (probes["subspace_labels"] == kind)]
        means = rows.groupby(["degree", "layer"])["accuracy"].mean()
        for color, degree in zip(colors, degrees):
            ys = [means.get((degree, layer), np.nan) for layer in layers]
            ax.plot(layers, ys, "o-", color=color, label=f"p = {degree:g}")
            if degree in model.index:
                ax.axhline(model[degree], color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{probe}, {kind} labels", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (dashed: model)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_training(df, path: str | Path) -> Path:
    """The model's accuracy vs epoch for one (dataset, model), one panel per degree (mean over seeds): train
    accuracy against the member's own labels, both the full pass after each epoch and the running one counted
    during it, and test accuracy."""
    plt = _pyplot()
    model = df[df["probe"] == "model"]
    degrees = sorted(model["degree"].unique())
    fig, axes = plt.subplots(1, len(degrees), figsize=(4.5 * len(degrees), 3.6), squeeze=False, sharey=True)
    for ax, degree in zip(axes[0], degrees):
        rows = model[model["degree"] == degree]
        for split, against, name in TRAINING_CURVES:
            curve = rows[(rows["split"] == split) & (rows["scored_against"] == against)].groupby("epoch")[
                "accuracy"].mean()
            ax.plot(curve.index, curve.values, "o-", markersize=3, label=name)
        ax.set_title(f"p = {degree:g}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_degrees(df, path: str | Path) -> Path:
    """Best-layer test accuracy vs corruption degree for one (dataset, model): the model, every probe with
    corrupted-label subspaces and MASC with true-label ones."""
    plt = _pyplot()
    table = _headline(summary(df))
    table = table[(table["subspace_labels"] == "corrupted") | (table["probe"] == "masc")]
    fig, ax = plt.subplots(figsize=(6, 4))
    model = table.drop_duplicates("degree").sort_values("degree")
    ax.plot(model["degree"], model["model_test"], "k--o", label="model")
    for (probe, kind), rows in table.groupby(["probe", "subspace_labels"]):
        rows = rows.sort_values("degree")
        ax.errorbar(rows["degree"], rows["best_test"], yerr=rows["best_test_std"].fillna(0), marker="o",
                    capsize=3, label=f"{probe} ({kind}), best layer")
    ax.set_xlabel("corruption degree p")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_dynamics(df, path: str | Path) -> Path:
    """Test accuracy vs epoch (mean over seeds, :func:`seed_curves`): a row of panels per degree, a panel per probe
    probed at more than one epoch, a line per layer (corrupted-label subspaces), the model's curve dashed."""
    plt = _pyplot()
    probes = _probe_test_rows(df, last_epoch=False)
    probes = probes[(probes["subspace_labels"] == "corrupted") & (probes["layer"] != "output")]  # not "edited"
    curves = seed_curves(df, probes, ["degree", "probe", "layer"])
    points = curves.groupby(["degree", "probe"])["epoch"].nunique()
    curves = curves.set_index(["degree", "probe"]).loc[points[points > 1].index].reset_index()
    model = seed_curves(df, df[(df["probe"] == "model") & (df["split"] == "test")], ["degree"])
    degrees = sorted((model if curves.empty else curves)["degree"].unique())
    names = sorted(curves["probe"].unique(), key=registry_order) or ["model"]  # no probe curve: the model alone
    fig, axes = plt.subplots(len(degrees), len(names), figsize=(4.5 * len(names), 3.2 * len(degrees)),
                             squeeze=False, sharex=True, sharey=True)
    for row, degree in zip(axes, degrees):
        for ax, probe in zip(row, names):
            panel = curves[(curves["degree"] == degree) & (curves["probe"] == probe)]
            for layer, curve in panel.groupby("layer", sort=False):
                ax.plot(curve["epoch"], curve["accuracy"], "o-", markersize=2, label=layer)
            curve = model[model["degree"] == degree]
            ax.plot(curve["epoch"], curve["accuracy"], "k--", label="model")
            ax.set_title(f"p = {degree:g}, " + ("the model" if probe == "model" else f"{probe} (corrupted labels)"),
                         fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        row[0].set_ylabel("test accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    return _save(plt, fig, path)


def plot_label_pr(df, path: str | Path) -> Path:
    """Precision–recall curves of the label rankings, one panel per (dataset, model, degree): interpolated
    precision at each recall level (mean over seeds) per method, its flagged set as a marker on the same colour."""
    plt = _pyplot()
    curves = df[df["split"].str.startswith("rank_precision@")].assign(
        recall=lambda r: r["split"].str.removeprefix("rank_precision@").astype(float))
    flags = df[df["split"].isin(["flag_precision", "flag_recall"])].pivot_table(
        index=GROUP + ["probe"], columns="split", values="accuracy", aggfunc="mean")
    panels = curves.groupby(GROUP)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False, sharey=True)
    methods = sorted(curves["probe"].unique(), key=_label_method_order)
    colors = dict(zip(methods, plt.cm.tab10(np.arange(len(methods)) % 10)))
    for ax, (panel, part) in zip(axes[0], panels):
        for method in methods:
            curve = part[part["probe"] == method].groupby("recall")["accuracy"].mean()
            if curve.empty:
                continue
            ax.plot(curve.index, curve.values, "-", color=colors[method], label=method)
            if (*panel, method) in flags.index:
                point = flags.loc[(*panel, method)]
                ax.plot(point["flag_recall"], point["flag_precision"], "o", color=colors[method])
        ax.set_title(f"{panel[0]} × {panel[1]}, p = {panel[2]:g}", fontsize=9)
        ax.set_xlabel("recall of the wrong labels")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("precision (dots: flagged sets)")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, path)


def plot_edit_continue(df, path: str | Path) -> Path:
    """Edit then continue: accuracy vs epoch, edited (solid) vs unedited (dashed), one panel per degree."""
    plt = _pyplot()
    curves = [("test", "true", "test"), ("train", "corrupted", "train vs corrupted"),
              ("train_flipped", "corrupted", "flipped vs corrupted"), ("train_unflipped", "true", "unflipped")]
    degrees = sorted(df["degree"].unique())
    fig, axes = plt.subplots(1, len(degrees), figsize=(5 * len(degrees), 3.8), squeeze=False, sharey=True)
    colors = plt.cm.tab10(np.arange(len(curves)))
    for ax, degree in zip(axes[0], degrees):
        rows = df[df["degree"] == degree]
        for color, (split, against, name) in zip(colors, curves):
            part = rows[(rows["split"] == split) & (rows["scored_against"] == against)]
            for branch, style in (("edited", "-"), ("unedited", "--")):
                curve = part[part["probe"] == branch].groupby("epoch")["accuracy"].mean()
                ax.plot(curve.index, curve.values, style, color=color,
                        label=f"{name} ({branch})" if degree == degrees[-1] else None)
        ax.set_title(f"p = {degree:g}: edited (solid) vs unedited (dashed)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=6)
    return _save(plt, fig, path)
