"""What a training command works on, from the paper presets plus a user's overrides: the data, the members, the
:class:`~jaxmem.config.TrainSpec`, the run directory and the epochs whose parameters are kept."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from jaxmem.config import DEFAULT_MODEL, MemberSpec, TrainSpec, paper_train_spec
from jaxmem.data import Dataset, load_dataset, subset, with_train_labels


def load_data(name: str, data_dir: str | None = None, source: str = "auto", *, labels: str | Path | None = None,
              train_subset: int | None = None, test_subset: int | None = None) -> Dataset:
    """Dataset ``name``, with the training labels of a ``labels`` .npy and cut to its first samples if asked."""
    dataset = load_dataset(name, data_dir, source)
    if labels is not None:
        dataset = with_train_labels(dataset, labels)
    if train_subset is not None or test_subset is not None:
        dataset = subset(dataset, train_subset, test_subset)
    return dataset


def paper_model(dataset: str, model: str | None = None) -> str:
    """``model``, or the dataset's paper model when it is None or ``"paper"`` (the MLP for unknown datasets)."""
    return DEFAULT_MODEL.get(dataset, "mlp") if model in (None, "paper") else model


def preset_spec(dataset: str, model: str, overrides: Mapping[str, object] | None = None) -> TrainSpec:
    """The (dataset, model) preset with ``overrides`` ``{field: value or {model or "*": value}}`` (a model's own
    value wins over ``"*"``; None leaves the preset's)."""
    changes = {}
    for field, value in (overrides or {}).items():
        if isinstance(value, Mapping):
            value = value.get(model, value.get("*"))
        if value is not None:
            changes[field] = value
    return paper_train_spec(dataset, model).replace(**changes)


def kept_epochs(dataset: str, spec: TrainSpec, epochs: str | Sequence[int]) -> tuple[int, ...]:
    """The epochs whose parameters are kept: those given, or ``"paper2"``'s schedule up to the spec's epoch cap
    (every 10th epoch after 20 for tiny_imagenet, as the authors kept, else every 5th)."""
    from jaxmem.train import paper2_epoch_schedule

    if epochs == "paper2":
        return paper2_epoch_schedule(spec.max_epochs, sparse_step=10 if dataset == "tiny_imagenet" else 5)
    return tuple(epochs)


class TrainingRun(NamedTuple):
    """A training command's inputs."""

    dataset: Dataset
    members: list[MemberSpec]
    spec: TrainSpec
    out: Path  # the run directory
    checkpoint_epochs: tuple[int, ...]


def training_run(members: Sequence[MemberSpec], load: Callable[[str], Dataset],
                 overrides: Mapping[str, object] | None = None, *, out: str | Path | None = None,
                 checkpoint_epochs: str | Sequence[int] = (), check_memory: bool = True) -> TrainingRun:
    """The members' preset with ``overrides`` (:func:`preset_spec`), their dataset (``load(name)``), the run
    directory (default ``runs/<dataset>-<model>``) and the kept epochs (:func:`kept_epochs`); with
    ``check_memory`` a run that the memory planner says will not fit the device is refused (``ValueError`` with
    the planner's numbers)."""
    from jaxmem.planner import check_fits

    name, model = members[0].dataset, members[0].model
    spec = preset_spec(name, model, overrides)
    dataset = load(name)
    out = Path(out) if out is not None else Path("runs") / f"{name}-{model}"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a run directory")
    if check_memory:
        try:
            check_fits(model, dataset.x_train.shape[1:], dataset.num_classes, spec, len(members),
                       len(dataset.y_train), len(dataset.y_test))
        except ValueError as error:
            raise ValueError(f"{error} (--skip-memory-check to try anyway)") from None
    return TrainingRun(dataset, list(members), spec, out, kept_epochs(name, spec, checkpoint_epochs))
