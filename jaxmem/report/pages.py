"""The Markdown pages written to disk: ``write_report``'s ``report.md``, the summary tables with the plots beside
them (accuracy vs layer, vs degree and, for tables with several probed epochs, vs epoch), the comparison with the
papers and the relabel, wrong-label and edit-then-continue sections; ``report_runs`` builds it from run tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxmem.report.comparison import (compare, compare_dynamics, compare_runs, comparison_markdown,
                                      dynamics_comparison_markdown, runs_markdown)
from jaxmem.report.plots import (plot_degrees, plot_dynamics, plot_edit_continue, plot_label_pr, plot_layers,
                                 plot_training)
from jaxmem.report.tables import (_mean_std, _probe_test_rows, best_layer_markdown, is_sensitivity, labels_markdown,
                                  peak_epochs, relabel_markdown, summary, training_markdown, unfinished_markdown)


def labels_section(df, out_dir: str | Path) -> str:
    """The Markdown section on which training labels are wrong, with its precision–recall plot written into
    ``out_dir`` (``labels_pr.png``)."""
    plot = plot_label_pr(df, Path(out_dir) / "labels_pr.png")
    return "\n".join(["## Which training labels are wrong", "",
                      "Each method's verdict on every training label, scored against the known corruption mask "
                      "(mean ± std over seeds, %): the flagged set's precision, recall and F1; the ranking's "
                      "average precision and AUROC; with the suggested labels the share of wrong labels fixed and "
                      "of right ones broken; and, when fine-tuned, the accuracy on the 80 % report part after "
                      "fine-tuning on the relabelled or the dropped-out training set.", "", labels_markdown(df), "",
                      f"![precision–recall of the label rankings]({plot.name})", ""])


def write_report(df, out_dir: str | Path, *, title: str = "jaxmem report", relabel=None, labels=None,
                 edit_continue: dict | None = None, unfinished=()) -> Path:
    """``out_dir/report.md`` with the summary table and the plots beside it (PNG), the relabel-and-fine-tune
    table when a ``relabel`` table is given, the wrong-label section when a ``labels`` table is, the
    edit-then-continue curves of each ``edit_continue`` table (``{file name: table}``) and the runs of a grid not
    complete (``unfinished``: :func:`unfinished_markdown`'s), which the page's tables leave out; returns the
    page's path.
    A table without probe rows (a training run) gets the training curves and no probe sections."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if _probe_test_rows(df).empty:
        return _write_training_report(df, out_dir, title, labels)
    summary(df).to_csv(out_dir / "summary.csv", index=False)
    parts = [f"# {title}", "", "Test accuracy (%) of the model at each member's last trained epoch (after "
             "memorisation where the stop rule was reached) and of each probe at its best layer "
             "(mean ± std over seeds, the layer in brackets; every layer of every probe: `summary.csv` and the "
             "plots).", "", "### Where each member stopped", "", "Accuracy (%) at the last trained epoch: on the "
             "member's own (corrupted) labels counted during the epoch (running, the authors' stop rule) and in a "
             "full pass after it, and on the test set.", "", training_markdown(df), ""]
    if unfinished:
        parts += ["### Runs not complete", "", "Left out of every table below: each run's last trained epoch so far "
                  "with the model's accuracies there (%) and the stages it has still to do.", "",
                  unfinished_markdown(unfinished), ""]
    sections = [("Probes fitted on the corrupted labels (the headline)", "corrupted", False),
                ("Probes fitted on the true labels (post-hoc oracle)", "true", False),
                ("Clean model (trained at p = 0), probes fitted on its labels corrupted at q", "clean", False),
                ("MASC sensitivity to the variance n (corrupted labels; components per class at the best layer)",
                 "corrupted", True)]
    has_sensitivity = df["probe"].map(is_sensitivity).astype(bool).any()
    for heading, kind, sensitivity in sections:
        if sensitivity and not has_sensitivity:
            continue
        table = best_layer_markdown(df, kind, sensitivity=sensitivity)
        if table.count("\n") > 1:  # a header and at least one row
            parts += [f"### {heading}", "", table, ""]
    for (dataset, model), part in df.groupby(["dataset", "model"]):
        name = f"{dataset}-{model}"
        parts += [f"### {dataset} × {model}", "",
                  f"![accuracy vs layer]({plot_layers(part, out_dir / f'layers_{name}.png').name})", "",
                  f"![accuracy vs degree]({plot_degrees(part, out_dir / f'degrees_{name}.png').name})", ""]
    probed_epochs = df[df["probe"] != "model"].groupby("member")["epoch"].nunique()
    if not probed_epochs.empty and probed_epochs.max() > 1:
        peaks = peak_epochs(df)
        parts += ["", "## Dynamics", "", f"![accuracy vs epoch]({plot_dynamics(df, out_dir / 'dynamics.png').name})",
                  "", "| degree | probe | layer | peak epoch | peak test |", "|---|---|---|---|---|"]
        parts += [f"| {r.degree:g} | {r.probe} | {r.layer} | {r.peak_epoch} | {100 * r.peak_test:.1f} |"
                  for r in peaks.itertuples()]
    comparison = compare(df)
    if not comparison.empty:
        comparison.to_csv(out_dir / "paper_comparison.csv", index=False)
        parts += ["", "## Compared with the papers", "", "Published figures (mean of the authors' 3 runs) beside "
                  "ours (mean over seeds, best layer without the input layer); difference in points. "
                  "docs/methods.md lists the remaining differences of protocol.", "", comparison_markdown(comparison),
                  ""]
    runs = compare_runs(df)
    if not runs.empty:
        runs.to_csv(out_dir / "runs_comparison.csv", index=False)
        parts += ["", "## Run to run: our seeds beside the authors' three runs", "", "MLP-MNIST, each member at its "
                  "stop: ours per seed (the probes at the best layer by our mean, without the input layer), their "
                  "mean ± std, beside the authors' three runs (which share one corrupted label vector and differ in "
                  "initialisation, as our seeds do) and their mean; difference of the means in points (epochs for "
                  "the stop).", "", runs_markdown(runs), ""]
    dynamics = compare_dynamics(df)
    if not dynamics.empty:
        dynamics.to_csv(out_dir / "dynamics_comparison.csv", index=False)
        parts += ["", "## Dynamics compared with paper 2", "", "MLP-MNIST at p = 0.8, corrupted-label subspaces, "
                  "test accuracy (%): the authors' run 1 (their public trainer's checkpoints; the linear probe on "
                  "fc4 is their zero-bias edited model) beside ours (mean over members) at the epochs both hold.",
                  "", dynamics_comparison_markdown(dynamics), ""]
    if relabel is not None:
        parts += ["", "## Relabel and fine-tune", "", "Training labels replaced by the MASC predictions of the layer "
                  "chosen on 20 % of the test set; fine-tuned with early stopping on that part; accuracy on the "
                  "other 80 %.", "", relabel_markdown(relabel)]
    if labels is not None:
        parts += ["", labels_section(labels, out_dir)]
    for name, table in (edit_continue or {}).items():
        parts += ["", edit_continue_section(table, out_dir / Path(name).with_suffix(".png"))]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def edit_continue_section(table, plot_path: str | Path) -> str:
    """Markdown for one edit-then-continue table: its plot and the test accuracy (%, mean over members) of the
    edited and unedited branches at the edit, midway and at the last epoch."""
    test = table[(table["split"] == "test") & (table["scored_against"] == "true")]
    curves = test.pivot_table(index="epoch", columns="probe", values="accuracy", aggfunc="mean")
    start = int(table.loc[table["probe"] == "edited", "epoch"].min())
    picked = curves.iloc[sorted({0, len(curves) // 2, len(curves) - 1})]
    lines = [f"## Edit at epoch {start}, then continue", "",
             f"![edit then continue]({plot_edit_continue(table, plot_path).name})", "",
             "| epoch | edited | unedited |", "|---:|---:|---:|"]
    lines += [f"| {epoch} | " + " | ".join(_mean_std(row.get(branch, np.nan), np.nan)
                                           for branch in ("edited", "unedited")) + " |"
              for epoch, row in picked.iterrows()]
    return "\n".join(lines)


def _write_training_report(df, out_dir: Path, title: str, labels=None) -> Path:
    """``report.md`` of a table with model rows only: the last epoch's accuracies and the training curves."""
    parts = [f"# {title}", "", "A training table (no probe rows): the model's accuracy (%) at each member's last "
             "epoch (mean ± std over seeds) and per epoch.", "", training_markdown(df), ""]
    for (dataset, model), part in df.groupby(["dataset", "model"]):
        name = f"{dataset}-{model}"
        parts += [f"### {dataset} × {model}", "",
                  f"![accuracy vs epoch]({plot_training(part, out_dir / f'training_{name}.png').name})", ""]
    if labels is not None:
        parts += ["", labels_section(labels, out_dir)]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def write_labels_section(df, run_dir: str | Path) -> str:
    """:func:`labels_section` of a labels table, written to ``run_dir/labels.md``; returns it."""
    section = labels_section(df, run_dir)
    (Path(run_dir) / "labels.md").write_text(section)
    return section


def report_runs(paths, out_dir: str | Path | None = None, *, title: str | None = None,
                exclude_layers=(), unfinished=()) -> Path:
    """:func:`write_report` of the results tables at ``paths`` with the tables beside them
    (:func:`jaxmem.results.join_run_tables`) into ``out_dir`` (default: beside the first table), leaving out
    ``exclude_layers``, with the ``unfinished`` runs of a grid (:func:`write_report`). Several tables are joined,
    and the joined tables written into ``out_dir`` so that the page can be rebuilt from that folder alone. Returns
    the page's path."""
    from jaxmem.results import JOINED_RESULTS, join_run_tables, write_table

    tables = join_run_tables(paths)
    out_dir = Path(out_dir) if out_dir is not None else Path(paths[0]).parent
    if len(paths) > 1:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, table in tables.items():
            if table is not None:
                write_table(table, out_dir / name)
    results = tables.pop(JOINED_RESULTS)
    return write_report(results[~results["layer"].isin(exclude_layers)], out_dir,
                        title=title or f"jaxmem report: {paths[0]}", relabel=tables.pop("relabel.csv"),
                        labels=tables.pop("labels.csv"), edit_continue=tables, unfinished=unfinished)
