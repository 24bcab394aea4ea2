"""Our results beside the papers' published figures (:mod:`jaxmem.paper`): the best-layer tables and paper 2's
dynamics, as frames and as Markdown."""
from __future__ import annotations

from jaxmem.paper import (CHECKPOINTS, DYNAMICS, MASC_CORRUPTED, MASC_TRUE, MLP_MNIST_EPOCHS, MLP_MNIST_RUN_TEST, MODEL,
                          PUBLIC_TRAINER_EPOCHS, PUBLIC_TRAINER_RUN_TEST, paper_entries)
from jaxmem.report.tables import summary
from jaxmem.results import final_model_rows


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


_MODEL, _MASC = ("model", "none"), ("masc",)
# (measure, (split, scored against, probe, subspaces) of our rows or "epochs", the authors' runs per degree, their
# published mean per degree or None (then the mean of the runs))
RUN_MEASURES = (
    ("epochs to the stop", "epochs", MLP_MNIST_EPOCHS, None),
    ("epochs to the stop, public trainer", "epochs", PUBLIC_TRAINER_EPOCHS, None),
    ("train, running over the epoch's steps", ("train_running", "corrupted", *_MODEL), {}, None),
    ("train, full pass after the epoch", ("train", "corrupted", *_MODEL), {}, None),
    ("model test", ("test", "true", *_MODEL), MLP_MNIST_RUN_TEST, MODEL[("mnist", "mlp")]),
    ("model test, public trainer", ("test", "true", *_MODEL), PUBLIC_TRAINER_RUN_TEST, None),
    ("MASC test, corrupted-label subspaces", ("test", "true", *_MASC, "corrupted"), {},
     MASC_CORRUPTED[("mnist", "mlp")]),
    ("MASC test, true-label subspaces", ("test", "true", *_MASC, "true"), {}, MASC_TRUE[("mnist", "mlp")]),
)


def compare_runs(df, *, exclude_layers=("input",)):
    """Run to run: every member of MLP-MNIST (the setting whose per-run figures the authors' files give) at its
    stop, one row per (degree, measure): ours per seed with mean and std beside the authors' three runs of paper 1
    (their stop epochs and test accuracies) and those of the public trainer (whose stop rule ours follows), their means
    (the published one where there is one) and the difference of the means. The probes' values are at the best
    layer by our mean (:func:`summary`). Empty without MLP-MNIST members."""
    import pandas as pd

    df = df[(df["dataset"] == "mnist") & (df["model"] == "mlp") & ~df["layer"].isin(exclude_layers)]
    final = final_model_rows(df)
    best = summary(df) if not final.empty else None
    rows = []
    for degree, part in final.groupby("degree"):
        seeds = part.groupby("member")["seed"].first().sort_values()
        for measure, source, runs, published in RUN_MEASURES:
            paper_runs = runs.get(degree)
            if source == "epochs":
                ours = part.groupby("member")["epoch"].max()
            else:
                split, against, probe, kind = source
                pick = part
                if probe != "model":
                    chosen = best[(best["degree"] == degree) & (best["probe"] == probe)
                                  & (best["subspace_labels"] == kind)]
                    if chosen.empty:
                        continue
                    pick = df[(df["degree"] == degree) & (df["probe"] == probe) & (df["subspace_labels"] == kind)
                              & (df["layer"] == chosen["best_layer"].iloc[0])]
                    pick = pick[pick["epoch"] == pick.groupby("member")["epoch"].transform("max")]
                pick = pick[(pick["split"] == split) & (pick["scored_against"] == against)]
                ours = 100 * pick.groupby("member")["accuracy"].first()
            ours = ours.reindex(seeds.index).dropna()
            if ours.empty:
                continue
            paper = (published or {}).get(degree, sum(paper_runs) / len(paper_runs) if paper_runs else float("nan"))
            text = (lambda v: f"{v:g}") if source == "epochs" else (lambda v: f"{v:.2f}")
            mean = float(ours.mean())
            rows.append(dict(degree=degree, measure=measure, seeds=" / ".join(map(str, seeds[ours.index])),
                             ours=" / ".join(map(text, ours)), mean=round(mean, 2),
                             std=round(float(ours.std()), 2) if len(ours) > 1 else float("nan"),
                             paper_runs=" / ".join(map(text, paper_runs)) if paper_runs else "",
                             paper=round(paper, 2), difference=round(mean - paper, 2)))
    return pd.DataFrame(rows, columns=["degree", "measure", "seeds", "ours", "mean", "std", "paper_runs", "paper",
                                       "difference"])


def runs_markdown(table) -> str:
    """A :func:`compare_runs` table as Markdown."""
    shown = lambda value, fmt: "" if value != value else format(value, fmt)
    lines = ["| p | measure | our seeds | ours | ours, mean ± std | the authors' runs 1 / 2 / 3 | the authors' mean | "
             "difference |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        lines.append(f"| {r.degree:g} | {r.measure} | {r.seeds} | {r.ours} | {r.mean:.2f}"
                     f"{'' if r.std != r.std else f' ± {r.std:.2f}'} | {r.paper_runs} | {shown(r.paper, '.2f')} | "
                     f"{shown(r.difference, '+.2f')} |")
    return "\n".join(lines)
