"""A user's own data: named arrays in an .npz file, or columns of a CSV file with a header row.

``task: classification`` (the default) renumbers the labels 0..K-1 in sorted order (whole numbers or
names); ``task: regression`` takes them as float targets. Every problem with the file is a DataError that
names the file and, where there is one, the array, column and line.
"""

import csv as csv_module
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from manualnet.data.base import DATASETS, Arrays, class_indices, numeric_matrix
from manualnet.errors import DataError
from manualnet.registry import closest

Task = Literal["classification", "regression"]


def _existing(path, kind):
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{kind} file {path} not found" if not path.exists() else f"{path} is not a file")
    return path


def _arrays(x, labels, task, source):
    """Arrays from (N, ...) features (kept in their shape: images stay images) and N labels read from ``source``."""
    shape = np.shape(x)
    x = numeric_matrix(x, source, "features")
    x = x.reshape(len(x), *shape[1:]) if len(shape) > 2 else x
    if len(labels) != len(x):
        raise DataError(f"{source}: {len(x)} samples of features but {len(labels)} labels")
    if task == "regression":
        return Arrays(x, numeric_matrix(labels, source, "labels"), "regression")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    y, num_classes, classes = class_indices(labels, source)
    return Arrays(x, y, "classification", num_classes, classes)


@DATASETS.register("npz")
def npz(path: str, features: str = "x", label: str = "y", task: Task = "classification") -> Arrays:
    """Arrays ``features`` (N, ...) (in their own shape; an MLP gets them flattened) and ``label`` (N,) (or
    (N, n_outputs) for regression) of the .npz file at ``path`` (as written by ``numpy.savez``)."""
    path = _existing(path, "npz")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = ("it is not a numpy archive (numpy.savez writes one; a .csv file takes dataset: csv)"
               if "pickled" in str(e) else " ".join(str(e).split()))  # numpy's guess: an object array
        raise DataError(f"{path}: cannot read as .npz: {why}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single array; expected an .npz archive of named arrays "
                        f"({features!r} and {label!r}), as numpy.savez writes")
    with archive:
        for key, what in ((features, "features"), (label, "label")):
            if key not in archive.files:
                raise DataError(f"{path}: no array {key!r} for data.{what}{closest(key, archive.files)}; "
                                f"the file holds {', '.join(archive.files) or 'no arrays'}")
        try:
            arrays = {key: archive[key] for key in (features, label)}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: cannot read its arrays: {' '.join(str(e).split())}") from None
    return _arrays(arrays[features], arrays[label], task, path)


@DATASETS.register("csv")
def csv(path: str, label: str, features: list[str] | None = None, task: Task = "classification",
        delimiter: str = ",") -> Arrays:
    """The ``features`` columns (default: every column but ``label``) and the ``label`` column of the CSV
    file at ``path``, whose first row names the columns. Features must be numbers; labels may be names."""
    if len(delimiter) != 1 or delimiter in "\r\n\"":
        raise DataError(f"data.delimiter: expected one character that separates the columns (not a quote or a "
                        f"line break), got {delimiter!r}")
    path = _existing(path, "csv")
    header, rows, lines = _read_rows(path, delimiter)
    columns = {name: i for i, name in enumerate(header)}
    wanted = [c for c in header if c != label] if features is None else list(features)
    for name, key in [(label, "label")] + [(f, "features") for f in wanted]:
        if name not in columns:
            raise DataError(f"{path}: no column {name!r} for data.{key}{closest(name, header)}; "
                            f"the header has {', '.join(header)}")
    if label in wanted:
        raise DataError(f"{path}: column {label!r} is both the label and one of the features")
    if not wanted:
        raise DataError(f"{path}: no feature columns: the header has only the label {label!r}")
    x = _numbers(rows, lines, [columns[c] for c in wanted], header, path)
    labels = [row[columns[label]].strip() for row in rows]
    if task == "regression" or _all_floats(labels):  # numbers, one of them maybe inf or nan: an error naming it
        labels = _numbers(rows, lines, [columns[label]], header, path)
    arrays = _arrays(x, labels, task, path)
    arrays.features = wanted
    return arrays


def _read_rows(path, delimiter):
    """(header, rows, line number of each row); blank lines are skipped, ragged rows are errors."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv_module.reader(f, delimiter=delimiter)
            numbered = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv_module.Error) as e:
        raise DataError(f"{path}: cannot read as CSV: {e}") from None
    if not numbered:
        raise DataError(f"{path}: the file is empty; expected a header row of column names, then samples")
    header = [name.strip() for name in numbered[0][1]]
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise DataError(f"{path}: the header names column(s) {', '.join(map(repr, duplicates))} more than once")
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)} "
                            f"(delimiter {delimiter!r})")
    if len(numbered) == 1:
        raise DataError(f"{path}: only a header row, no samples")
    return header, [row for _, row in numbered[1:]], [line for line, _ in numbered[1:]]


def _numbers(rows, lines, indices, header, path):
    """(N, len(indices)) float64 array of those columns; the first non-numeric or non-finite cell is a
    DataError naming its line and column."""
    cells = [[row[i] for i in indices] for row in rows]
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:  # numpy does not say which cell: parse them one by one to name it
        values = np.array([[_number(cell, line, header[i], path) for i, cell in zip(indices, row, strict=True)]
                           for line, row in zip(lines, cells, strict=True)])
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        r, c = bad[0]
        raise DataError(f"{path}: line {lines[r]}, column {header[indices[c]]!r}: {cells[r][c].strip()!r} is not "
                        f"a finite number")
    return values


def _number(text, line, column, path):
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: line {line}, column {column!r}: {text.strip()!r} is not a number") from None


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _all_floats(texts):
    return all(_is_number(t) for t in texts)
