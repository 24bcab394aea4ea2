"""The tidy long-format results table: one row per
(member, epoch, probe, layer, subspace labels, split, scored-against).

Everything that reports or plots reads only these rows. Accuracies are stored with their exact counts
(``n_correct``/``n_seen``) so that means over seeds and re-aggregation stay exact.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from jaxmem.config import MemberSpec

MEMBER_COLUMNS = ("member", "dataset", "model", "degree", "seed", "label_rule")
COLUMNS = MEMBER_COLUMNS + (
    "epoch",  # training epoch the parameters come from (-1: not applicable, e.g. input-layer probes)
    "probe",  # "model" for the network's own accuracy, else the probe name ("masc", "linear", ...)
    "layer",  # probe layer name; "output" for the model's own predictions
    "subspace_labels",  # labels the probe was fitted on: "corrupted", "true" or "none" (model rows)
    "split",  # "train" or "test"
    "scored_against",  # "corrupted" or "true"
    "accuracy",
    "n_correct",
    "n_seen",
    "size",  # probe size: mean components per class for MASC, NaN where not meaningful
    "loss",  # mean training loss for model rows, NaN otherwise
)


REQUIRED_COLUMNS = ("member", "epoch", "probe", "layer", "subspace_labels", "split", "scored_against", "accuracy")
TEXT_COLUMNS = ("dataset", "model", "label_rule", "probe", "layer", "subspace_labels", "split", "scored_against")


def member_fields(index: int, member: MemberSpec) -> dict:
    """The member columns of a row."""
    return {"member": index, **{k: v for k, v in dataclasses.asdict(member).items()}}


def accuracy_row(
    index: int,
    member: MemberSpec,
    *,
    epoch: int,
    probe: str,
    layer: str,
    subspace_labels: str,
    split: str,
    scored_against: str,
    n_correct: int,
    n_seen: int,
    size: float = math.nan,
    loss: float = math.nan,
) -> dict:
    """One complete row; the accuracy is derived once from exact counts."""
    n_correct, n_seen = int(n_correct), int(n_seen)
    return {
        **member_fields(index, member),
        "epoch": int(epoch),
        "probe": probe,
        "layer": layer,
        "subspace_labels": subspace_labels,
        "split": split,
        "scored_against": scored_against,
        "accuracy": n_correct / n_seen if n_seen else math.nan,
        "n_correct": n_correct,
        "n_seen": n_seen,
        "size": float(size),
        "loss": float(loss),
    }


def append_rows(path: str | Path, rows: Iterable[Mapping]) -> int:
    """Append rows to a CSV results table (header written when the file is new); returns rows written."""
    path = Path(path)
    rows = list(rows)
    new = not path.exists() or path.stat().st_size == 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            missing = set(COLUMNS) - set(row)
            if missing:
                raise ValueError(f"results row lacks columns {sorted(missing)}: {dict(row)}")
            writer.writerow({k: row[k] for k in COLUMNS})
    return len(rows)


def read_rows(path: str | Path):
    """Read a results table as a pandas DataFrame (pandas is imported lazily).

    Text columns are read as text even when every value looks like something else (e.g. ``scored_against`` all
    "true" would otherwise become booleans).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a jaxmem results table (unreadable as CSV: {error})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{path} is not a jaxmem results table: no column {', '.join(missing)}")
    return pd.read_csv(path, dtype={name: str for name in TEXT_COLUMNS}, keep_default_na=False,
                       na_values={name: ["", "nan", "NaN"] for name in COLUMNS if name not in TEXT_COLUMNS})


def truncate_rows(path: str | Path, keep: int) -> None:
    """Keep only the first ``keep`` data rows (used on resume to drop rows written after the last checkpoint)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(newline="") as f:
        lines = f.readlines()
    with path.open("w", newline="") as f:
        f.writelines(lines[: keep + 1])


def write_member_table(path: str | Path, members: Sequence[MemberSpec]) -> None:
    """``members.csv``: member index → configuration, written beside the results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MEMBER_COLUMNS)
        writer.writeheader()
        for i, m in enumerate(members):
            writer.writerow(member_fields(i, m))

