"""A trained run, opened once: the base of the stages that work on a finished run directory.

:func:`open_run` checks that the dataset is the one the run was trained on (:func:`check_run_data`), reads
its spec and members, and returns a :class:`TrainedRun`: the model built once, the inputs normalised once, the
members' given training labels and training keys, and their parameters at any kept epoch. A stage handed the
dataset, members and spec of a run it has just trained builds one with :meth:`TrainedRun.of` instead. Pure data
and cached properties: no training, probing or file writing here.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxmem.config import MemberSpec, TrainSpec
from jaxmem.data import Dataset, member_train_labels
from jaxmem.features import member_variables
from jaxmem.models import get_model
from jaxmem.train import load_member_params, read_run_config, split_member_keys
from jaxmem.train.rundir import CONFIG_FILE, run_config


def check_run_data(run_dir: str | Path, dataset: Dataset) -> None:
    """Raise ``ValueError`` unless ``dataset`` has the sizes and train labels the run was trained on."""
    spec, members = read_run_config(run_dir)
    recorded = json.loads((Path(run_dir) / CONFIG_FILE).read_text())["data"]
    given = run_config(spec, members, dataset)["data"]
    if given != recorded:
        raise ValueError(f"the dataset given ({given}) is not the one {run_dir} was trained on ({recorded})")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedRun:
    """A trained run directory with its dataset, spec and members; what the stages read from it, each computed
    once when first asked for (the parameters are read at each call: a run keeps many epochs)."""

    run_dir: Path
    dataset: Dataset
    spec: TrainSpec
    members: tuple[MemberSpec, ...]

    @classmethod
    def of(cls, dataset: Dataset, members: Sequence[MemberSpec], spec: TrainSpec,
           run_dir: str | Path) -> TrainedRun:
        """The run from what a stage was handed (no ``config.json`` read, no check: the caller vouches for it)."""
        return cls(Path(run_dir), dataset, spec, tuple(members))

    @property
    def model_name(self) -> str:
        return self.members[0].model

    @functools.cached_property
    def model(self):
        """The members' Flax module (one for all: members share the architecture)."""
        return get_model(self.model_name, self.dataset.num_classes, init=self.spec.init, dropout=self.spec.dropout)

    @property
    def x_train(self) -> np.ndarray:
        """The training inputs as the model sees them (:meth:`jaxmem.data.Dataset.inputs`)."""
        return self.dataset.inputs("train")

    @property
    def x_test(self) -> np.ndarray:
        """The test inputs as the model sees them."""
        return self.dataset.inputs("test")

    @functools.cached_property
    def given(self) -> np.ndarray:
        """Each member's training labels ``int32 [M, N]`` (corrupted by its label rule), as it was trained on."""
        return member_train_labels(self.dataset, self.members)

    @functools.cached_property
    def train_keys(self):
        """Each member's training key ``[M]`` (:func:`jaxmem.train.split_member_keys`), for training on."""
        return split_member_keys(self.members)[1]

    def params(self, epoch: int | str = "final"):
        """``(params, batch_stats)`` of every member at ``epoch`` (:func:`jaxmem.train.load_member_params`)."""
        return load_member_params(self.run_dir, epoch)

    def variables(self, epoch: int | str = "final") -> dict:
        """Flax variables of every member at ``epoch`` (leading member axis)."""
        return member_variables(*self.params(epoch))


def open_run(run_dir: str | Path, dataset: Dataset) -> TrainedRun:
    """The trained run in ``run_dir`` on ``dataset``; ``ValueError`` when the dataset is not the run's own (see
    :func:`jaxmem.experiments.cost.load_run_dataset` for loading that one)."""
    check_run_data(run_dir, dataset)
    spec, members = read_run_config(run_dir)
    return TrainedRun.of(dataset, members, spec, run_dir)


__all__ = ["TrainedRun", "check_run_data", "open_run"]
