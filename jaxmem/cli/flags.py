"""The flags of every ``jaxmem`` command, each defined once (:data:`ARGUMENTS`) with one meaning everywhere, the
parser built from them for the registered commands, and their translation into the library's specs. The
benchmarks share them."""
from __future__ import annotations

import argparse
import functools
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


def one_value(values: list, flag: str):
    """The one value of a list flag where a command takes only one."""
    if len(values) != 1:
        raise ValueError(f"{flag} takes one value in this command, got {','.join(map(str, values))}")
    return values[0]


def probe_names(names: list[str]) -> tuple[str, ...]:
    """The probes of ``--probes``: every registered probe for 'all', else MASC and those named."""
    from jaxmem.probes.registry import PROBES

    return tuple(PROBES) if names == ["all"] else tuple(dict.fromkeys(["masc", *names]))


ARGUMENTS = {  # flag -> argparse keywords, one meaning in every command; a command may give another default
    "results": dict(type=Path, nargs="*", help="results.csv tables written by jaxmem"),
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
    "--subspace-labels": dict(type=nonempty(split_names), default="corrupted", help=(
        "the labels that group a layer's features into class subspaces: corrupted, true, or both comma-separated "
        "where a command probes several (default %(default)s)")),
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
    "--layout": dict(default="cell", choices=["cell", "member"], help=(
        "run directories: one per dataset × model cell, its members one vmapped program (default), or one per "
        "member, so that a rerun with more degrees or seeds trains only the new ones")),
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


COMMANDS: dict[str, tuple] = {}  # name -> (summary, flags, defaults, run), filled by :func:`command`


def command(summary: str, flags, **defaults):
    """Register ``cmd_<name>`` as ``jaxmem <name>``: ``summary`` in the command list, its docstring as the
    description, the shared ``flags`` with these ``defaults``."""
    def register(run):
        COMMANDS[run.__name__.removeprefix("cmd_")] = (summary, flags, defaults, run)
        return run

    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxmem`` parser: one subcommand per registered command, its flags from :data:`ARGUMENTS`."""
    parser = argparse.ArgumentParser(prog="jaxmem", description="Latent generalisation during memorisation, in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (summary, flags, defaults, run) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=summary, description=run.__doc__)
        add_arguments(subparser, flags, **defaults)
        subparser.set_defaults(run=run)
    return parser


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
