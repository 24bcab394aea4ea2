"""Our results beside the papers' published figures (:mod:`jaxmem.paper`): the best-layer tables and paper 2's
dynamics, as frames and as Markdown."""
from __future__ import annotations

from jaxmem.paper import CHECKPOINTS, DYNAMICS, paper_entries
from jaxmem.report.tables import summary


def compare(df, *, exclude_layers=("input",)):
    """Every published figure (:mod:`jaxmem.paper`) that ``df`` has a counterpart for, our side from the table
    alone (:func:`summary`: mean over seeds, each member's last probed epoch, best layer by the mean, the input
    layer left out since it needs no model): one row per (table, dataset, model, degree,
    probe, subspaces) with ``paper``, ``jaxmem`` (mean over seeds), ``difference`` (jaxmem − paper, points),
    ``seeds`` and ``layer`` (ours). Empty when nothing matches."""
    import pandas as pd

    ours = summary(df[~df["layer"].isin(exclude_layers)])
    rows = []
    for table, probe, kind, values in paper_entries():
        for (dataset, model), by_degree in values.items():
            for degree, paper in by_degree.items():
                if paper != paper:  # NaN: not published
                    continue
                match = ours[(ours["dataset"] == dataset) & (ours["model"] == model) & (ours["degree"] == degree)]
                if table == "model":
                    match = match.drop_duplicates("degree")
                    value, layer = (match["model_test"], "output")
                else:
                    match = match[(match["probe"] == probe) & (match["subspace_labels"] == kind)]
                    value, layer = match["best_test"], (match["best_layer"].iloc[0] if len(match) else "")
                if match.empty or value.isna().all():
                    continue
                jaxmem = 100 * float(value.iloc[0])
                rows.append(dict(table=table, dataset=dataset, model=model, degree=degree, probe=probe,
                                 subspace_labels=kind, paper=paper, jaxmem=round(jaxmem, 2),
                                 difference=round(jaxmem - paper, 2), seeds=int(match["seeds"].iloc[0]),
                                 layer=layer, checkpoints=_checkpoints(table, dataset, model)))
    return pd.DataFrame(rows, columns=["table", "dataset", "model", "degree", "probe", "subspace_labels", "paper",
                                       "jaxmem", "difference", "seeds", "layer", "checkpoints"])


def _checkpoints(table: str, dataset: str, model: str) -> str:
    """The authors' checkpoint set behind a published figure (:data:`jaxmem.paper.CHECKPOINTS`)."""
    return CHECKPOINTS[table] if (dataset, model) == ("mnist", "mlp") else "paper 1"


def compare_dynamics(df):
    """Paper 2's dynamics (:data:`jaxmem.paper.DYNAMICS`: MLP-MNIST, p = 0.8, MASC and the linear probe with
    corrupted-label subspaces) beside ours at the same epochs: one row per (probe, layer, epoch) that ``df`` holds,
    with ``paper``, ``jaxmem`` (test %, mean over members) and ``difference`` in points. Empty when nothing matches."""
    import pandas as pd

    rows = df[(df["dataset"] == "mnist") & (df["model"] == "mlp") & (df["degree"] == 0.8)
              & (df["subspace_labels"] == "corrupted") & (df["split"] == "test") & (df["scored_against"] == "true")]
    ours = rows.groupby(["probe", "layer", "epoch"])["accuracy"].agg(["mean", "count"])
    out = [dict(probe=probe, layer=layer, epoch=epoch, paper=paper, jaxmem=round(100 * ours.loc[key, "mean"], 2),
                difference=round(100 * ours.loc[key, "mean"] - paper, 2), seeds=int(ours.loc[key, "count"]))
           for (probe, layer), curve in DYNAMICS.items() for epoch, paper in curve.items()
           if (key := (probe, layer, epoch)) in ours.index]
    return pd.DataFrame(out, columns=["probe", "layer", "epoch", "paper", "jaxmem", "difference", "seeds"])


def dynamics_comparison_markdown(table) -> str:
    """A :func:`compare_dynamics` table as Markdown, one row per (probe, layer, epoch)."""
    lines = ["| probe | layer | epoch | paper | jaxmem | difference |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.probe} | {r.layer} | {r.epoch} | {r.paper:.2f} | {r.jaxmem:.2f} | {r.difference:+.2f} |"
              for r in table.itertuples()]
    return "\n".join(lines)


def comparison_markdown(table) -> str:
    """A :func:`compare` table as Markdown."""
    lines = ["| table | dataset × model | p | probe | subspaces | paper | jaxmem (layer) | difference | "
             "the paper's checkpoints |", "|---|---|---|---|---|---:|---:|---:|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.table} | {r.dataset} × {r.model} | {r.degree:g} | {r.probe} | {r.subspace_labels} | "
                     f"{r.paper:.2f} | {r.jaxmem:.2f} ({r.layer}) | {r.difference:+.2f} | {r.checkpoints} |")
    return "\n".join(lines)
