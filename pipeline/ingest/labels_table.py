"""``labels.csv``: a user's image-level labels and, optionally, their own split, matched to the files they name.

Why matching and not a plain lookup: a real labels file names its files the way whoever exported it wrote them
(``./train/a.png``, ``train\\a.png`` from Windows, ``IMG_01.PNG`` for ``img_01.png`` on a case-insensitive export).
A path is matched exactly, then in a normalised form (``\\`` → ``/``, no ``./`` or doubled ``/``), then ignoring
case when that names one file only. A labels file that matches no file, or fewer than half its rows, is almost
always a wrong folder or column: ingest stops with one line saying how many matched, instead of pretraining on an
unlabelled set and failing at evaluation.

The optional ``split`` column (``train`` / ``val`` / ``test``; ``validation``, ``valid``, ``training`` and
``testing`` are read as those) replaces the automatic split: public benchmarks and hospital studies come with
an official or site-defined one. A file the table does not list goes to train (SimCLR uses it; it has no label
to score). Ingest still checks that no patient or spatial block sits in two splits.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
MIN_MATCHED_FRACTION = 0.5
_SLASHES = re.compile(r"/+")


@dataclass
class LabelsTable:
    """The rows of ``labels.csv`` keyed by the relative path of the file each one names."""

    labels: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)  # empty without a split column
    rows: int = 0
    unmatched: list[str] = field(default_factory=list)  # paths as written that name no file

    def report(self) -> dict[str, object]:
        """The ingest report's entry: only when some rows named no file (a clean table adds nothing)."""
        if not self.unmatched:
            return {}
        return {"labels_csv": {"rows": self.rows, "matched": self.rows - len(self.unmatched),
                               "unmatched": len(self.unmatched), "first_unmatched": self.unmatched[:5]}}


def read_labels_csv(source: Path) -> dict[str, str]:
    """``labels.csv`` (columns ``path,label``[``,split``]) → {path as written: label}; {} without the file."""
    return {path: label for path, label, _ in _rows(source)}


def read_labels_table(source: Path, files: Iterable[Path]) -> LabelsTable:
    """``labels.csv`` matched to ``files`` (the folder's listed files).

    Raises:
        ValueError: one line: a missing column, an unknown split name, a path listed twice with different
            labels or splits, or a table that matches none or fewer than half of its rows.
    """
    rows = _rows(source)
    table = LabelsTable(rows=len(rows))
    if not rows:
        return table
    where = source / "labels.csv"
    resolve = _matcher([path.relative_to(source).as_posix() for path in files])
    for written, label, split in rows:
        relative = resolve(written)
        if relative is None:
            table.unmatched.append(written)
            continue
        if split and split.lower() not in SPLIT_NAMES:
            raise ValueError(f"{where}: split {split!r} of {written!r} is not train, val or test")
        split = SPLIT_NAMES[split.lower()] if split else ""
        if table.labels.get(relative, label) != label or table.splits.get(relative, split) != split:
            raise ValueError(f"{where}: {written!r} names {relative!r}, listed before with another label or split")
        table.labels[relative] = label
        if split:
            table.splits[relative] = split
    matched = table.rows - len(table.unmatched)
    if matched < MIN_MATCHED_FRACTION * table.rows:
        amount = "none" if matched == 0 else f"only {matched}"
        raise ValueError(f"{where}: {amount} of its {table.rows} paths name a file below {source} (first unmatched: "
                         f"{table.unmatched[0]!r}); paths are relative to the folder that holds labels.csv")
    return table


def _rows(source: Path) -> list[tuple[str, str, str]]:
    path = source / "labels.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8-sig") as stream:  # utf-8-sig: Excel's byte-order mark
        reader = csv.DictReader(stream)
        columns = {name.strip().lower(): name for name in reader.fieldnames or []}
        if not {"path", "label"} <= set(columns):
            raise ValueError(f"{path}: needs the columns 'path,label' (and optionally 'split'), found "
                             f"{reader.fieldnames}")
        split = columns.get("split")
        return [(row[columns["path"]].strip(), (row[columns["label"]] or "").strip(),
                 (row[split] or "").strip() if split else "") for row in reader if (row[columns["path"]] or "").strip()]


def _normalised(path: str) -> str:
    parts = [part for part in _SLASHES.sub("/", path.replace("\\", "/")).split("/") if part not in ("", ".")]
    return "/".join(parts)


def _matcher(relatives: list[str]):
    """path as written → the listed relative path it names, or None."""
    exact = set(relatives)
    normalised = {_normalised(relative): relative for relative in relatives}
    by_case: dict[str, list[str]] = defaultdict(list)
    for relative in relatives:
        by_case[_normalised(relative).casefold()].append(relative)

    def resolve(written: str) -> str | None:
        if written in exact:
            return written
        key = _normalised(written)
        if key in normalised:
            return normalised[key]
        candidates = by_case.get(key.casefold(), [])
        return candidates[0] if len(candidates) == 1 else None

    return resolve
