"""The ``jaxmem`` command: each subcommand parses its flags into specs, makes one library call and prints what
:mod:`jaxmem.report` renders. Every flag is defined once, in :data:`ARGUMENTS`, and means the same in every command."""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable

from jaxmem.config import LABEL_RULES


def comma_list(kind: Callable[[str], object], what: str) -> Callable[[str], list]:
    """A parser of comma-separated ``kind`` values (``what``: their name in the error)."""
    def parse(text: str) -> list:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None

    return parse


parse_floats, parse_ints, split_names = comma_list(float, "numbers"), comma_list(int, "integers"), comma_list(
    str.strip, "names")


def nonempty(parse: Callable[[str], list]) -> Callable[[str], list]:
    """``parse``, refusing an empty list (argparse then names the flag: ``argument --degrees: is empty ...``)."""
    def parse_nonempty(text: str) -> list:
        if values := parse(text):
            return values
        raise argparse.ArgumentTypeError(f"is empty ({text!r}); give at least one value, comma-separated")

    return parse_nonempty


def parse_positive_int(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_checkpoint_epochs(text: str) -> str | list[int]:
    """``"paper2"`` or comma-separated non-negative epochs."""
    epochs = "paper2" if text.strip() == "paper2" else parse_ints(text)
    if epochs != "paper2" and any(e < 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"epochs must be >= 0, got {text!r}")
    return epochs


def parse_clean_subspaces(text: str) -> str | list[float]:
    """``"auto"``, ``"none"`` (no degree) or comma-separated degrees."""
    return text if text == "auto" else [] if text == "none" else parse_floats(text)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` with 0 <= K < N."""
    k, _, n = text.partition("/")
    if not (k.strip().isdigit() and n.strip().isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(k), int(n)


def parse_variance(text: str) -> float | int:
    from jaxmem.probes.masc import check_variance

    try:
        return check_variance(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_per_model(kind: Callable[[str], float | int]) -> Callable[[str], dict]:
    """``"0.02"`` (every model) or ``"mlp=0.02,cnn=1e-3"`` -> ``{model or "*": value}``."""
    def parse(text: str) -> dict:
        try:
            return {model.strip() or "*": kind(value) for model, _, value in map(lambda part: part.rpartition("="),
                                                                                 split_names(text))}
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a value or model=value pairs, got {text!r}") from None

    return parse


def probe_names(names: list[str]) -> tuple[str, ...]:
    """The probes of ``--probes``: every registered probe for 'all', else MASC and those named."""
    from jaxmem.probes.registry import PROBES

    return tuple(PROBES) if names == ["all"] else tuple(dict.fromkeys(["masc", *names]))


ARGUMENTS = {  # flag -> argparse keywords, one meaning in every command; a command may give another default
    "results": dict(type=Path, nargs="+", help="results.csv tables written by jaxmem"),
    "run_dir": dict(type=Path, help="a run directory written by jaxmem train/run"),
    "--dataset": dict(default="digits", help="mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet or digits"),
    "--datasets": dict(type=split_names, help="comma-separated dataset names (default %(default)s)"),
    "--labels": dict(type=Path, help="a .npy of training labels to start from instead of the dataset's (label "
                                     "rules add noise on top; true labels stay the dataset's)"),
    "--data-dir": dict(help="folder with the original dataset files (default: $JAXMEM_DATA_DIR)"),
    "--source": dict(default="auto", choices=["auto", "files", "tfds", "embedded"]),
    "--train-subset": dict(type=parse_positive_int, help="use only the first N training samples"),
    "--test-subset": dict(type=parse_positive_int, help="use only the first N test samples"),
    "--model": dict(help="mlp, cnn, alexnet_cifar100, alexnet_tiny_imagenet, resnet18 (default: the paper's)"),
    "--models": dict(type=split_names, help="comma-separated model names, 'paper' = the dataset's (default "
                                            "%(default)s)"),
    "--degrees": dict(type=nonempty(parse_floats), help="comma-separated corruption degrees p in [0, 1] (default "
                                                        "%(default)s)"),
    "--seeds": dict(type=nonempty(parse_ints), default="0", help="comma-separated seeds (default %(default)s)"),
    "--label-rule": dict(default="reference", choices=LABEL_RULES, help=(
        "reference: the authors' numpy rule (seed 42, same noise for all seeds); per_member: uniform noise per "
        "seed; pairflip: class c becomes c+1 mod K with probability p, per seed")),
    "--order": dict(choices=["fixed", "shuffle"], help="batch order: fixed (presets) or shuffled per member, epoch"),
    "--max-epochs": dict(type=parse_per_model(int), help="epoch cap: a value, or model=value pairs"),
    "--learning-rate": dict(type=parse_per_model(float), help="learning rate: a value, or model=value pairs"),
    "--batch-size": dict(type=parse_per_model(int), help="batch size: a value, or model=value pairs"),
    "--dropout": dict(type=float, help="dropout after hidden Dense layers (CNN)"),
    "--init": dict(choices=["torch", "flax"], help="initialisers: torch (PyTorch's, the presets') or flax"),
    "--stop-on": dict(choices=["running", "eval"], help="stop rule's train accuracy: running (over the epoch's "
                                                        "steps, the presets') or eval (a pass after it)"),
    "--checkpoint-epochs": dict(type=parse_checkpoint_epochs, default="", help=(
        "epochs whose parameters are kept: comma-separated, or 'paper2' (0, 1, 2, 4, …, 20, 25, 30, …) (default "
        "%(default)r)")),
    "--out": dict(type=Path, help="output folder (default %(default)s: see the description)"),
    "--no-resume": dict(action="store_true", help="start over, deleting this run's outputs"),
    "--skip-memory-check": dict(action="store_true", help="train even if the memory planner says it will not fit"),
    "--quiet": dict(action="store_true", help="no progress bars"),
    "--distributed": dict(action="store_true", help="one of several processes: the members are split over all "
                                                    "their devices, process 0 writes (docs/scaling.md)"),
    "--coordinator-address": dict(help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)"),
    "--num-processes": dict(type=int, help="number of processes (default: $JAX_NUM_PROCESSES)"),
    "--process-id": dict(type=int, help="this process's index, 0 … N-1 (default: $JAX_PROCESS_ID)"),
    "--probes": dict(type=split_names, default="", help=(
        "probes besides MASC (which always runs), comma-separated: linear, ncm, knn, lda, qda, logreg; 'all': every "
        "probe; empty: MASC alone (default %(default)r)")),
    "--variance": dict(type=parse_variance, default=0.99, help="MASC's n: variance fraction kept or components"),
    "--sensitivity": dict(type=parse_floats, default="", help="extra MASC variances n, e.g. 0.25,0.5,0.75,1"),
    "--precision": dict(default="fast", choices=["fast", "exact"]),
    "--memory-budget-gib": dict(type=float, default=2.0, help="larger layers stream into per-class statistics"),
    "--clean-subspaces": dict(type=parse_clean_subspaces, default="auto", help=(
        "degrees q at which members trained at p = 0 are also probed with labels corrupted at q: comma-separated, "
        "'auto' (the run's nonzero degrees) or 'none'")),
    "--bn-mode": dict(default="eval", choices=["eval", "reference"], help=(
        "ResNet BatchNorm when probing: eval (running averages) or reference (train mode per image, as the "
        "authors' dumps)")),
    "--subspace-labels": dict(default="corrupted", choices=["corrupted", "true"], help="labels grouping features"),
    "--subspaces": dict(type=split_names, default="corrupted,true", help="subspace kinds, comma-separated"),
    "--layers": dict(type=split_names, default="", help="comma-separated probe layers (default: the model's)"),
    "--activations": dict(type=Path, help="an .npz (or folder of .npy) of activations from any network "
                                          "(docs/bring-your-own.md)"),
    "--relabel": dict(action="store_true", help="also relabel and fine-tune every cell"),
    "--fine-tune": dict(action="store_true", help="also fine-tune on each method's cleaned training sets (costly)"),
    "--finetune-epochs": dict(type=int, default=30, help="at most this many fine-tuning epochs"),
    "--patience": dict(type=int, default=3, help="fine-tuning's early-stopping patience (epochs)"),
    "--split-seed": dict(type=int, default=2345, help="seed of the 80/20 test split"),
    "--dry-run": dict(action="store_true", help="print the runs and the state of each stage, run nothing"),
    "--config": dict(type=Path, help="a grid file (TOML or JSON: configs/) naming the runs, their stages and "
                                     "settings; the other grid flags then stay unset"),
    "--shard": dict(type=parse_shard, help="K/N: run every N-th cell from the K-th (0 <= K < N), e.g. one job of "
                                           "a job array (docs/scaling.md)"),
    "--keep-bias": dict(action="store_true", help="keep the last layer's bias (default: zero)"),
    "--edit-epoch": dict(type=int, help="edit the parameters kept after this epoch (0: the initialisation), then "
                                        "train on to --continue-to"),
    "--continue-to": dict(type=int, default=100, help="last epoch of the continued training"),
    "--paper-setting": dict(type=int, choices=[1, 10, 40], help="the paper's edit-then-continue: 1 = --edit-epoch "
                                                                "0 --continue-to 99; 10, 40: edit there, to 100"),
    "--folds": dict(type=int, default=5, help="cross-validation folds for cleanlab's probabilities"),
    "--redo": dict(action="store_true", help="delete labels.csv and compute everything again"),
    "--title": dict(),
    "--exclude-layers": dict(type=split_names, default="", help="leave these layers out, e.g. 'input'"),
    "--repeats": dict(type=int, default=3, help="timed calls per phase, the best is kept"),
    "--steps": dict(type=int, default=50, help="MLP trajectory length (float32)"),
    "--cnn-steps": dict(type=int, default=20, help="CNN trajectory length (float64)"),
    "--seed": dict(type=int, default=0, help="jaxmem's initialisation seed"),
}
DATA = ("--labels", "--data-dir", "--source", "--train-subset", "--test-subset")
# the TrainSpec fields a command may override
TRAIN_FLAGS = ("--order", "--max-epochs", "--learning-rate", "--batch-size", "--dropout", "--init", "--stop-on")
TRAINING = ("--dataset", *DATA, "--model", "--degrees", "--seeds", "--label-rule", *TRAIN_FLAGS, "--checkpoint-epochs",
            "--out", "--no-resume", "--skip-memory-check", "--quiet")
DISTRIBUTED = ("--distributed", "--coordinator-address", "--num-processes", "--process-id")
PROBING = ("--probes", "--variance", "--sensitivity", "--precision", "--memory-budget-gib", "--clean-subspaces",
           "--bn-mode")
FINE_TUNING = ("--finetune-epochs", "--patience", "--split-seed")


def add_arguments(parser: argparse.ArgumentParser, flags, **defaults) -> None:
    """The shared ``flags`` of :data:`ARGUMENTS`, with these ``defaults`` (by destination) instead of theirs."""
    for flag in flags:
        dest = flag.lstrip("-").replace("-", "_")
        parser.add_argument(flag, **{**ARGUMENTS[flag], **({"default": defaults[dest]} if dest in defaults else {})})


def data_loader(args) -> Callable[[str], object]:
    """``load(dataset name)`` as the data flags ask (:func:`jaxmem.presets.load_data`)."""
    from jaxmem.presets import load_data

    return functools.partial(load_data, data_dir=args.data_dir, source=args.source, labels=args.labels,
                             train_subset=args.train_subset, test_subset=args.test_subset)


def training(args):
    """The :class:`~jaxmem.presets.TrainingRun` of a training command's flags."""
    from jaxmem.members import member_grid
    from jaxmem.presets import paper_model, training_run

    members = member_grid(args.dataset, paper_model(args.dataset, args.model), args.degrees, args.seeds,
                          args.label_rule)
    # Single-process runs only: in a distributed run the planner's tracing delayed the processes unevenly past
    # the coordination service's 30 s barrier timeout (docs/scaling.md gives its per-device figures instead).
    return training_run(members, data_loader(args), spec_overrides(args), out=args.out,
                        checkpoint_epochs=args.checkpoint_epochs,
                        check_memory=not args.skip_memory_check and not getattr(args, "distributed", False))


def spec_overrides(args) -> dict:
    """``{TrainSpec field: value or {model or "*": value}}`` of the flags in :data:`TRAIN_FLAGS`."""
    return {dest: getattr(args, dest) for dest in (flag[2:].replace("-", "_") for flag in TRAIN_FLAGS)}


def fit(run, args, mesh=None):
    from jaxmem.train import fit_members

    return fit_members(run.dataset, run.members, run.spec, run.out, resume=not args.no_resume,
                       progress=not args.quiet, checkpoint_epochs=run.checkpoint_epochs, mesh=mesh)


def probe_spec(args, **fields):
    """The :class:`~jaxmem.config.ProbeSpec` of the probing flags a command has, with ``fields``."""
    from jaxmem.config import ProbeSpec

    given = {name: getattr(args, name) for name in ("variance", "sensitivity", "precision", "bn_mode")
             if hasattr(args, name)}
    if hasattr(args, "memory_budget_gib"):
        given["memory_budget"] = args.memory_budget_gib * 2**30
    if hasattr(args, "clean_subspaces"):
        given["clean_degrees"] = (sorted({d for d in args.degrees if d > 0}) if args.clean_subspaces == "auto"
                                  else args.clean_subspaces)
    return ProbeSpec(probes=probe_names(args.probes), **given, **fields)


def member_mesh(args):
    """With ``--distributed``: join the other processes and return the mesh over all their devices; else None.
    Must run before anything else uses JAX."""
    from jaxmem.sharding import distributed_mesh

    return distributed_mesh(args.coordinator_address, args.num_processes, args.process_id) if args.distributed else None


COMMANDS: dict[str, tuple] = {}


def command(summary: str, flags, **defaults):
    """Register ``cmd_<name>`` as ``jaxmem <name>``: ``summary`` in the command list, its docstring as the
    description, the shared ``flags`` with these ``defaults``."""
    def register(run):
        COMMANDS[run.__name__.removeprefix("cmd_")] = (summary, flags, defaults, run)
        return run

    return register


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

    spec = probe_spec(args, subspaces=(args.subspace_labels,))
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
        print(f"probes on the input layer of {args.dataset} ({args.subspace_labels}-label subspaces, "
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


@command("a resumable grid: datasets × models × degrees × seeds into one results table",
         ("--config", "--datasets", "--models", *DATA, "--degrees", "--seeds", "--label-rule", *TRAIN_FLAGS, *PROBING,
          "--relabel", *FINE_TUNING, "--out", "--dry-run", "--shard", "--quiet", *DISTRIBUTED),
         datasets="digits", models="paper", degrees="0,0.4,0.8", out=Path("runs/sweep"))
def cmd_sweep(args) -> None:
    """Run the main job (train to memorisation, probe every layer) for every (dataset, model) cell, degrees ×
    seeds as members of one program, in OUT/<dataset>-<model>/; finished cells are skipped, an interrupted one
    resumes. OUT/results.csv (and OUT/relabel.csv) combines the finished cells; then run 'jaxmem report
    OUT/results.csv'. With --config the grid, its stages and settings come from a grid file (default OUT: the
    file's)."""
    if args.config is not None:
        return sweep_config(args)
    from jaxmem.experiments.sweep import cell_spec, cell_status, run_sweep, shard_cells, sweep_cells
    from jaxmem.report import sweep_plan_text, write_summary
    from jaxmem.train.rundir import is_writer

    cells, overrides = sweep_cells(args.datasets, args.models), spec_overrides(args)
    print(sweep_plan_text(args.out, [(cell.name, cell_status(args.out, cell), cell_spec(cell, overrides))
                                     for cell in shard_cells(cells, args.shard)], args.degrees, args.seeds))
    if args.dry_run:
        return
    table = run_sweep(cells, args.degrees, args.seeds, args.out, data_loader(args), label_rule=args.label_rule,
                      overrides=overrides, relabel=args.relabel, relabel_options={
                          "max_epochs": args.finetune_epochs, "patience": args.patience, "split_seed": args.split_seed},
                      progress=not args.quiet, mesh=member_mesh(args), probing=probe_spec(args), shard=args.shard)
    if is_writer():
        print(f"results: {args.out / 'results.csv'}; summary: {write_summary(table, args.out)}; "
              f"report: jaxmem report {args.out / 'results.csv'}")


def sweep_config(args) -> None:
    """``jaxmem sweep --config FILE``: the grid of a file (:mod:`jaxmem.runner`); flags that the file sets are
    refused."""
    from jaxmem.runner import grid_runs, grid_text, read_grid, run_grid, run_states, shard_runs

    defaults = vars(build_parser().parse_args(["sweep"]))
    kept = {"config", "out", "dry_run", "shard", "quiet", "data_dir", "source", "run", "command"}
    given = [name for name, value in vars(args).items() if name not in kept and value != defaults.get(name)]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} is set by the grid file {args.config}; leave it out")
    grid = read_grid(args.config)
    out = args.out if args.out != defaults["out"] else Path(grid.out)
    runs = shard_runs(grid_runs(grid), args.shard)
    if args.dry_run:
        print(grid_text(grid, runs, [run_states(grid, run, out) for run in runs], out))
        return
    load = functools.partial(_grid_loader, data_dir=args.data_dir, source=args.source)
    states = run_grid(grid, load, out=out, shard=args.shard, progress=not args.quiet)
    print(grid_text(grid, runs, states, out))


def _grid_loader(name: str, data_dir=None, source="auto", **data):
    from jaxmem.presets import load_data

    return load_data(name, data_dir, data.pop("source", source), **data)


@command("train keeping parameters on the paper-2 epoch schedule, then probe every layer at every kept epoch",
         (*TRAINING, "--probes", "--variance", "--subspaces", "--layers"), degrees="0.8", checkpoint_epochs="paper2",
         probes="linear")
def cmd_dynamics(args) -> None:
    """Train members keeping their parameters at the epochs of --checkpoint-epochs, then probe the layers at
    every kept epoch with MASC and the other --probes; rows with their epoch go to OUT/results.csv. Resumable."""
    from jaxmem.experiments.dynamics import run_dynamics
    from jaxmem.models import chosen_probe_layers, trained_probe_layers
    from jaxmem.report import dynamics_text

    run = training(args)
    model = run.members[0].model
    table = run_dynamics(*run[:4], checkpoint_epochs=run.checkpoint_epochs, resume=not args.no_resume,
                         progress=not args.quiet, probing=probe_spec(args, subspaces=args.subspaces),
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
        model, rows = edit_at_stop(*run[:4], keep_bias=args.keep_bias, subspace_labels=args.subspace_labels)
        print(edit_text(model, rows, run.members, subspace_labels=args.subspace_labels, keep_bias=args.keep_bias))
        print(f"results: {run.out / 'results.csv'}")
        return
    table = edit_then_continue(*run[:4], edit_epoch=edit_epoch, until_epoch=continue_to, keep_bias=args.keep_bias,
                               progress=not args.quiet)
    path = edit_continue_path(run.out, edit_epoch)
    print(edit_continue_text(table, edit_epoch))
    print(f"table: {path}; plot: {plot_edit_continue(table, path.with_suffix('.png'))}")


@command("relabel the training set with the best layer's MASC predictions and fine-tune the memorised model",
         (*TRAINING, "--subspaces", "--layers", *FINE_TUNING, "--variance"), degrees="0.8")
def cmd_relabel(args) -> None:
    """Train (or reuse OUT); relabel the training set with the MASC predictions of each member's best layer on 20 %
    of the test set, fine-tune with early stopping on it, and report the other 80 % and the labels fixed and
    broken in OUT/relabel.csv."""
    from jaxmem.experiments.relabel import RELABEL_FILE, relabel_and_finetune
    from jaxmem.report import relabel_markdown

    run = training(args)
    fit(run, args)
    table = relabel_and_finetune(*run[:4], subspaces=args.subspaces, layers=args.layers or None,
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


@command("summary table and plots from a results table", ("results", "--out", "--title", "--exclude-layers"))
def cmd_report(args) -> None:
    """report.md with the summary table and PNG plots in --out (default: beside the first table), with the
    sections of relabel.csv, labels.csv and edit_continue_<E>.csv found beside it. Several tables are joined
    (members numbered apart) and written into --out, so that the page can be rebuilt from that folder alone."""
    from jaxmem.report import report_runs

    print(f"report: {report_runs(args.results, args.out, title=args.title, exclude_layers=args.exclude_layers)}")


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
                     subspace_labels=args.subspace_labels, variance=args.variance, num_train=args.train_subset,
                     num_test=args.test_subset)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxmem", description="Latent generalisation during memorisation, in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (summary, flags, defaults, run) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=summary, description=run.__doc__)
        add_arguments(subparser, flags, **defaults)
        subparser.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError) as error:  # bad input: one clear line, not a traceback
        print(f"jaxmem {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
