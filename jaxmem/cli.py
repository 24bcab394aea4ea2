"""The ``jaxmem`` command: thin argparse subcommands that build specs and call one library function each."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from jaxmem.config import LABEL_RULES, MemberSpec


def parse_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def nonempty(parse: Callable[[str], list]) -> Callable[[str], list]:
    """``parse``, refusing an empty list (argparse then names the flag: ``argument --degrees: is empty ...``)."""
    def parse_nonempty(text: str) -> list:
        values = parse(text)
        if not values:
            raise argparse.ArgumentTypeError(f"is empty ({text!r}); give at least one value, comma-separated")
        return values

    return parse_nonempty


def parse_positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_checkpoint_epochs(text: str) -> str | list[int]:
    """``"paper2"`` or comma-separated non-negative epochs."""
    if text.strip() == "paper2":
        return "paper2"
    epochs = parse_ints(text)
    if any(e < 0 for e in epochs):
        raise argparse.ArgumentTypeError(f"epochs must be >= 0, got {text!r}")
    return epochs


def parse_variance(text: str) -> float | int:
    from jaxmem.probes.masc import check_variance

    try:
        return check_variance(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str | None = "digits") -> None:
    """Where the data comes from and which part of it; ``--dataset`` unless ``default_dataset`` is None."""
    if default_dataset is not None:
        parser.add_argument("--dataset", default=default_dataset,
                            help="mnist, fashion_mnist, cifar10, cifar100, tiny_imagenet or digits (embedded)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="a .npy of training labels (e.g. human labels) the members start from instead of the "
                             "dataset's; label rules add noise on top (degree 0 keeps them); true labels stay the "
                             "dataset's")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the original dataset files (default: $JAXMEM_DATA_DIR)")
    parser.add_argument("--source", default="auto", choices=["auto", "files", "tfds", "embedded"])
    parser.add_argument("--train-subset", type=parse_positive_int, default=None,
                        help="use only the first N training samples (corruption then applies to them)")
    parser.add_argument("--test-subset", type=parse_positive_int, default=None,
                        help="use only the first N test samples")


def load_data(args, name: str | None = None):
    """The dataset ``name`` (default ``args.dataset``) as the data arguments ask."""
    from jaxmem.data import load_dataset, subset, with_train_labels

    dataset = load_dataset(name or args.dataset, args.data_dir, args.source)
    if args.labels is not None:
        dataset = with_train_labels(dataset, args.labels)
    if args.train_subset is not None or args.test_subset is not None:
        dataset = subset(dataset, args.train_subset, args.test_subset)
    return dataset


def add_member_arguments(parser: argparse.ArgumentParser, degrees: str, seeds: str = "0") -> None:
    parser.add_argument("--degrees", type=nonempty(parse_floats), default=parse_floats(degrees),
                        help=f"comma-separated label corruption degrees p in [0, 1] (default {degrees})")
    parser.add_argument("--seeds", type=nonempty(parse_ints), default=parse_ints(seeds),
                        help=f"comma-separated seeds (default {seeds})")
    parser.add_argument("--label-rule", default="reference", choices=LABEL_RULES,
                        help="reference: the authors' numpy rule (seed 42, same noise for all seeds); "
                             "per_member: independent uniform noise per seed; pairflip: class c becomes c+1 mod K "
                             "with probability p, per seed")


def split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def print_table(header: list[str], rows: list[list]) -> None:
    from jaxmem.report import format_table

    print(format_table(header, rows))


# --------------------------------------------------------------------------------------------------- probe


def add_probe_parser(subparsers) -> None:
    parser = subparsers.add_parser("probe", help="probes on the input layer at given corruption degrees, or on "
                                                 "activations from any network",
                                   description="Fit MASC (and any other probe) on the flattened inputs with "
                                               "corrupted (or true) labels, or on every layer of an activations "
                                               "file, and report test/train accuracies and components per class.")
    add_data_arguments(parser)
    add_member_arguments(parser, degrees="0")
    parser.add_argument("--variance", type=parse_variance, default=0.99,
                        help="fraction of variance kept (0 < n < 1) or an integer number of components")
    parser.add_argument("--precision", default="fast", choices=["fast", "exact"])
    parser.add_argument("--subspace-labels", default="corrupted", choices=["corrupted", "true"],
                        help="the input layer's subspaces (activations: corrupted, and true with y_train_true)")
    parser.add_argument("--out", type=Path, help="run directory to write afresh: results.csv, config.json, "
                                                 "members.csv, summary.md (with --activations default "
                                                 "runs/<name>; without, nothing is written)")
    parser.add_argument("--activations", type=Path, default=None,
                        help="probe every layer of activations dumped from any network instead of a dataset's "
                             "inputs: an .npz (or a folder of .npy files) with <layer>/train, <layer>/test, "
                             "y_train, y_test and optionally y_train_true (see docs/bring-your-own.md)")
    parser.add_argument("--probes", default="",
                        help="probes besides MASC, comma-separated: linear, ncm, knn, lda, qda, logreg, or 'all'")
    parser.add_argument("--sensitivity", type=parse_floats, default=[],
                        help="extra MASC variances n, e.g. 0.25,0.5,0.75,1")
    parser.add_argument("--memory-budget-gib", type=float, default=2.0,
                        help="layers larger than this stream (from memory maps) into per-class statistics")
    parser.set_defaults(run=cmd_probe)


def cmd_probe(args) -> None:
    from jaxmem.config import ProbeSpec
    from jaxmem.experiments import probing as probing_runs
    from jaxmem.report import input_probe_text, layer_probe_text, write_summary
    from jaxmem.results import read_rows

    probing = ProbeSpec(probes=selected_probe_names(args.probes), variance=args.variance,
                        sensitivity=args.sensitivity, precision=args.precision, subspaces=(args.subspace_labels,),
                        memory_budget=args.memory_budget_gib * 2**30)
    if args.activations is not None:
        from jaxmem.experiments.activations import load_activations

        acts = load_activations(args.activations)
        run = probing_runs.probe_activations(acts, probing)
        out = probing_runs.write_probe_run(run, args.out or Path("runs") / acts.name, probing,
                                           {"activations": str(args.activations)})
        print(f"{acts.name}: {len(acts.layers)} layers, {len(acts.y_train)} train / {len(acts.y_test)} test "
              f"samples, {acts.num_classes} classes; test accuracy ({args.precision} mode)")
        print(layer_probe_text(run.rows, run.skipped))
    else:
        members = [MemberSpec(args.dataset, "none", p, s, args.label_rule) for p in args.degrees for s in args.seeds]
        run = probing_runs.probe_dataset_inputs(load_data(args), members, probing)
        print(f"probes on the input layer of {args.dataset} ({args.subspace_labels}-label subspaces, "
              f"n = {args.variance}, {args.precision} mode)")
        print(input_probe_text(run.rows))
        out = args.out and probing_runs.write_probe_run(run, args.out, probing, {"dataset": args.dataset})
    if out:
        results = out / "results.csv"
        summary = write_summary(read_rows(results), out)
        print(f"results: {results}; summary: {summary}; report: jaxmem report {results}")


def selected_probe_names(text: str) -> list[str]:
    """The probes of a ``--probes`` value: every registered probe for 'all', else MASC and those named."""
    from jaxmem.probes.registry import PROBES

    return list(PROBES) if text == "all" else with_masc(text)


# ------------------------------------------------------------------------------------------- train and run


def add_training_arguments(parser: argparse.ArgumentParser, *, degrees: str) -> None:
    add_data_arguments(parser)
    parser.add_argument("--model", default=None, help="mlp, cnn, alexnet_cifar100, alexnet_tiny_imagenet, "
                                                      "resnet18 (default: the dataset's paper model)")
    add_member_arguments(parser, degrees=degrees)
    parser.add_argument("--order", default=None, choices=["fixed", "shuffle"],
                        help="batch order: fixed (paper preset) or shuffled per member and epoch")
    parser.add_argument("--max-epochs", type=int, default=None, help="epoch cap (default: the preset's)")
    parser.add_argument("--learning-rate", type=float, default=None, help="override the preset's learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--dropout", type=float, default=None, help="dropout after hidden Dense layers (CNN)")
    parser.add_argument("--init", default=None, choices=["torch", "flax"],
                        help="parameter initialisers: torch (PyTorch's defaults, the paper preset) or flax")
    parser.add_argument("--stop-on", default=None, choices=["running", "eval"],
                        help="stop rule's train accuracy: running (counted over the epoch's steps, as the authors' "
                             "trainers; every preset) or eval (a full pass after the epoch); both are recorded")
    parser.add_argument("--checkpoint-epochs", type=parse_checkpoint_epochs, default=[],
                        help="epochs whose parameters are kept for dynamics: comma-separated, or 'paper2' "
                             "(0, 1, 2, 4, …, 20, 25, 30, …; every 10th after 20 for tiny_imagenet)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<dataset>-<model>)")
    parser.add_argument("--no-resume", action="store_true", help="start over, deleting this run's outputs")
    parser.add_argument("--skip-memory-check", action="store_true",
                        help="train even when the memory planner says the members will not fit the device")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--distributed`` and where to find the other processes (see docs/scaling.md)."""
    parser.add_argument("--distributed", action="store_true",
                        help="one of several processes (jax.distributed): the members are split over all devices "
                             "of all processes, process 0 writes OUT (which every process must see)")
    parser.add_argument("--coordinator-address", default=None,
                        help="host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS or the cluster's)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="number of processes (default: $JAX_NUM_PROCESSES or the cluster's)")
    parser.add_argument("--process-id", type=int, default=None,
                        help="this process's index, 0 … N-1 (default: $JAX_PROCESS_ID or the cluster's)")


def member_mesh_from_args(args):
    """With ``--distributed``: join the other processes and return the mesh over all their devices; else None.
    Must run before anything else uses JAX."""
    if not args.distributed:
        return None
    from jaxmem.sharding import distributed_mesh

    return distributed_mesh(args.coordinator_address, args.num_processes, args.process_id)


def is_main_process() -> bool:
    """Whether this process prints summaries and writes files beside the run (process 0)."""
    import jax

    return jax.process_index() == 0


def training_setup(args):
    """Dataset, members, TrainSpec, run directory and checkpoint epochs from the parsed arguments."""
    from jaxmem.config import DEFAULT_MODEL, paper_train_spec
    from jaxmem.members import member_grid
    from jaxmem.train import paper2_epoch_schedule

    model = args.model or DEFAULT_MODEL.get(args.dataset, "mlp")
    spec = paper_train_spec(args.dataset, model)
    overrides = {"order": args.order, "max_epochs": args.max_epochs, "learning_rate": args.learning_rate,
                 "batch_size": args.batch_size, "dropout": args.dropout, "init": args.init,
                 "stop_on": args.stop_on}
    spec = spec.replace(**{k: v for k, v in overrides.items() if v is not None})
    dataset = load_data(args)
    members = member_grid(args.dataset, model, args.degrees, args.seeds, args.label_rule)
    out = args.out or Path("runs") / f"{args.dataset}-{model}"
    if args.checkpoint_epochs == "paper2":
        checkpoint_epochs = paper2_epoch_schedule(spec.max_epochs,
                                                  sparse_step=10 if args.dataset == "tiny_imagenet" else 5)
    else:
        checkpoint_epochs = args.checkpoint_epochs
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a run directory")
    # Single-process runs only: in a distributed run the planner's tracing delayed the processes unevenly past
    # the coordination service's 30 s barrier timeout (docs/scaling.md gives its per-device figures instead).
    if not args.skip_memory_check and not getattr(args, "distributed", False):
        check_memory(dataset, members, spec)
    return dataset, members, spec, out, checkpoint_epochs


def check_memory(dataset, members, spec) -> None:
    """Refuse, with the planner's numbers, a run whose training will not fit the device."""
    from jaxmem.planner import check_fits

    try:
        check_fits(members[0].model, dataset.x_train.shape[1:], dataset.num_classes, spec, len(members),
                   len(dataset.y_train), len(dataset.y_test))
    except ValueError as error:
        raise ValueError(f"{error} (--skip-memory-check to try anyway)") from None


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train members (degrees × seeds) to memorisation, all at once",
                                   description="Train every member of a (dataset, model) in one jitted, vmapped "
                                               "program; resumable; model accuracies per epoch go to "
                                               "OUT/results.csv.")
    add_training_arguments(parser, degrees="0,0.4,0.8")
    add_distributed_arguments(parser)
    parser.set_defaults(run=cmd_train)


def cmd_train(args) -> None:
    from jaxmem.train import fit_members

    mesh = member_mesh_from_args(args)
    dataset, members, spec, out, checkpoint_epochs = training_setup(args)
    result = fit_members(dataset, members, spec, out, resume=not args.no_resume, progress=not args.quiet,
                         checkpoint_epochs=checkpoint_epochs, mesh=mesh)
    if not is_main_process():
        return
    final = result.metrics
    print_table(["member", "degree", "seed", "stop epoch", "train acc", "test acc"],
                [[m, member.degree, member.seed, int(result.stop_epoch[m]),
                  float(final.train_correct[-1, m]) / result.num_train,
                  float(final.test_correct[-1, m]) / result.num_test] for m, member in enumerate(members)])
    print(f"run directory: {out}")


def add_probing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variance", type=parse_variance, default=0.99)
    parser.add_argument("--precision", default="fast", choices=["fast", "exact"])
    parser.add_argument("--memory-budget-gib", type=float, default=2.0,
                        help="layers whose activations exceed this are probed by streaming their Grams")
    parser.add_argument("--probes", default="",
                        help="extra probes besides MASC, comma-separated: linear, ncm, knn, lda, qda, logreg, or "
                             "'all' (on the layers held in memory)")
    parser.add_argument("--sensitivity", type=parse_floats, default=[],
                        help="extra MASC variances n (fractions, or integers = components), e.g. 0.25,0.5,0.75,1")
    parser.add_argument("--clean-subspaces", default="auto",
                        help="degrees q at which members trained at p = 0 are also probed with subspaces from "
                             "labels corrupted at q: comma-separated, 'auto' (the run's nonzero degrees) or 'none'")
    parser.add_argument("--bn-mode", default="eval", choices=["eval", "reference"],
                        help="ResNet BatchNorm when probing: eval (running averages) or reference (train mode on "
                             "each image alone, as the authors' activation dumps); docs/methods.md#models")


def with_masc(names: str) -> list[str]:
    """The probes of a ``--probes`` list of extra probes: MASC, then those named."""
    return list(dict.fromkeys(["masc", *split_names(names)]))


def probe_spec(args):
    """The :class:`~jaxmem.config.ProbeSpec` of the probing arguments."""
    from jaxmem.config import ProbeSpec

    if args.clean_subspaces == "auto":
        clean = sorted({d for d in args.degrees if d > 0})
    elif args.clean_subspaces == "none":
        clean = []
    else:
        clean = parse_floats(args.clean_subspaces)
    return ProbeSpec(probes=selected_probe_names(args.probes), variance=args.variance, precision=args.precision,
                     memory_budget=args.memory_budget_gib * 2**30, sensitivity=args.sensitivity,
                     clean_degrees=clean, bn_mode=args.bn_mode)


def add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="the main job: train members across degrees, probe every layer "
                                               "with MASC, print the summary and write a plot",
                                   description="Train members across corruption degrees to memorisation, probe "
                                               "every layer with MASC (corrupted- and true-label subspaces), "
                                               "print per degree the model's test accuracy and the best layer's "
                                               "MASC test accuracy, and write OUT/results.csv, OUT/summary.md "
                                               "and OUT/layers.png. Default: the embedded digits data, offline.")
    add_training_arguments(parser, degrees="0,0.4,0.8")
    add_probing_arguments(parser)
    add_distributed_arguments(parser)
    parser.set_defaults(run=cmd_run)


def cmd_run(args) -> None:
    from jaxmem.experiments.memorize import run_memorization
    from jaxmem.report import plot_layers, run_text, write_summary

    mesh = member_mesh_from_args(args)
    dataset, members, spec, out, checkpoint_epochs = training_setup(args)
    table = run_memorization(dataset, members, spec, out, resume=not args.no_resume, progress=not args.quiet,
                             checkpoint_epochs=checkpoint_epochs, mesh=mesh, probing=probe_spec(args))
    if not is_main_process():
        return
    print(run_text(table, spec.target_train_accuracy, spec.stop_on))
    print(f"results: {out / 'results.csv'}; summary: {write_summary(table, out)}; "
          f"plot: {plot_layers(table, out / 'layers.png')}")


def parse_per_model(kind: Callable[[str], float | int]) -> Callable[[str], dict]:
    """``"0.02"`` (every model) or ``"mlp=0.02,cnn=1e-3"`` -> ``{model or "*": value}``."""

    def parse(text: str) -> dict:
        values = {}
        try:
            for part in split_names(text):
                model, _, value = part.rpartition("=")
                values[model.strip() or "*"] = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a value or model=value pairs, got {text!r}") from None
        return values

    return parse


def add_sweep_parser(subparsers) -> None:
    parser = subparsers.add_parser("sweep", help="a resumable grid: datasets × models × degrees × seeds into one "
                                                 "results table",
                                   description="Run the main job (train to memorisation, probe every layer) for "
                                               "every (dataset, model) cell, degrees × seeds as members of one "
                                               "program, in OUT/<dataset>-<model>/; finished cells are skipped, an "
                                               "interrupted one resumes. OUT/results.csv (and OUT/relabel.csv) "
                                               "combines the finished cells; then run 'jaxmem report "
                                               "OUT/results.csv'.")
    parser.add_argument("--datasets", type=split_names, default=["digits"], help="comma-separated dataset names")
    parser.add_argument("--models", type=split_names, default=["paper"],
                        help="comma-separated model names; 'paper' = each dataset's paper model")
    add_data_arguments(parser, default_dataset=None)
    add_member_arguments(parser, degrees="0,0.4,0.8")
    parser.add_argument("--learning-rate", type=parse_per_model(float), default={},
                        help="override the presets' learning rate: a value, or model=value pairs")
    parser.add_argument("--batch-size", type=parse_per_model(int), default={}, help="as --learning-rate")
    parser.add_argument("--max-epochs", type=parse_per_model(int), default={}, help="as --learning-rate")
    parser.add_argument("--order", default=None, choices=["fixed", "shuffle"])
    add_probing_arguments(parser)
    parser.add_argument("--relabel", action="store_true", help="also relabel and fine-tune every cell")
    parser.add_argument("--finetune-epochs", type=int, default=30, help="relabel: at most this many epochs")
    parser.add_argument("--patience", type=int, default=3, help="relabel: early-stopping patience (epochs)")
    parser.add_argument("--split-seed", type=int, default=2345, help="relabel: seed of the 80/20 test split")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep directory")
    parser.add_argument("--dry-run", action="store_true", help="print the cells and their settings, run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_distributed_arguments(parser)
    parser.set_defaults(run=cmd_sweep)


def cmd_sweep(args) -> None:
    from jaxmem.experiments.sweep import cell_spec, cell_status, run_sweep, sweep_cells
    from jaxmem.report import write_summary

    cells = sweep_cells(args.datasets, args.models)
    overrides = {"learning_rate": args.learning_rate, "batch_size": args.batch_size, "max_epochs": args.max_epochs,
                 "order": {"*": args.order}}
    members = len(args.degrees) * len(args.seeds)
    print(f"sweep {args.out}: {len(cells)} cells × {members} members (degrees {args.degrees}, seeds {args.seeds})")
    print_table(["cell", "status", "optimiser", "lr", "batch", "max epochs", "stop at train acc"],
                [[cell.name, cell_status(args.out, cell), spec.optimizer, spec.learning_rate, spec.batch_size,
                  spec.max_epochs, spec.target_train_accuracy]
                 for cell, spec in ((cell, cell_spec(cell, overrides)) for cell in cells)])
    if args.dry_run:
        return

    mesh = member_mesh_from_args(args)
    table = run_sweep(cells, args.degrees, args.seeds, args.out, lambda name: load_data(args, name),
                      label_rule=args.label_rule, overrides=overrides, relabel=args.relabel,
                      relabel_options={"max_epochs": args.finetune_epochs, "patience": args.patience,
                                       "split_seed": args.split_seed}, progress=not args.quiet,
                      mesh=mesh, probing=probe_spec(args))
    if not is_main_process():
        return
    print(f"results: {args.out / 'results.csv'}; summary: {write_summary(table, args.out)}; "
          f"report: jaxmem report {args.out / 'results.csv'}")


# ------------------------------------------------------------------------------------------ paper 2: dynamics, edit


def add_dynamics_parser(subparsers) -> None:
    parser = subparsers.add_parser("dynamics", help="train keeping parameters on the paper-2 epoch schedule, then "
                                                    "probe every layer at every kept epoch",
                                   description="Train members keeping their parameters at the epochs of "
                                               "--checkpoint-epochs (default: paper2 = 0, 1, 2, 4, …, 20, 25, 30, "
                                               "…), then probe the layers at every kept epoch with MASC and the "
                                               "extra probes; rows with their epoch go to OUT/results.csv. "
                                               "Resumable.")
    add_training_arguments(parser, degrees="0.8")
    parser.set_defaults(checkpoint_epochs="paper2")
    parser.add_argument("--variance", type=parse_variance, default=0.99)
    parser.add_argument("--probes", default="linear", help="extra probes besides MASC (default: linear)")
    parser.add_argument("--subspaces", default="corrupted,true", help="subspace kinds to probe with")
    parser.add_argument("--layers", default="",
                        help="layers to probe at each kept epoch (default: every probe layer but the input, which "
                             "training does not change)")
    parser.set_defaults(run=cmd_dynamics)


def cmd_dynamics(args) -> None:
    from jaxmem.config import ProbeSpec
    from jaxmem.experiments.dynamics import run_dynamics
    from jaxmem.models import chosen_probe_layers, trained_probe_layers
    from jaxmem.report import dynamics_text

    dataset, members, spec, out, checkpoint_epochs = training_setup(args)
    model = members[0].model
    layers = chosen_probe_layers(model, split_names(args.layers) or trained_probe_layers(model))
    table = run_dynamics(dataset, members, spec, out, checkpoint_epochs=checkpoint_epochs,
                         resume=not args.no_resume, progress=not args.quiet, layers=layers,
                         probing=ProbeSpec(probes=with_masc(args.probes), variance=args.variance,
                                           subspaces=split_names(args.subspaces)))
    print(dynamics_text(table))
    print(f"results: {out / 'results.csv'}")


def add_edit_parser(subparsers) -> None:
    parser = subparsers.add_parser("edit", help="replace the last layer by the linear probe of the layer feeding it",
                                   description="Train members (or reuse a finished run in OUT), fit the linear "
                                               "probe on the layer feeding the last Dense layer (MLP fc4, CNN fc3, "
                                               "AlexNet fc2, ResNet pool) and put its vectors into that layer's "
                                               "kernel; print and append the edited model's accuracies.")
    add_training_arguments(parser, degrees="0.8")
    parser.add_argument("--keep-bias", action="store_true", help="keep the last layer's bias (default: zero)")
    parser.add_argument("--subspace-labels", default="corrupted", choices=["corrupted", "true"])
    parser.add_argument("--edit-epoch", type=int, default=None,
                        help="edit the parameters kept after this epoch (0 = the initialisation) and continue "
                             "training to --continue-to, beside the original run as the unedited control; writes "
                             "OUT/edit_continue_<E>.csv and .png")
    parser.add_argument("--continue-to", type=int, default=100, help="last epoch of the continued training")
    parser.add_argument("--paper-setting", type=int, default=None, choices=[1, 10, 40],
                        help="the paper's edit-then-continue settings: 1 = edit the untrained initialisation and "
                             "train 99 more epochs (--edit-epoch 0 --continue-to 99); 10 and 40 = edit after that "
                             "epoch and continue to 100")
    parser.set_defaults(run=cmd_edit)


def cmd_edit(args) -> None:
    from jaxmem.experiments.dynamics import PAPER_EDIT_SETTINGS, edit_at_stop, edit_continue_path, edit_then_continue
    from jaxmem.report import edit_continue_text, edit_text, plot_edit_continue
    from jaxmem.train import fit_members

    if args.paper_setting is not None:
        args.edit_epoch, args.continue_to = PAPER_EDIT_SETTINGS[args.paper_setting]
    dataset, members, spec, out, checkpoint_epochs = training_setup(args)
    if args.edit_epoch is not None and args.edit_epoch not in checkpoint_epochs:
        checkpoint_epochs = sorted({*checkpoint_epochs, args.edit_epoch})
    fit_members(dataset, members, spec, out, resume=not args.no_resume, progress=not args.quiet,
                checkpoint_epochs=checkpoint_epochs)
    if args.edit_epoch is None:
        model, rows = edit_at_stop(dataset, members, spec, out, keep_bias=args.keep_bias,
                                   subspace_labels=args.subspace_labels)
        print(edit_text(model, rows, members, subspace_labels=args.subspace_labels, keep_bias=args.keep_bias))
        print(f"results: {out / 'results.csv'}")
        return
    table = edit_then_continue(dataset, members, spec, out, edit_epoch=args.edit_epoch,
                               until_epoch=args.continue_to, keep_bias=args.keep_bias, progress=not args.quiet)
    path = edit_continue_path(out, args.edit_epoch)
    print(edit_continue_text(table, args.edit_epoch))
    print(f"table: {path}; plot: {plot_edit_continue(table, path.with_suffix('.png'))}")


# -------------------------------------------------------------------------------- paper 1: relabel and fine-tune


def add_relabel_parser(subparsers) -> None:
    parser = subparsers.add_parser("relabel", help="relabel the training set with the best layer's MASC predictions "
                                                   "and fine-tune the memorised model",
                                   description="Train members (or reuse a finished run in OUT); split the test set "
                                               "80/20 (seeded); pick per member the layer whose MASC is best on the "
                                               "20 % part; relabel the training set with its predictions; fine-tune "
                                               "with a fresh optimiser, early stopping on the 20 % part; report the "
                                               "80 % part and the share of labels fixed and broken. Writes "
                                               "OUT/relabel.csv.")
    add_training_arguments(parser, degrees="0.8")
    parser.add_argument("--subspaces", default="corrupted,true", help="subspace kinds to relabel with")
    parser.add_argument("--layers", default="", help="candidate layers (default: all probe layers)")
    parser.add_argument("--finetune-epochs", type=int, default=30, help="at most this many fine-tuning epochs")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    parser.add_argument("--split-seed", type=int, default=2345, help="seed of the 80/20 test split")
    parser.add_argument("--variance", type=parse_variance, default=0.99)
    parser.set_defaults(run=cmd_relabel)


def cmd_relabel(args) -> None:
    from jaxmem.experiments.relabel import RELABEL_FILE, relabel_and_finetune
    from jaxmem.report import relabel_markdown
    from jaxmem.train import fit_members

    dataset, members, spec, out, checkpoint_epochs = training_setup(args)
    fit_members(dataset, members, spec, out, resume=not args.no_resume, progress=not args.quiet,
                checkpoint_epochs=checkpoint_epochs)
    table = relabel_and_finetune(dataset, members, spec, out, subspaces=split_names(args.subspaces),
                                 layers=split_names(args.layers) or None, max_epochs=args.finetune_epochs,
                                 patience=args.patience, split_seed=args.split_seed, variance=args.variance,
                                 progress=not args.quiet)
    print(relabel_markdown(table))
    print(f"table: {out / RELABEL_FILE}")


# ------------------------------------------------------------------------------------- which labels are wrong


def add_labels_parser(subparsers) -> None:
    parser = subparsers.add_parser("labels", help="which training labels are wrong: the model, each probe and "
                                                  "cleanlab scored against the known corruption",
                                   description="For every member of a trained run (at its final parameters), "
                                               "flag and rank the training labels that are wrong by the model "
                                               "itself, each probe (layer chosen on 20 % of the test set) and "
                                               "confident learning (cleanlab on cross-validated logistic "
                                               "regression, and on the model's softmax); score them against the "
                                               "known corruption mask; optionally fine-tune on each cleaned "
                                               "training set. Appends RUN_DIR/labels.csv (a rerun computes only "
                                               "what is missing), writes RUN_DIR/labels.md and labels_pr.png. "
                                               "Needs jaxmem[labels].")
    add_run_dir_arguments(parser)
    parser.add_argument("--probes", default="all", help="comma-separated probes (MASC always), or 'all'")
    parser.add_argument("--layers", default="", help="candidate layers (default: all probe layers)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for cleanlab's probabilities")
    parser.add_argument("--fine-tune", action="store_true",
                        help="also fine-tune every member on each method's relabelled and dropped-out training set "
                             "(the costly part)")
    parser.add_argument("--finetune-epochs", type=int, default=30, help="at most this many fine-tuning epochs")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience (epochs)")
    parser.add_argument("--split-seed", type=int, default=2345, help="seed of the 80/20 test split")
    parser.add_argument("--variance", type=parse_variance, default=0.99)
    parser.add_argument("--redo", action="store_true", help="delete labels.csv and compute everything again")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=cmd_labels)


def cmd_labels(args) -> None:
    from jaxmem.experiments.cost import load_run_dataset
    from jaxmem.experiments.labels import LABELS_FILE, import_cleanlab, label_issues
    from jaxmem.probes.registry import PROBES
    from jaxmem.report import labels_section

    import_cleanlab()
    dataset = load_run_dataset(args.run_dir, args.data_dir, args.source)
    run = label_issues(args.run_dir, dataset, probes=tuple(PROBES) if args.probes == "all" else
                       with_masc(args.probes), layers=split_names(args.layers) or None, folds=args.folds,
                       split_seed=args.split_seed, variance=args.variance, fine_tune=args.fine_tune,
                       finetune_epochs=args.finetune_epochs, patience=args.patience, redo=args.redo,
                       progress=not args.quiet)
    if run.skipped:
        print(f"skipped members {run.skipped}: no training label is wrong (p = 0)", file=sys.stderr)
    if not run.computed:
        print(f"{args.run_dir / LABELS_FILE} already has every member{' and fine-tuning' * args.fine_tune}: done")
    section = labels_section(run.table, args.run_dir)
    (args.run_dir / "labels.md").write_text(section)
    print(section)
    print(f"table: {args.run_dir / LABELS_FILE}; section: {args.run_dir / 'labels.md'}")


# --------------------------------------------------------------------------------------------------- report


def add_report_parser(subparsers) -> None:
    parser = subparsers.add_parser("report", help="summary table and plots from a results table",
                                   description="Read a results.csv (any experiment) and write report.md with the "
                                               "paper-style summary table and PNG plots into --out (with the "
                                               "relabel-and-fine-tune table when relabel.csv is beside it, the "
                                               "wrong-label section when labels.csv is, the edit-then-continue "
                                               "curves when edit_continue_<E>.csv is). Several tables (e.g. one "
                                               "run directory per member) are joined into one, their members "
                                               "numbered apart; the joined tables are then written into --out "
                                               "(results.csv.gz and its siblings) so that the page can be rebuilt "
                                               "from that folder alone.")
    parser.add_argument("results", type=Path, nargs="+", help="results.csv tables written by jaxmem")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: beside the first table)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--exclude-layers", type=split_names, default=[],
                        help="leave these layers out of the tables and plots, e.g. 'input' to rank only the model's "
                             "own layers (the relabel table keeps the layers its runs chose)")
    parser.set_defaults(run=cmd_report)


SIBLING_TABLES = ("relabel.csv", "labels.csv")  # beside a results table, with its member ids


def cmd_report(args) -> None:
    from jaxmem.report import write_report
    from jaxmem.results import join_runs, read_rows, write_table

    edits = sorted({table.name for path in args.results for table in path.parent.glob("edit_continue_*.csv")})
    runs = []
    for path in args.results:
        folder = path.parent
        siblings = [folder / name for name in SIBLING_TABLES] + [folder / name for name in edits]
        runs.append([read_rows(path)] + [read_rows(p) if p.exists() else None for p in siblings])
    table, relabel, labels, *edit_continue = join_runs(runs)
    if table.empty:
        raise ValueError(f"{', '.join(map(str, args.results))}: no rows")
    out = args.out or args.results[0].parent
    if len(args.results) > 1:  # the joined tables, so that `jaxmem report OUT/results.csv.gz` rebuilds the page
        out.mkdir(parents=True, exist_ok=True)
        for name, joined in zip(("results.csv.gz", *SIBLING_TABLES, *edits),
                                (table, relabel, labels, *edit_continue)):
            if joined is not None:
                write_table(joined, out / name)
    table = table[~table["layer"].isin(args.exclude_layers)]
    page = write_report(table, out, title=args.title or f"jaxmem report: {args.results[0]}", relabel=relabel,
                        labels=labels, edit_continue=dict(zip(edits, edit_continue)))
    print(f"report: {page}")


# ----------------------------------------------------------------------------------------------------- cost


def add_run_dir_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR and where its dataset's files are, for the commands that read a finished run."""
    parser.add_argument("run_dir", type=Path, help="a run directory written by jaxmem train/run")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the original dataset files (default: $JAXMEM_DATA_DIR)")
    parser.add_argument("--source", default="auto", choices=["auto", "files", "tfds", "embedded"])


def add_cost_parser(subparsers) -> None:
    parser = subparsers.add_parser("cost", help="wall time and FLOPs of fitting and scoring each probe per layer",
                                   description="Load the final members of a run directory, then time (best of "
                                               "--repeats after a warm-up) and count the FLOPs of fitting and "
                                               "scoring each probe on each probe layer; print a Markdown table "
                                               "and write RUN_DIR/cost.csv and RUN_DIR/cost.md.")
    add_run_dir_arguments(parser)
    parser.add_argument("--train-subset", type=parse_positive_int, default=None,
                        help="fit on the first N of the run's training samples (labels as in training)")
    parser.add_argument("--test-subset", type=int, default=None, help="score the first N of the run's test samples")
    parser.add_argument("--layers", default="", help="comma-separated probe layers (default: all of the model's)")
    parser.add_argument("--probes", default="", help="comma-separated: masc, linear, ncm, knn, lda, qda, logreg "
                                                     "(default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per phase, the best is kept")
    parser.add_argument("--subspace-labels", default="corrupted", choices=["corrupted", "true"])
    parser.add_argument("--variance", type=parse_variance, default=0.99)
    parser.set_defaults(run=cmd_cost)


def cmd_cost(args) -> None:
    import jax

    from jaxmem.experiments.cost import COST_FILE, cost_markdown, load_run_dataset, run_cost
    from jaxmem.probes.registry import PROBES

    dataset = load_run_dataset(args.run_dir, args.data_dir, args.source)
    table = run_cost(args.run_dir, dataset, layers=split_names(args.layers) or None,
                     probes=split_names(args.probes) or tuple(PROBES), repeats=args.repeats,
                     subspace_labels=args.subspace_labels, variance=args.variance, num_train=args.train_subset,
                     num_test=args.test_subset)
    shape = table.iloc[0]
    title = (f"Probe cost on {jax.devices()[0].device_kind}: {shape['members']} members, {shape['n_train']} train / "
             f"{shape['n_test']} test samples, best of {args.repeats} after a warm-up")
    markdown = f"{title}\n\n{cost_markdown(table)}\n"
    (args.run_dir / "cost.md").write_text(markdown)
    print(markdown)
    print(f"table: {args.run_dir / COST_FILE}; markdown: {args.run_dir / 'cost.md'}")


# --------------------------------------------------------------------------------------------------- verify


def add_verify_parser(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="cross-check jaxmem against a TensorFlow MLP and a PyTorch CNN",
                                   description="Forward pass, one optimiser step, a short fixed-order trajectory "
                                               "and MASC predictions, jaxmem vs the reference frameworks, on "
                                               "MNIST- and CIFAR-shaped inputs (real files when found in "
                                               "--data-dir, synthetic images otherwise). Needs jaxmem[reference].")
    parser.add_argument("--data-dir", default=None, help="folder with the original files (default: $JAXMEM_DATA_DIR)")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated subset of mlp (vs TensorFlow), "
                                                            "cnn (vs PyTorch)")
    parser.add_argument("--datasets", default="mnist,cifar10", help="input shapes: mnist (28×28×1), cifar10 (32×32×3)")
    parser.add_argument("--steps", type=int, default=50, help="MLP trajectory length (float32)")
    parser.add_argument("--cnn-steps", type=int, default=20, help="CNN trajectory length (float64)")
    parser.add_argument("--seed", type=int, default=0, help="jaxmem's initialisation seed")
    parser.set_defaults(run=cmd_verify)


def cmd_verify(args) -> int:
    from jaxmem.reference import verify

    results = verify.run_all(args.data_dir, steps=args.steps, cnn_steps=args.cnn_steps, seed=args.seed,
                             models=split_names(args.models), datasets=split_names(args.datasets))
    print(verify.format_report(results))
    return 1 if any(verify.status(r) == "FAIL" for r in results) else 0


# ---------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxmem", description="Latent generalisation during memorisation, in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_probe_parser(subparsers)
    add_train_parser(subparsers)
    add_run_parser(subparsers)
    add_sweep_parser(subparsers)
    add_dynamics_parser(subparsers)
    add_edit_parser(subparsers)
    add_relabel_parser(subparsers)
    add_labels_parser(subparsers)
    add_report_parser(subparsers)
    add_cost_parser(subparsers)
    add_verify_parser(subparsers)
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
