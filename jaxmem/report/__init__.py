"""Tables, plots and pages derived from a results table alone, and the text the commands print. It reads tables
with config, paper and results alone, so it loads no Flax, Optax, Orbax or JAX. Inside the package imports point
one way: plots, comparison and text use tables; pages uses tables, plots and comparison.

* :mod:`.tables`: the summaries of a results table (:func:`summary`, the best layer, the model at its last
  epoch, the peak epochs, relabel and wrong-label tables), as frames and as Markdown;
* :mod:`.plots`: every matplotlib figure (accuracy vs layer, degree and epoch, training curves, the labels'
  precision–recall, edit then continue);
* :mod:`.comparison`: our results beside the papers' published figures (:func:`compare`,
  :func:`compare_dynamics`, :func:`compare_runs`: our seeds beside the authors' three runs);
* :mod:`.pages`: the Markdown pages written to disk (:func:`write_report`, :func:`report_runs`, the labels and
  edit-then-continue sections);
* :mod:`.text`: what the commands print in the terminal (:func:`format_table` and the ``*_text`` functions).

Every public name is importable from ``jaxmem.report`` itself.
"""
from jaxmem.report.comparison import (compare, compare_dynamics, compare_runs, comparison_markdown,
                                      dynamics_comparison_markdown, runs_markdown)
from jaxmem.report.pages import (edit_continue_section, labels_section, report_runs, write_labels_section,
                                 write_report)
from jaxmem.report.plots import (plot_degrees, plot_dynamics, plot_edit_continue, plot_label_pr, plot_layers,
                                 plot_training)
from jaxmem.report.tables import (GROUP, LABEL_METRICS, TRAINING_CURVES, best_layer_markdown, is_sensitivity,
                                  labels_markdown, labels_summary, peak_epochs, relabel_markdown, relabel_summary,
                                  seed_curves, summary, summary_markdown, sweep_outputs_text, training_markdown,
                                  unmemorised_members, write_summary)
from jaxmem.report.text import (dynamics_text, edit_continue_text, edit_text, format_table, input_probe_text,
                                layer_probe_text, run_text, train_text)
from jaxmem.results import final_model_rows  # offered here before the split; tests import it from jaxmem.report

__all__ = [
    "GROUP", "LABEL_METRICS", "TRAINING_CURVES", "best_layer_markdown", "compare", "compare_dynamics", "compare_runs",
    "comparison_markdown", "dynamics_comparison_markdown", "dynamics_text", "edit_continue_section",
    "edit_continue_text", "edit_text", "final_model_rows", "format_table", "input_probe_text", "is_sensitivity",
    "labels_markdown", "labels_section", "labels_summary", "layer_probe_text", "peak_epochs", "plot_degrees",
    "plot_dynamics", "plot_edit_continue", "plot_label_pr", "plot_layers", "plot_training", "relabel_markdown",
    "relabel_summary", "report_runs", "run_text", "runs_markdown", "seed_curves", "summary", "summary_markdown",
    "sweep_outputs_text", "train_text", "training_markdown", "unmemorised_members", "write_labels_section",
    "write_report", "write_summary",
]
