"""Tables and plots derived from a results table alone (SPEC §8).

``summary`` is the paper-style table: per (dataset, model, degree), the model's final test accuracy and, per
probe and subspace kind, the best layer's test accuracy (mean ± std over seeds; the layer chosen by the mean).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

GROUP = ["dataset", "model", "degree"]


def final_model_rows(df):
    """The model's own rows at each member's last recorded epoch."""
    model = df[df["probe"] == "model"]
    last = model.groupby("member")["epoch"].transform("max")
    return model[model["epoch"] == last]


def _probe_test_rows(df):
    return df[(df["probe"] != "model") & (df["split"] == "test") & (df["scored_against"] == "true")]


def summary(df):
    """One row per (dataset, model, degree[, probe, subspace_labels]) with mean/std test accuracy and best layer."""
    import pandas as pd

    model = final_model_rows(df)
    model = model[model["split"] == "test"]
    model_stats = (model.groupby(GROUP)["accuracy"].agg(["mean", "std", "count"])
                   .rename(columns={"mean": "model_test", "std": "model_test_std", "count": "seeds"}).reset_index())
    probes = _probe_test_rows(df)
    keys = GROUP + ["probe", "subspace_labels"]
    per_layer = probes.groupby(keys + ["layer"])["accuracy"].agg(["mean", "std"]).reset_index()
    best = per_layer.loc[per_layer.groupby(keys)["mean"].idxmax()]
    best = best.rename(columns={"mean": "best_test", "std": "best_test_std", "layer": "best_layer"})
    if model_stats.empty:
        return best.reset_index(drop=True)
    return pd.merge(model_stats, best, on=GROUP, how="outer").sort_values(keys).reset_index(drop=True)


def _mean_std(mean, std) -> str:
    if mean != mean:  # NaN
        return "–"
    return f"{100 * mean:.1f}" + ("" if std != std else f" ± {100 * std:.1f}")


def summary_markdown(df) -> str:
    """The summary as a Markdown table (accuracies in %)."""
    table = summary(df)
    lines = ["| dataset | model | degree | seeds | model test | probe | subspaces | best layer | probe test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['degree']:g} | {int(r.get('seeds', 0) or 0)} | "
            f"{_mean_std(r.get('model_test', np.nan), r.get('model_test_std', np.nan))} | {r['probe']} | "
            f"{r['subspace_labels']} | {r['best_layer']} | {_mean_std(r['best_test'], r['best_test_std'])} |")
    return "\n".join(lines)


def plot_layers(df, path: str | Path) -> Path:
    """Test accuracy vs layer, one line per degree, the model's final test accuracy as a dashed reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = _probe_test_rows(df)
    model = final_model_rows(df)
    model = model[model["split"] == "test"].groupby("degree")["accuracy"].mean()
    kinds = list(dict.fromkeys(zip(probes["probe"], probes["subspace_labels"])))
    layers = list(dict.fromkeys(probes["layer"]))
    degrees = sorted(probes["degree"].unique())
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(degrees)))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), squeeze=False, sharey=True)
    for ax, (probe, kind) in zip(axes[0], kinds):
        rows = probes[(probes["probe"] == probe) & (probes["subspace_labels"] == kind)]
        means = rows.groupby(["degree", "layer"])["accuracy"].mean()
        for color, degree in zip(colors, degrees):
            ys = [means.get((degree, layer), np.nan) for layer in layers]
            ax.plot(layers, ys, "o-", color=color, label=f"p = {degree:g}")
            if degree in model.index:
                ax.axhline(model[degree], color=color, linestyle="--", linewidth=1)
        ax.set_title(f"{probe}, {kind}-label subspaces")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (dashed: model)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
