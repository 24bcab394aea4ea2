"""The tidy long-format results table: one row per
(member, epoch, probe, layer, subspace labels, split, scored-against).

Everything that reports or plots reads only these rows. Accuracies are stored with their exact counts
(``n_correct``/``n_seen``) so that means over seeds and re-aggregation stay exact.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from jaxmem import faults
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
COMMIT_SUFFIX = ".committed"  # beside each table: the bytes its appends finished writing
GZIP_MAGIC = b"\x1f\x8b"
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
    """Append rows to a CSV results table (header written when the file is new); returns rows written.

    Whole or not at all: the batch is formatted first, written in one call, flushed and fsynced, then recorded
    as committed (:func:`intact_size`); an unfinished earlier append is dropped first (with a notice), an error
    while writing takes the partial batch back out.
    """
    path = Path(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_unfinished(path)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    for row in rows:
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"results row lacks columns {sorted(missing)}: {dict(row)}")
        writer.writerow({k: row[k] for k in COLUMNS})
    data = buffer.getvalue().encode()
    with path.open("ab", buffering=0) as f:
        start = f.seek(0, os.SEEK_END)
        faults.maybe_fail("append", lambda: f.write(data[: len(data) // 2]))
        try:
            written = 0
            while written < len(data):
                written += f.write(data[written:])
            os.fsync(f.fileno())
        except BaseException:
            f.truncate(start)
            raise
    _record_commit(path, start + len(data))
    return len(rows)


def _commit_path(path: Path) -> Path:
    return path.with_name(path.name + COMMIT_SUFFIX)


def _record_commit(path: Path, size: int) -> None:
    """Note that the first ``size`` bytes of ``path`` hold whole appends (written beside it, atomically)."""
    record = _commit_path(path)
    temporary = record.with_name(record.name + ".tmp")
    with temporary.open("w") as f:
        f.write(str(size))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, record)


def intact_size(path: str | Path) -> tuple[int, str | None]:
    """``(bytes, notice)``: how much of the table ``path`` holds whole rows of finished appends, and a one-line
    notice when something after that is dropped (None when nothing is).

    An append records the size it committed (``<table>.committed``); bytes after it are an append cut short.
    Without a usable record (an older table, or one rewritten by other means) a last line without its newline or
    with the wrong number of fields is the fragment.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        end = _committed_size(path, size, f)
        window = max(0, end - 2**20)
        f.seek(window)
        tail = f.read(end - window)
        f.seek(0)
        header = f.readline()
    if tail and not tail.endswith(b"\n"):  # a last line without its newline
        end = window + tail.rfind(b"\n") + 1
        tail = tail[: end - window]
    lines = tail.splitlines(keepends=True)
    if len(lines) > 1 or (lines and window > 0):  # a last row (not the header) with the wrong number of fields
        if _field_count(lines[-1]) != _field_count(header):
            end -= len(lines[-1])
    if end == size:
        return size, None
    with path.open("rb") as f:
        kept = f.read(end)
        dropped = f.read().decode(errors="replace")
    rows = max(kept.count(b"\n") - 1, 0)
    epochs = sorted({int(fields[6]) for fields in csv.reader(dropped.splitlines())
                     if len(fields) > 6 and fields[6].lstrip("-").isdigit()})
    if not epochs and rows:
        last = next(csv.reader([kept.splitlines()[-1].decode(errors="replace")]))
        epochs = [int(last[6])] if len(last) > 6 and last[6].lstrip("-").isdigit() else []
    which = f"epoch {', '.join(map(str, epochs))}" if epochs else "the missing rows"
    return end, (f"{path}: dropped an unfinished append ({len(dropped)} bytes cut mid-write); kept {rows} rows, "
                 f"{which} will be recomputed by a rerun")


def _field_count(line: bytes) -> int:
    return len(next(csv.reader([line.decode(errors="replace")]), []))


def _committed_size(path: Path, size: int, f) -> int:
    """The committed size when its record fits the file (no longer than it, ending a line), else ``size``."""
    try:
        committed = int(_commit_path(path).read_text())
    except (FileNotFoundError, ValueError):
        return size
    if not 0 < committed <= size:
        return size
    f.seek(committed - 1)
    return committed if f.read(1) == b"\n" else size


def drop_unfinished(path: str | Path) -> None:
    """Cut an unfinished append off the end of the table ``path`` (:func:`intact_size`), saying so on stderr."""
    path = Path(path)
    if not path.exists():
        return
    end, notice = intact_size(path)
    if notice is not None:
        print(notice, file=sys.stderr, flush=True)
        os.truncate(path, end)
        _record_commit(path, end)


def count_rows(path: str | Path) -> int:
    """Whole data rows in the table ``path`` (0 when there is none)."""
    path = Path(path)
    if not path.exists():
        return 0
    end, _ = intact_size(path)
    with path.open("rb") as f:
        return max(f.read(end).count(b"\n") - 1, 0)


def read_rows(path: str | Path):
    """Read a results table (CSV, or gzip-compressed CSV) as a pandas DataFrame (pandas is imported lazily).

    Text columns are read as text even when every value looks like something else (e.g. ``scored_against`` all
    "true" would otherwise become booleans). An unfinished last append is left out, with a notice on stderr
    (the file itself is repaired by the next append).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}")
    with path.open("rb") as f:
        compressed = f.read(2) == GZIP_MAGIC
    if compressed:  # written whole (write_table), never appended to
        try:
            source = io.BytesIO(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError) as error:
            raise ValueError(f"{path} is not a readable gzip file ({error})") from None
        end = len(source.getvalue())
    else:
        end, notice = intact_size(path)
        if notice is not None:
            print(notice, file=sys.stderr, flush=True)
        with path.open("rb") as f:
            source = io.BytesIO(f.read(end))
    if end == 0:
        raise ValueError(f"{path} is empty: no header, no rows")
    try:
        header = pd.read_csv(source, nrows=0).columns
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a jaxmem results table (unreadable as CSV: {error})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{path} is not a jaxmem results table: no column {', '.join(missing)}")
    source.seek(0)
    return pd.read_csv(source, dtype={name: str for name in TEXT_COLUMNS}, keep_default_na=False,
                       na_values={name: ["", "nan", "NaN"] for name in COLUMNS if name not in TEXT_COLUMNS})


def append_missing(path: str | Path, source: str | Path) -> int:
    """Append to the table ``path`` every whole row of the table ``source`` that ``path`` does not hold yet
    (rows compared as written, text for text); returns rows appended. E.g. rows probed into a side table beside a
    training process, joined into the run's own table once nothing else writes it."""
    def lines(table):
        table = Path(table)
        if not table.exists():
            return []
        end, _ = intact_size(table)
        with table.open("rb") as f:
            header, *rows = f.read(end).decode().splitlines() or [""]
        if header != ",".join(COLUMNS):
            raise ValueError(f"{table} is not a jaxmem results table with this version's columns")
        return rows

    present = set(lines(path))
    missing = [line for line in dict.fromkeys(lines(source)) if line not in present]
    rows = [dict(zip(COLUMNS, values)) for values in csv.reader(missing)]
    return append_rows(path, rows) if rows else 0


def truncate_rows(path: str | Path, keep: int) -> None:
    """Keep only the first ``keep`` data rows (used on resume to drop rows written after the last checkpoint);
    cut in place, so an interruption leaves either the old table or the shorter one."""
    path = Path(path)
    if not path.exists():
        return
    drop_unfinished(path)
    end = 0
    with path.open("rb") as f:
        for _ in range(keep + 1):
            line = f.readline()
            if not line:
                break
            end += len(line)
    if end < path.stat().st_size:
        os.truncate(path, end)
    _record_commit(path, end)


def write_table(table, path: str | Path) -> None:
    """Write a whole DataFrame as CSV (gzip-compressed when ``path`` ends in ``.gz``) atomically: to a temporary
    file beside ``path``, then renamed over it, so an interruption leaves the old table or the new one. The gzip
    header carries no time stamp, so the same table gives the same bytes on every rebuild."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    compression = {"method": "gzip", "mtime": 0} if path.suffix == ".gz" else None
    table.to_csv(temporary, index=False, compression=compression)
    os.replace(temporary, path)
    _commit_path(path).unlink(missing_ok=True)  # a record of appends to the file it replaced


def join_runs(tables: Sequence) -> list:
    """Several runs' tables (each a list of DataFrames or ``None``: its results, then tables that share its
    member ids, e.g. its relabel table) joined: the i-th tables of all runs concatenated, each run's member ids
    offset past the previous runs' so that members stay distinct. Returns one DataFrame (or ``None``) per
    position."""
    import pandas as pd

    joined, offset = [[] for _ in tables[0]], 0
    for run in tables:
        for position, table in enumerate(run):
            if table is not None:
                joined[position].append(table.assign(member=table["member"] + offset))
        if not run[0].empty:
            offset += int(run[0]["member"].max()) + 1
    return [pd.concat(parts, ignore_index=True) if parts else None for parts in joined]


def write_member_table(path: str | Path, members: Sequence[MemberSpec]) -> None:
    """``members.csv``: member index → configuration, written beside the results."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MEMBER_COLUMNS)
        writer.writeheader()
        for i, m in enumerate(members):
            writer.writerow(member_fields(i, m))


def final_model_rows(df):
    """The model's own rows at each member's last recorded epoch."""
    model = df[df["probe"] == "model"]
    last = model.groupby("member")["epoch"].transform("max")
    return model[model["epoch"] == last]


SIBLING_TABLES = ("relabel.csv", "labels.csv")  # beside a results table, sharing its member ids
JOINED_RESULTS = "results.csv.gz"  # the name of joined results tables written beside their siblings


def join_run_tables(paths: Sequence[str | Path]) -> dict:
    """The results tables at ``paths`` and the tables beside them that share their member ids (relabel.csv,
    labels.csv, edit_continue_<E>.csv), joined by :func:`join_runs`: ``{file name: DataFrame or None}`` in the
    order results (under :data:`JOINED_RESULTS`), relabel, labels, then the edit_continue tables by name.
    ``ValueError`` when the results have no rows."""
    paths = [Path(path) for path in paths]
    edits = sorted({table.name for path in paths for table in path.parent.glob("edit_continue_*.csv")})
    names = (*SIBLING_TABLES, *edits)
    runs = [[read_rows(path)] + [read_rows(path.parent / name) if (path.parent / name).exists() else None
                                 for name in names] for path in paths]
    joined = dict(zip((JOINED_RESULTS, *names), join_runs(runs)))
    if joined[JOINED_RESULTS].empty:
        raise ValueError(f"{', '.join(map(str, paths))}: no rows")
    return joined
