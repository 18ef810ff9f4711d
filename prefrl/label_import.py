"""Labels collected outside prefrl (people, another labelling tool) on the segments of an existing dataset.

The labels come as a CSV file with a header row and (at least) these columns, one labelled pair a row::

    segment_a,segment_b,label
    12,407,1
    88,3,0.5
    5,61,0

* ``segment_a`` / ``segment_b``: indices into the segments of the dataset the pairs were drawn from
  (``0 .. N-1``, the order of its segment arrays);
* ``label``: ``P(segment_a preferred over segment_b)`` in ``[0, 1]``: 1 = ``segment_a`` preferred, 0 =
  ``segment_b`` preferred, 0.5 = equally good (a tie); values in between are soft labels. An empty cell
  or ``skip`` is a skipped query: the row is dropped (and counted), as prefrl's raters drop theirs.

Other columns (a rater id, a time stamp) are ignored. A pair may appear once, in either order. The result
is a new dataset: the source's segments with the CSV's pairs and labels; its provenance records the CSV's
file name, SHA-256, rows and skipped rows, and the source dataset's path and provenance::

    path = import_labels_csv("pendulum-abc.npz", "labels.csv", "pendulum-people.npz")
    identify(path)                                     # which preference model explains the people

:func:`write_labels_csv` writes a dataset's pairs (and labels) in the same format, e.g. to hand the pairs
to people to label (``prefrl dataset import-labels`` reads the file back).
"""

from __future__ import annotations

import csv
import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from prefrl.datasets import PreferenceDataset, load_dataset, save_dataset
from prefrl.errors import DatasetError
from prefrl.types import PreferenceBatch

__all__ = ["LABEL_COLUMNS", "SKIP_VALUES", "import_labels_csv", "read_labels_csv", "write_labels_csv"]

#: the columns a labels CSV must have
LABEL_COLUMNS = ("segment_a", "segment_b", "label")
#: label cells meaning "the query was skipped" (compared lower-case, stripped)
SKIP_VALUES = ("", "skip", "skipped")


def _segment_index(text: str, column: str, line: int, path: Path, num_segments: int) -> int:
    try:
        index = int(text.strip())
    except ValueError:
        raise DatasetError(
            f"{path} line {line}: {column} '{text}' is not a segment index (an integer)"
        ) from None
    if not 0 <= index < num_segments:
        raise DatasetError(
            f"{path} line {line}: {column} {index} is out of range (the dataset has {num_segments} segments: "
            f"0..{num_segments - 1})"
        )
    return index


def _label(text: str, line: int, path: Path) -> float | None:
    """The label of a row, ``None`` for a skipped query."""
    if text.strip().lower() in SKIP_VALUES:
        return None
    try:
        label = float(text)
    except ValueError:
        raise DatasetError(
            f"{path} line {line}: label '{text}' is not a number in [0, 1] (or empty/skip)"
        ) from None
    if not (math.isfinite(label) and 0.0 <= label <= 1.0):
        raise DatasetError(
            f"{path} line {line}: label {text.strip()} is not in [0, 1] (P(segment_a preferred))"
        )
    return label


def read_labels_csv(path: str | Path, num_segments: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Read and check a labels CSV: ``(pairs [M, 2] int64, labels [M] float64, skipped rows)``.

    :param num_segments: ``N``, segments in the pool the indices point into.
    :raises DatasetError: a missing file or column, a bad index or label, a repeated pair, or no label;
        the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"labels file {path} does not exist")
    pairs: list[tuple[int, int]] = []
    labels: list[float] = []
    seen: dict[frozenset[int], int] = {}
    skipped = 0
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        if not columns:
            raise DatasetError(f"{path} is empty: expected a header row {','.join(LABEL_COLUMNS)}")
        reader.fieldnames = columns
        missing = [c for c in LABEL_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{path} is missing column(s) {', '.join(missing)} (has: {', '.join(columns)}; "
                f"expected {','.join(LABEL_COLUMNS)})"
            )
        for row in reader:
            line = reader.line_num
            cells = [row.get(c) for c in LABEL_COLUMNS]
            if any(cell is None for cell in cells):
                raise DatasetError(f"{path} line {line}: has fewer cells than the header")
            a_text, b_text, label_text = (str(cell) for cell in cells)
            a = _segment_index(a_text, "segment_a", line, path, num_segments)
            b = _segment_index(b_text, "segment_b", line, path, num_segments)
            if a == b:
                raise DatasetError(f"{path} line {line}: segment_a and segment_b are both {a}")
            label = _label(label_text, line, path)
            key = frozenset((a, b))
            if key in seen:
                raise DatasetError(f"{path} line {line}: the pair ({a}, {b}) is already on line {seen[key]}")
            seen[key] = line
            if label is None:
                skipped += 1
                continue
            pairs.append((a, b))
            labels.append(label)
    if not labels:
        raise DatasetError(f"{path} has no labelled pair ({skipped} skipped)")
    return np.asarray(pairs, dtype=np.int64), np.asarray(labels, dtype=np.float64), skipped


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_labels_csv(
    segments: str | Path | PreferenceDataset, csv_path: str | Path, out: str | Path
) -> Path:
    """Write a dataset holding the segments of ``segments`` and the pairs and labels of a CSV.

    :param segments: the dataset (file or loaded) whose segments the CSV's indices point into.
    :param csv_path: the labels (format in the module docstring).
    :param out: the new dataset file (``.npz``); must not be the source file.
    :raises DatasetError: a bad CSV (see :func:`read_labels_csv`), a bad source dataset, or ``out`` being
        the source.
    """
    source = segments if isinstance(segments, PreferenceDataset) else load_dataset(segments)
    csv_path, out = Path(csv_path), Path(out)
    if out.resolve() == source.path.resolve():
        raise DatasetError(f"--out {out} is the segments dataset itself; write the labelled one elsewhere")
    pairs, labels, skipped = read_labels_csv(csv_path, source.segments.num_segments)
    prefs = PreferenceBatch(source.segments, pairs, labels)
    label_source = f"csv:{_file_sha256(csv_path)}"
    params: dict[str, Any] = dict(source.provenance.get("params", {}))
    # the labels no longer come from the source's rater: the params say where they do come from
    params["rater"] = label_source
    provenance = {
        **{k: v for k, v in source.provenance.items() if k not in ("params", "rater_spec", "rater_repr")},
        "params": params,
        "rater_spec": None,
        "rater_repr": label_source,
        "labels": {
            "csv": csv_path.name,
            "csv_sha256": label_source.removeprefix("csv:"),
            "rows": len(labels) + skipped,
            "skipped": skipped,
            "source_dataset": str(source.path),
            "source_rater": source.provenance.get("rater_spec"),
        },
        "num_segments": source.segments.num_segments,
        "pairs_requested": len(labels) + skipped,
        "pairs_labelled": len(labels),
        "tie_rate": prefs.tie_rate,
    }
    return save_dataset(out, prefs, provenance)


def write_labels_csv(dataset: str | Path | PreferenceDataset, path: str | Path, labels: bool = True) -> Path:
    """Write a dataset's pairs as a labels CSV (``segment_a,segment_b,label``).

    :param labels: write the dataset's labels; ``False`` leaves the label column empty (pairs to label).
    """
    data = dataset if isinstance(dataset, PreferenceDataset) else load_dataset(dataset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefs = data.preferences
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LABEL_COLUMNS)
        for (a, b), y in zip(prefs.pairs.tolist(), prefs.labels.tolist(), strict=True):
            writer.writerow([a, b, repr(float(y)) if labels else ""])
    return path
