"""The ``jaxmem`` command: each subcommand parses its flags (:mod:`jaxmem.cli.flags`) into specs, makes one library
call and prints what :mod:`jaxmem.report` renders."""
from __future__ import annotations

import sys
from pathlib import Path

from jaxmem.cli.flags import (DATA, DISTRIBUTED, FINE_TUNING, PROBING, TRAIN_FLAGS, TRAINING, build_parser,
                              command, data_loader, fit, member_mesh, one_value, probe_names, probe_spec,
                              spec_overrides, training)


@command("probes on the input layer at given corruption degrees, or on activations from any network",
         ("--dataset", *DATA, "--degrees", "--seeds", "--label-rule", "--activations", "--probes", "--variance",
          "--sensitivity", "--precision", "--memory-budget-gib", "--subspace-labels", "--out"), degrees="0")
def cmd_probe(args) -> None:
    """Fit MASC and any other probe on the flattened inputs (--subspace-labels) or on every layer of an
    --activations file (corrupted, and true with y_train_true); print accuracies and components per class. --out:
    a run directory written afresh (default runs/<name> with --activations, else nothing is written)."""
    from jaxmem.config import MemberSpec
    from jaxmem.experiments import probing
    from jaxmem.report import input_probe_text, layer_probe_text, write_summary
    from jaxmem.results import read_rows

    spec = probe_spec(args, subspace_labels=args.subspace_labels)
    if args.activations is not None:
        from jaxmem.experiments.activations import load_activations

        acts = load_activations(args.activations)
        run = probing.probe_activations(acts, spec)
        out = probing.write_probe_run(run, args.out or Path("runs") / acts.name, spec,
                                      {"activations": str(args.activations)})
        print(f"{acts.name}: {len(acts.layers)} layers, {len(acts.y_train)} train / {len(acts.y_test)} test "
              f"samples, {acts.num_classes} classes; test accuracy ({args.precision} mode)")
        print(layer_probe_text(run.rows, run.skipped))
    else:
        members = [MemberSpec(args.dataset, "none", p, s, args.label_rule) for p in args.degrees for s in args.seeds]
        run = probing.probe_dataset_inputs(data_loader(args)(args.dataset), members, spec)
        print(f"probes on the input layer of {args.dataset} ({'- and '.join(args.subspace_labels)}-label subspaces, "
              f"n = {args.variance}, {args.precision} mode)")
        print(input_probe_text(run.rows))
        out = args.out and probing.write_probe_run(run, args.out, spec, {"dataset": args.dataset})
    if out:
        results = out / "results.csv"
        print(f"results: {results}; summary: {write_summary(read_rows(results), out)}; "
              f"report: jaxmem report {results}")


@command("train members (degrees × seeds) to memorisation, all at once", (*TRAINING, *DISTRIBUTED),
         degrees="0,0.4,0.8")
def cmd_train(args) -> None:
    """Train every member of a (dataset, model) in one jitted, vmapped program; resumable; model accuracies per
    epoch go to OUT/results.csv (default OUT: runs/<dataset>-<model>)."""
    from jaxmem.report import train_text
    from jaxmem.train.rundir import is_writer

    mesh = member_mesh(args)
    run = training(args)
    result = fit(run, args, mesh)
    if is_writer():
        print(train_text(result, run.members))
        print(f"run directory: {run.out}")


@command("the main job: train members across degrees, probe every layer with MASC, print the summary and write "
         "a plot", (*TRAINING, *PROBING, *DISTRIBUTED), degrees="0,0.4,0.8")
def cmd_run(args) -> None:
    """Train members across corruption degrees to memorisation, probe every layer with MASC (corrupted- and
    true-label subspaces), print per degree the model's test accuracy and the best layer's MASC test accuracy,
    and write OUT/results.csv, OUT/summary.md and OUT/layers.png. Default: the embedded digits data, offline."""
    from jaxmem.experiments.memorize import run_memorization
    from jaxmem.report import plot_layers, run_text, write_summary
    from jaxmem.train.rundir import is_writer

    mesh = member_mesh(args)
    run = training(args)
    table = run_memorization(*run[:4], resume=not args.no_resume, progress=not args.quiet,
                             checkpoint_epochs=run.checkpoint_epochs, mesh=mesh, probing=probe_spec(args))
    if is_writer():
        print(run_text(table, run.spec.target_train_accuracy, run.spec.stop_on))
        print(f"results: {run.out / 'results.csv'}; summary: {write_summary(table, run.out)}; "
              f"plot: {plot_layers(table, run.out / 'layers.png')}")


@command("a resumable grid: datasets × models × degrees × seeds into one results table, or a grid file's runs",
         ("--config", "--datasets", "--models", *DATA, "--degrees", "--seeds", "--label-rule", *TRAIN_FLAGS, *PROBING,
          "--relabel", *FINE_TUNING, "--layout", "--out", "--dry-run", "--shard", "--quiet", *DISTRIBUTED),
         datasets="digits", models="paper", degrees="0,0.4,0.8", out=Path("runs/sweep"))
def cmd_sweep(args) -> None:
    """Run the main job (train to memorisation, probe every layer) for every (dataset, model) cell, degrees ×
    seeds as members of one program, in OUT/<dataset>-<model>/ (--layout member: one run per member, in
    OUT/<dataset>-<model>/p<p>-s<seed>/); finished runs are skipped, an interrupted one resumes. OUT/results.csv
    (and OUT/relabel.csv) joins the finished cells. With --config the runs, their stages and settings come from a
    grid file (configs/; default OUT: the file's) and the flags that the file sets are refused."""
    from jaxmem.report import sweep_outputs_text
    from jaxmem.runner import grid_shard, grid_text, run_grid, run_states
    from jaxmem.train.rundir import is_writer

    mesh = None if args.dry_run else member_mesh(args)
    grid, load, out = sweep_grid(args)
    runs = grid_shard(grid, args.shard)
    if args.dry_run:
        print(grid_text(grid, runs, [run_states(grid, run, out) for run in runs], out))
        return
    states = run_grid(grid, load, out=out, shard=args.shard, progress=not args.quiet, mesh=mesh)
    if is_writer():
        print("\n".join(filter(None, (grid_text(grid, runs, states, out), sweep_outputs_text(out, grid.layout)))))


def sweep_grid(args):
    """``(grid, load, out)`` of ``jaxmem sweep``: the grid file's, refusing the flags it sets, or the flags'."""
    from jaxmem.experiments.sweep import sweep_cells, sweep_grid as grid_of
    from jaxmem.presets import load_data
    from jaxmem.runner import read_grid

    if args.config is None:
        grid = grid_of(sweep_cells(args.datasets, args.models), args.degrees, args.seeds, args.out,
                       label_rule=args.label_rule, overrides=spec_overrides(args), relabel=args.relabel,
                       relabel_options={"max_epochs": args.finetune_epochs, "patience": args.patience,
                                        "split_seed": args.split_seed}, probing=probe_spec(args),
                       layout=args.layout)
        return grid, lambda name, **data: data_loader(args)(name), args.out
    defaults = vars(build_parser().parse_args(["sweep"]))
    kept = {"config", "out", "dry_run", "shard", "quiet", "data_dir", "source", "run", "command"}
    given = [name for name, value in vars(args).items() if name not in kept and value != defaults.get(name)]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} is set by the grid file {args.config}; leave it out")
    grid = read_grid(args.config)
    return grid, lambda name, **data: load_data(name, args.data_dir, **{"source": args.source, **data}), (
        args.out if args.out != defaults["out"] else Path(grid.out))


@command("train keeping parameters on the paper-2 epoch schedule, then probe every layer at every kept epoch",
         (*TRAINING, "--probes", "--variance", "--subspace-labels", "--layers"), degrees="0.8",
         checkpoint_epochs="paper2", probes="linear", subspace_labels="corrupted,true")
def cmd_dynamics(args) -> None:
    """Train members keeping their parameters at the epochs of --checkpoint-epochs, then probe the layers at
    every kept epoch with MASC and the other --probes; rows with their epoch go to OUT/results.csv. Resumable."""
    from jaxmem.experiments.dynamics import run_dynamics
    from jaxmem.models import chosen_probe_layers, trained_probe_layers
    from jaxmem.report import dynamics_text

    run = training(args)
    model = run.members[0].model
    table = run_dynamics(*run[:4], checkpoint_epochs=run.checkpoint_epochs, resume=not args.no_resume,
                         progress=not args.quiet, probing=probe_spec(args, subspace_labels=args.subspace_labels),
                         layers=chosen_probe_layers(model, args.layers or trained_probe_layers(model)))
    print(dynamics_text(table))
    print(f"results: {run.out / 'results.csv'}")


@command("replace the last layer by the linear probe of the layer feeding it",
         (*TRAINING, "--keep-bias", "--subspace-labels", "--edit-epoch", "--continue-to", "--paper-setting"),
         degrees="0.8")
def cmd_edit(args) -> None:
    """Train members (or reuse a finished run in OUT), fit the linear probe on the layer feeding the last Dense
    layer (MLP fc4, CNN fc3, AlexNet fc2, ResNet pool) and put its vectors into that layer's kernel; print and
    append the edited model's accuracies. With --edit-epoch or --paper-setting: edit then continue training."""
    from jaxmem.experiments.dynamics import PAPER_EDIT_SETTINGS, edit_at_stop, edit_continue_path, edit_then_continue
    from jaxmem.report import edit_continue_text, edit_text, plot_edit_continue

    edit_epoch, continue_to = PAPER_EDIT_SETTINGS.get(args.paper_setting, (args.edit_epoch, args.continue_to))
    run = training(args)
    if edit_epoch is not None:
        run = run._replace(checkpoint_epochs=tuple(sorted({*run.checkpoint_epochs, edit_epoch})))
    fit(run, args)
    if edit_epoch is None:
        labels = one_value(args.subspace_labels, "--subspace-labels")
        model, rows = edit_at_stop(*run[:4], keep_bias=args.keep_bias, subspace_labels=labels)
        print(edit_text(model, rows, run.members, subspace_labels=labels, keep_bias=args.keep_bias))
        print(f"results: {run.out / 'results.csv'}")
        return
    table = edit_then_continue(*run[:4], edit_epoch=edit_epoch, until_epoch=continue_to, keep_bias=args.keep_bias,
                               progress=not args.quiet)
    path = edit_continue_path(run.out, edit_epoch)
    print(edit_continue_text(table, edit_epoch))
    print(f"table: {path}; plot: {plot_edit_continue(table, path.with_suffix('.png'))}")


@command("relabel the training set with the best layer's MASC predictions and fine-tune the memorised model",
         (*TRAINING, "--subspace-labels", "--layers", *FINE_TUNING, "--variance"), degrees="0.8",
         subspace_labels="corrupted,true")
def cmd_relabel(args) -> None:
    """Train (or reuse OUT); relabel the training set with the MASC predictions of each member's best layer on 20 %
    of the test set, fine-tune with early stopping on it, and report the other 80 % and the labels fixed and
    broken in OUT/relabel.csv."""
    from jaxmem.experiments.relabel import RELABEL_FILE, relabel_and_finetune
    from jaxmem.report import relabel_markdown

    run = training(args)
    fit(run, args)
    table = relabel_and_finetune(*run[:4], subspace_labels=args.subspace_labels, layers=args.layers or None,
                                 max_epochs=args.finetune_epochs, patience=args.patience, split_seed=args.split_seed,
                                 variance=args.variance, progress=not args.quiet)
    print(relabel_markdown(table))
    print(f"table: {run.out / RELABEL_FILE}")


@command("which training labels are wrong: the model, each probe and cleanlab scored against the known corruption",
         ("run_dir", "--data-dir", "--source", "--probes", "--layers", "--folds", "--variance", "--fine-tune",
          *FINE_TUNING, "--redo", "--quiet"), probes="all")
def cmd_labels(args) -> None:
    """Flag and rank each member's wrong training labels by the model, each probe (layer chosen on 20 % of the
    test set) and cleanlab; score them against the known corruption (--fine-tune: and fine-tune on each cleaned
    set). Appends what is missing to RUN_DIR/labels.csv; writes labels.md, labels_pr.png. Needs jaxmem[labels]."""
    from jaxmem.experiments.cost import load_run_dataset
    from jaxmem.experiments.labels import LABELS_FILE, import_cleanlab, label_issues
    from jaxmem.report import write_labels_section

    import_cleanlab()
    run = label_issues(args.run_dir, load_run_dataset(args.run_dir, args.data_dir, args.source),
                       probes=probe_names(args.probes), layers=args.layers or None, folds=args.folds,
                       split_seed=args.split_seed, variance=args.variance, fine_tune=args.fine_tune,
                       finetune_epochs=args.finetune_epochs, patience=args.patience, redo=args.redo,
                       progress=not args.quiet)
    if run.skipped:
        print(f"skipped members {run.skipped}: no training label is wrong (p = 0)", file=sys.stderr)
    if not run.computed:
        print(f"{args.run_dir / LABELS_FILE} already has every member{' and fine-tuning' * args.fine_tune}: done")
    print(write_labels_section(run.table, args.run_dir))
    print(f"table: {args.run_dir / LABELS_FILE}; section: {args.run_dir / 'labels.md'}")


@command("summary table and plots from results tables, or a grid file's report",
         ("results", "--config", "--out", "--title", "--exclude-layers"))
def cmd_report(args) -> None:
    """report.md with the summary table and PNG plots in --out (default: beside the first table), with the
    sections of relabel.csv, labels.csv and edit_continue_<E>.csv found beside it. Several tables are joined
    (members numbered apart) and written into --out, so that the page can be rebuilt from that folder alone.
    With --config, the grid file's report (its [report] settings, its completed runs) naming the runs not
    complete, as the grid writes it when a run completes."""
    from jaxmem.report import report_runs
    from jaxmem.runner import read_grid, write_grid_report

    if args.config is not None and (args.results or args.out or args.title or args.exclude_layers):
        raise ValueError(f"the grid file {args.config} sets the tables and the report's settings; give only --config")
    if args.config is None and not args.results:
        raise ValueError("give results tables or --config")
    page = (write_grid_report(read_grid(args.config)) if args.config is not None else
            report_runs(args.results, args.out, title=args.title, exclude_layers=args.exclude_layers))
    print(f"report: {page}")


@command("wall time and FLOPs of fitting and scoring each probe per layer",
         ("run_dir", "--data-dir", "--source", "--train-subset", "--test-subset", "--layers", "--probes",
          "--repeats", "--subspace-labels", "--variance"), probes="all")
def cmd_cost(args) -> None:
    """Load the final members of a run directory, then time (best of --repeats after a warm-up) and count the
    FLOPs of fitting and scoring each probe on each probe layer; print a Markdown table and write
    RUN_DIR/cost.csv and RUN_DIR/cost.md."""
    from jaxmem.experiments.cost import COST_FILE, COST_PAGE, load_run_dataset, run_cost, write_cost_page

    table = run_cost(args.run_dir, load_run_dataset(args.run_dir, args.data_dir, args.source),
                     layers=args.layers or None, probes=probe_names(args.probes), repeats=args.repeats,
                     subspace_labels=one_value(args.subspace_labels, "--subspace-labels"), variance=args.variance,
                     num_train=args.train_subset, num_test=args.test_subset)
    print(write_cost_page(table, args.run_dir, args.repeats))
    print(f"table: {args.run_dir / COST_FILE}; markdown: {args.run_dir / COST_PAGE}")


@command("cross-check jaxmem against a TensorFlow MLP and a PyTorch CNN",
         ("--data-dir", "--models", "--datasets", "--steps", "--cnn-steps", "--seed"), models="mlp,cnn",
         datasets="mnist,cifar10")
def cmd_verify(args) -> int:
    """Forward pass, one step, a short trajectory and MASC predictions vs the reference frameworks (--models mlp,
    cnn) on --datasets mnist, cifar10 (their files if in --data-dir, else synthetic). Needs jaxmem[reference]."""
    from jaxmem.reference import verify

    results = verify.run_all(args.data_dir, steps=args.steps, cnn_steps=args.cnn_steps, seed=args.seed,
                             models=args.models, datasets=args.datasets)
    print(verify.format_report(results))
    return 1 if any(verify.status(r) == "FAIL" for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as error:  # bad input: one clear line, not a traceback
        print(f"jaxmem {args.command}: error: {error}", file=sys.stderr)
        return 2

