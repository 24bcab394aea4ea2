"""Frozen run specifications, the names they may hold, and the paper presets.

Specs are plain frozen dataclasses: hashable, so they can be closed over by jitted factories, and
serialisable with :func:`dataclasses.asdict` into ``config.json`` beside a run's results. This module sits below
every other one and imports none of jaxmem: the models and probes take their names and checks from here
(``tests/test_config.py`` holds them to it).
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LABEL_RULES = ("reference", "per_member", "pairflip")
GIVEN_LABELS = "given"  # the label rule of probed activations files: labels used as supplied, nothing drawn
ORDERS = ("fixed", "shuffle")
OPTIMIZERS = ("sgd", "adam")
INITS = ("torch", "flax")
STOP_RULES = ("running", "eval")
# the names of jaxmem.probes.registry.PROBES, in its order (the report's order too)
PROBE_NAMES = ("masc", "linear", "ncm", "knn", "lda", "qda", "logreg")
PRECISIONS = ("fast", "exact")  # float32 or float64 probing
BN_MODES = ("eval", "reference")  # ResNet BatchNorm when probing: running averages, or per image (the authors')


# ----------------------------------------------------------------------------------------------- probe names


def check_precision(precision: str) -> None:
    """Raise unless ``precision`` is "fast" (float32) or "exact" (float64)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def check_variance(variance) -> float | int:
    """MASC's n: a fraction 0 < n < 1, or an integer number of components n ≥ 1."""
    if isinstance(variance, bool) or not isinstance(variance, (int, float, np.integer, np.floating)):
        raise ValueError(f"variance must be a fraction in (0, 1) or an integer >= 1, got {variance!r}")
    if 0 < variance < 1:
        return float(variance)
    if variance >= 1 and float(variance).is_integer():
        return int(variance)
    raise ValueError(f"variance must be a fraction in (0, 1) or an integer >= 1, got {variance!r}")


_VARIANT = re.compile(r"masc\(n=(.+)\)")


def masc_variant_name(variance: float | int) -> str:
    """The probe name of MASC at a sensitivity variance: ``masc(n=0.5)``, ``masc(n=1)``."""
    return f"masc(n={check_variance(variance):g})"


def variant_variance(name: str) -> float | int | None:
    """The variance of a ``masc(n=…)`` name; None for any other name."""
    match = _VARIANT.fullmatch(name)
    return None if match is None else check_variance(_number(match.group(1)))


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def check_probe_names(names: Sequence[str]) -> tuple[str, ...]:
    """Registered names or ``masc(n=…)`` variants, validated."""
    unknown = []
    for name in names:
        try:
            if name not in PROBE_NAMES and variant_variance(name) is None:
                unknown.append(name)
        except ValueError:
            unknown.append(name)
    if unknown:
        raise ValueError(f"unknown probes {unknown}; choose from {', '.join(PROBE_NAMES)} or masc(n=<variance>)")
    return tuple(names)


def registry_order(name: str) -> tuple:
    """Sort key for probe names: registry order, the ``masc(n=…)`` variants right after ``masc``."""
    if name.startswith("masc("):
        return (0, 1, name)
    return (PROBE_NAMES.index(name) if name in PROBE_NAMES else len(PROBE_NAMES), 0, name)


# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TrainSpec:
    """How one (dataset, model) pair is trained; shared by all members of a program."""

    optimizer: str  # "sgd" (with momentum) or "adam"
    learning_rate: float
    batch_size: int
    target_train_accuracy: float  # a member stops once train accuracy vs its own labels reaches this
    momentum: float = 0.9  # SGD only
    max_epochs: int = 500
    order: str = "fixed"  # "fixed": same batch order every epoch (paper); "shuffle": per member and epoch
    dropout: float = 0.0  # CNN / ResNet dropout after hidden Dense layers (paper 2)
    init: str = "torch"  # "torch": PyTorch's default initialisers (the authors'); "flax": Flax's defaults
    # "running": accuracy counted over the epoch's own optimisation steps (the authors' PyTorch loops);
    # "eval": a full pass over the training set after the epoch
    stop_on: str = "running"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.target_train_accuracy <= 1:
            raise ValueError(f"target_train_accuracy must be in (0, 1], got {self.target_train_accuracy}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.stop_on not in STOP_RULES:
            raise ValueError(f"stop_on must be one of {STOP_RULES}, got {self.stop_on!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def replace(self, **changes) -> "TrainSpec":
        return dataclasses.replace(self, **changes)


def required_correct(target_train_accuracy: float, num_train: int) -> int:
    """Smallest number of correct train samples whose accuracy is ≥ the target (rounded so 0.999·60000 = 59940)."""
    return math.ceil(round(target_train_accuracy * num_train, 6))


@dataclass(frozen=True)
class ProbeSpec:
    """How a run's layers are probed (:mod:`jaxmem.probes.engine`); saved in ``config.json`` beside the
    :class:`TrainSpec`. :attr:`IDENTITY` fields change what an existing row means, so a run directory keeps them
    for good; the others only add rows."""

    probes: tuple[str, ...] = ("masc",)  # names of jaxmem.probes.registry (MASC first)
    variance: float | int = 0.99  # MASC's n: a variance fraction in (0, 1) or an integer number of components
    sensitivity: tuple[float | int, ...] = ()  # extra MASC variances, rows named masc(n=…)
    precision: str = "fast"  # "fast" (float32) or "exact" (float64)
    subspace_labels: tuple[str, ...] = ("corrupted", "true")  # also "corrupted@q" (labels at degree q)
    clean_degrees: tuple[float, ...] = ()  # members trained at p = 0 are also probed with "corrupted@q" subspaces
    memory_budget: float = 2**31  # bytes of features held in memory; larger layers stream
    bn_mode: str = "eval"  # ResNet BatchNorm when probing: "eval" or "reference" (per-image train mode)
    seed: int = 0  # random state of probes that take a key (logistic regression)

    IDENTITY = ("variance", "precision", "bn_mode")

    def __post_init__(self):
        for name in ("probes", "sensitivity", "subspace_labels", "clean_degrees"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (tuple, list)):
                raise ValueError(f"{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "probes", tuple(dict.fromkeys(("masc", *check_probe_names(self.probes)))))
        object.__setattr__(self, "variance", check_variance(self.variance))
        object.__setattr__(self, "sensitivity", tuple(check_variance(v) for v in self.sensitivity))
        check_precision(self.precision)
        for kind in self.subspace_labels:
            if kind not in ("corrupted", "true") and not kind.startswith("corrupted@"):
                raise ValueError(f"unknown subspace labels {kind!r}: use 'corrupted', 'true' or 'corrupted@<degree>'")
            if kind.startswith("corrupted@"):
                _degree(kind.removeprefix("corrupted@"))
        object.__setattr__(self, "clean_degrees", tuple(dict.fromkeys(map(_degree, self.clean_degrees))))
        if not self.memory_budget >= 0:
            raise ValueError(f"memory_budget must be >= 0 bytes, got {self.memory_budget}")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")

    @property
    def identity(self) -> dict:
        """The fields that change an existing row's meaning."""
        return {name: getattr(self, name) for name in self.IDENTITY}

    @property
    def request(self) -> dict:
        """The fields that only add rows."""
        fields = dataclasses.asdict(self)
        return {name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()
                if name not in self.IDENTITY}

    def replace(self, **changes) -> "ProbeSpec":
        return dataclasses.replace(self, **changes)


def _degree(value) -> float:
    try:
        degree = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"corruption degree must be a number in [0, 1], got {value!r}") from None
    if not 0 <= degree <= 1:
        raise ValueError(f"corruption degree must be in [0, 1], got {value!r}")
    return degree


@dataclass(frozen=True)
class MemberSpec:
    """One training run. Members of the same (dataset, model) train together on a leading member axis."""

    dataset: str
    model: str
    degree: float  # label corruption degree p in [0, 1]
    seed: int  # initialisation / shuffling seed; also the corruption seed for the per-member rule
    # "reference": numpy rule (seed 42, same for all seeds); "per_member": uniform noise from the member's seed;
    # "pairflip": c -> c+1 mod K from the member's seed; "given": labels as supplied (probed activations only)
    label_rule: str = "reference"

    def __post_init__(self):
        if not 0.0 <= self.degree <= 1.0:
            raise ValueError(f"corruption degree must be in [0, 1], got {self.degree}")
        if self.label_rule not in (*LABEL_RULES, GIVEN_LABELS):
            raise ValueError(f"label_rule must be one of {(*LABEL_RULES, GIVEN_LABELS)}, got {self.label_rule!r}")


# ----------------------------------------------------------------------------------------------- stage specs
# The settings of the stages after training (jaxmem.runner); each validates its values on construction.

REFERENCE_SPLIT_SEED = 2345  # the authors' random_state of the 80/20 test split (relabel, labels)
SUBSPACE_LABELS = ("corrupted", "true")  # the labels that group a layer's features into class subspaces


def _names(owner: str, field: str, value) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise ValueError(f"{owner}.{field} must be a list of names, got {value!r}")
    return tuple(value)


def _checked(spec, *, probes: bool = False) -> None:
    """Normalise and validate the fields a stage spec shares: probes, layers, subspace_labels (one name, or a list
    of them where the field holds a tuple), variance."""
    owner = type(spec).__name__
    for field in ("probes", "layers", "subspace_labels"):
        if hasattr(spec, field) and not (field == "subspace_labels" and isinstance(spec.subspace_labels, str)):
            object.__setattr__(spec, field, _names(owner, field, getattr(spec, field)))
    if probes:
        object.__setattr__(spec, "probes", check_probe_names(spec.probes))
    if hasattr(spec, "subspace_labels"):
        several = not isinstance(spec.subspace_labels, str)
        given = spec.subspace_labels if several else (spec.subspace_labels,)
        if not given or any(labels not in SUBSPACE_LABELS for labels in given):
            raise ValueError(f"{owner}.subspace_labels must be {'some' if several else 'one'} of {SUBSPACE_LABELS}, "
                             f"got {spec.subspace_labels!r}")
    if hasattr(spec, "variance"):
        object.__setattr__(spec, "variance", check_variance(spec.variance))
    for field in ("max_epochs", "patience", "folds", "repeats", "finetune_epochs"):
        if hasattr(spec, field) and not (isinstance(getattr(spec, field), int) and getattr(spec, field) >= 1):
            raise ValueError(f"{owner}.{field} must be an integer >= 1, got {getattr(spec, field)!r}")


@dataclass(frozen=True)
class EditSpec:
    """The last-layer edit at each member's stop."""

    keep_bias: bool = False
    subspace_labels: str = "corrupted"

    def __post_init__(self):
        _checked(self)


@dataclass(frozen=True)
class DynamicsSpec:
    """Probes at every kept epoch of a run (layers: empty = the layers training changes)."""

    probes: tuple[str, ...] = ("masc", "linear")
    variance: float | int = 0.99
    subspace_labels: tuple[str, ...] = ("corrupted",)
    layers: tuple[str, ...] = ()

    def __post_init__(self):
        _checked(self, probes=True)

    def probing(self) -> ProbeSpec:
        return ProbeSpec(probes=self.probes, variance=self.variance, subspace_labels=self.subspace_labels)


@dataclass(frozen=True)
class EditContinueSpec:
    """Edit the last layer at a kept epoch (0: the initialisation), then train on to ``until_epoch``."""

    edit_epoch: int = 40
    until_epoch: int = 100
    keep_bias: bool = False

    def __post_init__(self):
        if not 0 <= self.edit_epoch < self.until_epoch:
            raise ValueError(f"EditContinueSpec needs 0 <= edit_epoch < until_epoch, got {self.edit_epoch} and "
                             f"{self.until_epoch}")


@dataclass(frozen=True)
class RelabelSpec:
    """Relabel the training set with the best layer's MASC predictions and fine-tune (layers: empty = all)."""

    subspace_labels: tuple[str, ...] = ("corrupted", "true")
    layers: tuple[str, ...] = ()
    max_epochs: int = 30
    patience: int = 3
    split_seed: int = REFERENCE_SPLIT_SEED
    variance: float | int = 0.99

    def __post_init__(self):
        _checked(self)


@dataclass(frozen=True)
class LabelsSpec:
    """Which training labels are wrong, by the model, each probe and cleanlab (layers: empty = all)."""

    probes: tuple[str, ...] = PROBE_NAMES
    layers: tuple[str, ...] = ()
    folds: int = 5
    split_seed: int = REFERENCE_SPLIT_SEED
    variance: float | int = 0.99
    fine_tune: bool = False
    finetune_epochs: int = 30
    patience: int = 3

    def __post_init__(self):
        _checked(self, probes=True)
        if self.folds < 2:
            raise ValueError(f"LabelsSpec.folds must be >= 2, got {self.folds}")


@dataclass(frozen=True)
class CostSpec:
    """Wall time and FLOPs of fitting and scoring each probe on each layer (layers: empty = all)."""

    probes: tuple[str, ...] = PROBE_NAMES
    layers: tuple[str, ...] = ()
    repeats: int = 3
    subspace_labels: str = "corrupted"
    variance: float | int = 0.99

    def __post_init__(self):
        _checked(self, probes=True)


# ------------------------------------------------------------------------------------------------------------
# Presets: one function per (dataset, model), the papers' settings (docs/methods.md#training), PyTorch initialisers.
# Every preset stops on the running accuracy, as the authors' trainers do (their MLP trainer included); a full pass
# after each epoch is selectable (stop_on="eval") and always recorded. Run times are per member on the project's
# 2-core CPU box unless said otherwise.
# ------------------------------------------------------------------------------------------------------------


def mlp_mnist() -> TrainSpec:
    """MLP on MNIST: SGD + momentum 0.9, lr 1e-3, batch 32, until 100 % running train accuracy (the authors'
    public MLP trainer).

    ``jaxmem run --dataset mnist --data-dir DIR --degrees 0.8``: ≈ 13 s per epoch on 2 CPU cores; that trainer's
    runs took ≈ 53–61 epochs at p = 0 and ≈ 260–325 at p ≥ 0.2 (≈ 1 h 10 min per member at p = 0.8).
    """
    return TrainSpec("sgd", 1e-3, 32, 1.0)


def mlp_cifar10() -> TrainSpec:
    """MLP on CIFAR-10, as :func:`mlp_mnist`. ``jaxmem run --dataset cifar10 --model mlp --data-dir DIR``;
    not timed here (no CIFAR-10 files on the project's machines)."""
    return TrainSpec("sgd", 1e-3, 32, 1.0)


def cnn_mnist() -> TrainSpec:
    """CNN on MNIST: Adam 2e-4, batch 128, until 99.9 % running train accuracy.

    ``jaxmem run --dataset mnist --model cnn --data-dir DIR``: ≈ 85 s per epoch on CPU (1.4 s per 1000 samples);
    the authors' runs at p > 0 hit the 500-epoch cap, ≈ 12 h per member on CPU: use a GPU.
    """
    return TrainSpec("adam", 2e-4, 128, 0.999)


def cnn_fashion_mnist() -> TrainSpec:
    """CNN on Fashion-MNIST: Adam 2e-4, batch 128, until 99.1 % running train accuracy.
    ``jaxmem run --dataset fashion_mnist --data-dir DIR``; as :func:`cnn_mnist` per epoch."""
    return TrainSpec("adam", 2e-4, 128, 0.991)


def cnn_cifar10() -> TrainSpec:
    """CNN on CIFAR-10: Adam 2e-4, batch 32, until 100 % running train accuracy.
    ``jaxmem run --dataset cifar10 --data-dir DIR``; not timed here (GPU recommended)."""
    return TrainSpec("adam", 2e-4, 32, 1.0)


def alexnet_cifar100() -> TrainSpec:
    """AlexNet on CIFAR-100: Adam 1e-4, batch 128, until 99.1 % running train accuracy.
    ``jaxmem run --dataset cifar100 --data-dir DIR``; not timed here (GPU recommended)."""
    return TrainSpec("adam", 1e-4, 128, 0.991)


def alexnet_tiny_imagenet() -> TrainSpec:
    """AlexNet on Tiny-ImageNet: Adam 1e-4, batch 500, until 99.9 % running train accuracy.
    ``jaxmem run --dataset tiny_imagenet --data-dir DIR``; not timed here (GPU recommended)."""
    return TrainSpec("adam", 1e-4, 500, 0.999)


def resnet18_cifar10() -> TrainSpec:
    """ResNet-18 on CIFAR-10: SGD + momentum 0.9, lr 1e-3, batch 32, until 100 % running train accuracy.
    ``jaxmem run --dataset cifar10 --model resnet18 --data-dir DIR``; not timed here (GPU recommended)."""
    return TrainSpec("sgd", 1e-3, 32, 1.0)


def digits_mlp() -> TrainSpec:
    """Not in the papers: the embedded quick-start data with the MLP, SGD + momentum and a larger step (1e-2) so
    that 1437 samples are memorised within 400 epochs. ``jaxmem run``: ≈ 3 min for 3 members on 2 CPU cores."""
    return TrainSpec("sgd", 1e-2, 32, 1.0, max_epochs=400)


def digits_cnn() -> TrainSpec:
    """Not in the papers: the embedded data with the CNN, Adam 1e-3, batch 32, 400-epoch cap.
    ``jaxmem run --model cnn``: a few minutes on 2 CPU cores."""
    return TrainSpec("adam", 1e-3, 32, 1.0, max_epochs=400)


PRESETS = {
    ("mnist", "mlp"): mlp_mnist,
    ("cifar10", "mlp"): mlp_cifar10,
    ("mnist", "cnn"): cnn_mnist,
    ("fashion_mnist", "cnn"): cnn_fashion_mnist,
    ("cifar10", "cnn"): cnn_cifar10,
    ("cifar100", "alexnet_cifar100"): alexnet_cifar100,
    ("tiny_imagenet", "alexnet_tiny_imagenet"): alexnet_tiny_imagenet,
    ("cifar10", "resnet18"): resnet18_cifar10,
    ("digits", "mlp"): digits_mlp,
    ("digits", "cnn"): digits_cnn,
}


def paper_train_spec(dataset: str, model: str) -> TrainSpec:
    """The preset training settings of a (dataset, model) pair (:data:`PRESETS`)."""
    try:
        return PRESETS[(dataset, model)]()
    except KeyError:
        known = ", ".join(f"{d}×{m}" for d, m in sorted(PRESETS))
        raise ValueError(f"no preset for dataset {dataset!r} with model {model!r}; known pairs: {known}") from None


DEFAULT_MODEL = {
    "mnist": "mlp",
    "fashion_mnist": "cnn",
    "cifar10": "cnn",
    "cifar100": "alexnet_cifar100",
    "tiny_imagenet": "alexnet_tiny_imagenet",
    "digits": "mlp",
}
