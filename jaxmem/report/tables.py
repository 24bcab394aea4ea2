"""Tables derived from a results table alone, as frames and as Markdown. ``summary`` is the paper-style table: per
(dataset, model, degree), the model's final test accuracy and, per probe and subspace kind, the best layer's test
accuracy (mean ± std over seeds; the layer chosen by the mean) at each member's last probed epoch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem.config import registry_order, required_correct
from jaxmem.results import final_model_rows


GROUP = ["dataset", "model", "degree"]


def unmemorised_members(df, target_train_accuracy: float, stop_on: str = "eval") -> dict[int, tuple[int, float]]:
    """Members whose last recorded epoch is below the stop rule's target: ``{member: (epoch, train accuracy)}``.

    ``stop_on`` picks the accuracy the rule reads: ``"eval"`` (the post-epoch pass, rows ``split="train"``) or
    ``"running"`` (rows ``split="train_running"``). Empty when every member memorised its labels. A member whose
    last epoch has no such row (epoch 0 has no steps, so no running accuracy) has not: its accuracy reads NaN.
    """
    split = "train_running" if stop_on == "running" else "train"
    final = final_model_rows(df)
    rows = final[(final["split"] == split) & (final["scored_against"] == "corrupted")]
    open_members = {int(r.member): (int(r.epoch), float(r.accuracy)) for r in rows.itertuples()
                    if r.n_correct < required_correct(target_train_accuracy, int(r.n_seen))}
    unread = final[~final["member"].isin(rows["member"])].groupby("member")["epoch"].max()
    return open_members | {int(m): (int(e), float("nan")) for m, e in unread.items()}


def _probe_test_rows(df, *, last_epoch: bool = True):
    """Probe rows scoring the test set against the true labels; by default only each member's last probed epoch."""
    rows = df[(df["probe"] != "model") & (df["split"] == "test") & (df["scored_against"] == "true")]
    if last_epoch and not rows.empty:
        rows = rows[rows["epoch"] == rows.groupby("member")["epoch"].transform("max")]
    return rows


def summary(df):
    """One row per (dataset, model, degree[, probe, subspace_labels]) with mean/std test accuracy and best layer."""
    import pandas as pd

    model = final_model_rows(df)
    model = model[model["split"] == "test"]
    model_stats = (model.groupby(GROUP)["accuracy"].agg(["mean", "std", "count"])
                   .rename(columns={"mean": "model_test", "std": "model_test_std", "count": "seeds"}).reset_index())
    probes = _probe_test_rows(df)
    keys = GROUP + ["probe", "subspace_labels"]
    per_layer = (probes.groupby(keys + ["layer"]).agg(mean=("accuracy", "mean"), std=("accuracy", "std"),
                                                      size=("size", "mean")).reset_index())
    best = per_layer.loc[per_layer.groupby(keys)["mean"].idxmax()]
    best = best.rename(columns={"mean": "best_test", "std": "best_test_std", "layer": "best_layer",
                                "size": "best_size"})
    if model_stats.empty:  # no model rows, e.g. a probed activations file
        return best.assign(model_test=np.nan, model_test_std=np.nan).reset_index(drop=True)
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


def write_summary(df, out_dir: str | Path) -> Path:
    """Write a run directory's ``summary.md`` (:func:`summary_markdown` of its table); returns its path."""
    path = Path(out_dir) / "summary.md"
    path.write_text(summary_markdown(df) + "\n")
    return path


def sweep_outputs_text(out: str | Path, layout: str) -> str:
    """Where a sweep's results are: its joined table (and its summary, written here) and the report command; with
    one run directory per member, the report command over their tables; '' when there is nothing yet."""
    from jaxmem.results import read_rows

    table = Path(out) / "results.csv"
    if table.exists():
        return f"results: {table}; summary: {write_summary(read_rows(table), out)}; report: jaxmem report {table}"
    return f"one table per member: jaxmem report {out}/*/*/results.csv --out {out}" if layout == "member" else ""


def is_sensitivity(probe: str) -> bool:
    """MASC at a sensitivity variance (``masc(n=…)``), kept out of the headline tables and plots."""
    return probe.startswith("masc(")


def _sensitivity_order(probe: str) -> tuple:
    """Fewest components first: integer n (components), then fractions of the variance (``masc`` is n = 0.99)."""
    n = float(probe.removeprefix("masc(n=").removesuffix(")")) if is_sensitivity(probe) else 0.99
    return (n < 1, n)


def _clean_variant(table):
    """Summary rows of the clean-model variant with their subspace degree q as ``degree``."""
    rows = table[table["subspace_labels"].str.startswith("corrupted@")].copy()
    rows["degree"] = rows["subspace_labels"].str.removeprefix("corrupted@").astype(float)
    return rows


def best_layer_markdown(df, kind: str = "corrupted", *, sensitivity: bool = False) -> str:
    """One row per (dataset, model, degree), one column per probe: best-layer test accuracy (%) mean ± std over
    seeds and the layer. ``kind``: subspace labels, or ``"clean"`` for the clean model with subspaces from labels
    corrupted at q (rows by q). ``sensitivity``: the MASC variances instead of the probes (with components)."""
    table = summary(df)
    if table.empty:
        return ""
    model = table.drop_duplicates(GROUP).set_index(GROUP)
    rows = _clean_variant(table) if kind == "clean" else table[table["subspace_labels"] == kind]
    variant = rows["probe"].map(is_sensitivity).astype(bool)
    rows = rows[variant | (rows["probe"] == "masc") if sensitivity else ~variant]
    probes = sorted(rows["probe"].unique(), key=_sensitivity_order if sensitivity else registry_order)
    first = "q (p = 0 model)" if kind == "clean" else "degree"
    lines = [f"| dataset | model | {first} | seeds | model test | " + " | ".join(probes) + " |",
             "|---|---|---|---|---|" + "---|" * len(probes)]
    for (dataset, name, degree), part in rows.groupby(GROUP):
        reference = model.loc[(dataset, name, 0.0 if kind == "clean" else degree)]
        cells = []
        for probe in probes:
            hit = part[part["probe"] == probe]
            if hit.empty:
                cells.append("–")
                continue
            r = hit.iloc[0]
            extra = f", {r['best_size']:.0f} comp." if sensitivity and r["best_size"] == r["best_size"] else ""
            cells.append(f"{_mean_std(r['best_test'], r['best_test_std'])} ({r['best_layer']}{extra})")
        lines.append(f"| {dataset} | {name} | {degree:g} | {int(reference.get('seeds', 0) or 0)} | "
                     f"{_mean_std(reference.get('model_test', np.nan), reference.get('model_test_std', np.nan))} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


TRAINING_CURVES = (("train", "corrupted", "train, full pass after the epoch"),
                   ("train_running", "corrupted", "train, running over the epoch's steps"),
                   ("test", "true", "test"))


def training_markdown(df) -> str:
    """The model at each member's last epoch, per (dataset, model, degree): seeds, epochs, train accuracy (full
    pass and running, against the member's labels) and test accuracy (%, mean ± std over seeds)."""
    rows = final_model_rows(df)
    lines = ["| dataset | model | degree | seeds | last epoch | " + " | ".join(name for _, _, name in TRAINING_CURVES)
             + " |", "|---|---|---|---|---|" + "---|" * len(TRAINING_CURVES)]
    for (dataset, model, degree), part in rows.groupby(GROUP):
        cells = []
        for split, against, _ in TRAINING_CURVES:
            accuracy = part[(part["split"] == split) & (part["scored_against"] == against)]["accuracy"]
            cells.append(_mean_std(accuracy.mean(), accuracy.std()) if len(accuracy) else "–")
        epochs = part["epoch"]
        last = f"{epochs.min()}" if epochs.min() == epochs.max() else f"{epochs.min()}–{epochs.max()}"
        lines.append(f"| {dataset} | {model} | {degree:g} | {part['member'].nunique()} | {last} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def unfinished_markdown(runs) -> str:
    """The runs of a grid not complete, ``runs`` as ``[(name, {stage: state}, table or None)]`` with only the
    stages still to do: per member of each run (named by degree and seed when the run holds several) its last
    trained epoch, the model's accuracies there (%, as in :func:`training_markdown`) and what each stage of its run
    still waits for."""
    lines = ["| run | last trained epoch | " + " | ".join(name for _, _, name in TRAINING_CURVES)
             + " | stages not done |", "|---|---|" + "---|" * len(TRAINING_CURVES) + "---|"]
    for name, states, table in runs:
        waiting = [stage for stage, state in states.items() if state == "waits for training"]
        todo = "; ".join(f"{stage}: {state}" for stage, state in states.items() if stage not in waiting)
        todo += f"; then {', '.join(waiting)}" * bool(waiting)
        rows = final_model_rows(table) if table is not None else table
        members = rows.groupby("member") if rows is not None and len(rows) else [(None, None)]
        for _, member in members:
            cells, label = ["–"] * (1 + len(TRAINING_CURVES)), name
            if member is not None:
                cells = [str(member["epoch"].max())] + [
                    _mean_std(part["accuracy"].mean(), np.nan) if len(part) else "–"
                    for part in (member[(member["split"] == split) & (member["scored_against"] == against)]
                                 for split, against, _ in TRAINING_CURVES)]
                if len(members) > 1:
                    label = f"{name} (p = {member['degree'].iloc[0]:g}, seed {member['seed'].iloc[0]})"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {todo} |")
    return "\n".join(lines)


def seed_curves(df, rows, keys: list[str]):
    """Mean accuracy of ``rows`` (rows of ``df``) over members per ``keys`` and epoch, only at the points every
    member of the group reached. Each member's last epoch in ``df`` (its stop, which differs between seeds) is one
    common point. Columns: ``keys``, ``epoch`` (the stop point: the members' mean stop), ``epochs`` (text: the
    epoch, or the range of the stops) and ``accuracy``, sorted by epoch."""
    stop = df.groupby("member")["epoch"].max()
    at_stop = rows["epoch"].to_numpy() == rows["member"].map(stop).to_numpy()
    rows = rows.assign(point=rows["epoch"].where(~at_stop, -1))
    members = rows.groupby(keys)["member"].nunique().rename("members")
    points = (rows.groupby(keys + ["point"])
              .agg(accuracy=("accuracy", "mean"), reached=("member", "nunique"),
                   first=("epoch", "min"), last=("epoch", "max"), epoch=("epoch", "mean"))
              .join(members).reset_index())
    points = points[points["reached"] == points["members"]]
    epochs = points["first"].astype(str).where(points["first"] == points["last"],
                                               points["first"].astype(str) + "–" + points["last"].astype(str))
    return (points.assign(epochs=epochs)[keys + ["epoch", "epochs", "accuracy"]]
            .sort_values(keys + ["epoch"]).reset_index(drop=True))


def peak_epochs(df):
    """Per (degree, probe, layer) probed at more than one epoch — the model as probe "model" — the epoch of the
    highest mean test accuracy over seeds (:func:`seed_curves`: the seeds' stops count as one epoch, shown as their
    range)."""
    rows = df[(df["split"] == "test") & (df["scored_against"] == "true") & (df["subspace_labels"] != "true")]
    keys = ["degree", "probe", "layer"]
    curves = seed_curves(df, rows, keys)
    curves = curves[curves.groupby(keys)["epoch"].transform("nunique") > 1]
    best = curves.loc[curves.groupby(keys)["accuracy"].idxmax()]
    return (best.drop(columns="epoch").rename(columns={"epochs": "peak_epoch", "accuracy": "peak_test"})
            .reset_index(drop=True))


def relabel_summary(df):
    """Relabel and fine-tune (a ``relabel.csv`` table): per (dataset, model, degree, subspace kind), mean ± std over
    seeds of the model and the early-stopped fine-tuned model on the 80 % report part, the share of wrong labels
    fixed and of right labels broken, the chosen layers and the kept epochs."""
    import pandas as pd

    def stats(rows, name):
        grouped = rows.groupby(GROUP + ["subspace_labels"])
        return grouped["accuracy"].agg(["mean", "std"]).add_prefix(name + "_")

    model = df[(df["probe"] == "model") & (df["split"] == "test_report")].drop(columns="subspace_labels")
    tuned = df[(df["probe"] == "finetune_best") & (df["split"] == "test_report")]
    relabel = df[df["probe"] == "relabel"]
    fixed = relabel[relabel["split"] == "train_flipped"]
    kept = relabel[relabel["split"] == "train_unflipped"].assign(accuracy=lambda r: 1 - r["accuracy"])
    table = pd.concat([stats(tuned, "finetuned"), stats(fixed, "fixed"), stats(kept, "broken")], axis=1)
    table["layers"] = relabel[relabel["split"] == "train"].groupby(GROUP + ["subspace_labels"])["layer"].agg(
        lambda layers: ",".join(sorted(set(layers))))
    table["epochs"] = tuned.groupby(GROUP + ["subspace_labels"])["epoch"].agg(
        lambda epochs: ",".join(str(e) for e in epochs))
    table["seeds"] = tuned.groupby(GROUP + ["subspace_labels"])["member"].nunique()
    model_stats = model.groupby(GROUP)["accuracy"].agg(["mean", "std"]).add_prefix("model_")
    return table.reset_index().merge(model_stats.reset_index(), on=GROUP, how="left")


def relabel_markdown(df) -> str:
    """:func:`relabel_summary` as a Markdown table (accuracies and shares in %)."""
    lines = ["| dataset | model | degree | seeds | subspaces | layers | model (80 %) | fine-tuned (80 %) | "
             "wrong labels fixed | right labels broken | kept epochs |", "|---" * 11 + "|"]
    for r in relabel_summary(df).itertuples():
        lines.append(f"| {r.dataset} | {r.model} | {r.degree:g} | {r.seeds} | {r.subspace_labels} | {r.layers} | "
                     f"{_mean_std(r.model_mean, r.model_std)} | {_mean_std(r.finetuned_mean, r.finetuned_std)} | "
                     f"{_mean_std(r.fixed_mean, r.fixed_std)} | {_mean_std(r.broken_mean, r.broken_std)} | "
                     f"{r.epochs} |")
    return "\n".join(lines)


LABEL_METRICS = (("flag_precision", "precision"), ("flag_recall", "recall"), ("flag_f1", "F1"),
                 ("rank_ap", "AP"), ("rank_auroc", "AUROC"), ("relabel_fixed", "wrong fixed"),
                 ("relabel_broken", "right broken"), ("relabel_test_report", "relabel → fine-tuned (80 %)"),
                 ("drop_test_report", "drop → fine-tuned (80 %)"))


_LABEL_METHOD_ORDER = ("model", "cleanlab_model", "cleanlab_cv")


def _label_method_order(method: str) -> tuple:
    """The model and cleanlab first, then the probes in registry order."""
    if method in _LABEL_METHOD_ORDER:
        return (0, _LABEL_METHOD_ORDER.index(method))
    return (1, *registry_order(method))


def labels_summary(df):
    """Which labels are wrong (a ``labels.csv`` table): per (dataset, model, degree, method), mean and std over
    seeds of each metric (columns ``<split>_mean``, ``<split>_std``), the flagged count, the layers and seeds."""
    keys = GROUP + ["probe"]
    table = df.pivot_table(index=keys, columns="split", values="accuracy", aggfunc=["mean", "std"], dropna=False)
    table.columns = [f"{split}_{stat}" for stat, split in table.columns]
    extra = df[df["split"] == "flag_precision"].groupby(keys).agg(
        flagged=("n_seen", "mean"), layers=("layer", lambda layers: ",".join(sorted(set(layers)))),
        seeds=("member", "nunique"))
    extra["wrong"] = df[df["split"] == "flag_recall"].groupby(keys)["n_seen"].mean()
    return table.join(extra, how="inner").reset_index()


def labels_markdown(df) -> str:
    """:func:`labels_summary` as one Markdown table per (dataset, model, degree), metrics in %."""
    table = labels_summary(df)
    before = df[(df["probe"] == "model") & (df["split"] == "test_report")].groupby(GROUP)["accuracy"].agg(
        ["mean", "std"])
    parts = []
    for (dataset, model, degree), part in table.groupby(GROUP):
        seeds = int(part["seeds"].max())
        head = (f"**{dataset} × {model}, p = {degree:g}** ({seeds} seed{'s' * (seeds != 1)}, "
                f"{part['wrong'].mean():.0f} wrong labels per member")
        if (dataset, model, degree) in before.index:
            b = before.loc[(dataset, model, degree)]
            head += f"; the model before fine-tuning: {_mean_std(b['mean'], b['std'])} % on the 80 %"
        lines = [head + ")", "", "| method | layer | flagged | " + " | ".join(name for _, name in LABEL_METRICS)
                 + " |", "|---|---|---|" + "---|" * len(LABEL_METRICS)]
        for r in sorted(part.itertuples(), key=lambda r: _label_method_order(r.probe)):
            cells = [_mean_std(getattr(r, f"{split}_mean", np.nan), getattr(r, f"{split}_std", np.nan))
                     for split, _ in LABEL_METRICS]
            lines.append(f"| {r.probe} | {r.layers} | {r.flagged:.0f} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
