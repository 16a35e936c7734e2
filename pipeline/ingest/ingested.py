"""What ingest holds while it reads a folder (:class:`IngestedChips`): the chips, their manifest rows and every
file's outcome, and the passes that need all of them (a series' deferred mapping, train-split value ranges,
constant chips). The chips themselves may live on disk (:mod:`pipeline.ingest.spill`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config_data import DomainDataConfig
from pipeline.ingest.dicom_source import normalise_deferred
from pipeline.ingest.near_duplicates import fingerprint
from pipeline.ingest.phi import PathRedactor, phi_salt
from pipeline.ingest.segmentations import FolderLabels
from pipeline.ingest.sources import FileChips, constant_chips
from pipeline.ingest.spill import SpilledArrays, close_spilled, extend, iter_items, keep_items, spilled_lists
from pipeline.ingest.value_ranges import ClipCounts, UnitRange, clip_counts, fit_range, to_unit


class IngestError(ValueError):
    """``ingest.strict``: the first bad file stops the run; the message is that file's one line."""


@dataclass
class FileOutcome:
    """What one readable file (not rejected, not skipped) gave, for the report."""

    intensity: str = ""
    modality: str = ""
    group_by: str = ""
    dropped_low_valid: int = 0
    dropped_constant: int = 0
    no_range: int = 0  # chips left out: their value-range group has no chip in the train split
    no_chip_reason: str = ""


@dataclass
class IngestedChips:
    """Everything ingest decoded from one source folder, before it is written."""

    images: list[np.ndarray] = field(default_factory=list)  # each (C, S, S) float32 in [0, 1]
    valid: list[np.ndarray] = field(default_factory=list)  # each (S, S) bool
    rows: list[dict[str, object]] = field(default_factory=list)
    channel_names: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    mask_classes: list[str] = field(default_factory=list)
    deferred: list[tuple[str, bool]] = field(default_factory=list)  # per chip: (normalisation group, invert)
    range_group: list[str] = field(default_factory=list)  # per chip: "" or its value-range group (GeoTIFF)
    unit_range: list[UnitRange | None] = field(default_factory=list)  # per chip: its group's fitted range, once fitted
    mapped_prints: list[np.ndarray] | SpilledArrays = field(default_factory=list)  # per chip once ranges are
    # mapped, when asked for: its near-duplicate fingerprint (:meth:`map_pending_ranges`)
    clip_counts: ClipCounts = field(default_factory=ClipCounts)  # pixels clipped by a configured value range
    band_plan: dict[str, object] = field(default_factory=dict)  # GeoTIFF: the domain's band set, for the report
    rejected: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    labels: list[dict[str, object]] = field(default_factory=list)  # DICOM-SEG / RTSTRUCT used as masks
    files: dict[str, FileOutcome] = field(default_factory=dict)  # readable files by relative path
    modalities: dict[str, Counter] = field(default_factory=dict)  # DICOM Modality → outcome → files
    identifiers: set[str] = field(default_factory=set)  # raw PHI of the folder's files, to redact paths only
    user_splits: dict[str, str] = field(default_factory=dict)  # labels.csv's split column: file → train/val/test
    labels_csv: dict[str, object] = field(default_factory=dict)  # the report's entry on unmatched labels.csv rows
    files_seen: int = 0

    def add(self, result: FileChips) -> None:
        """Merge one file's result (and delete its spilled chips, if a reader spilled them); a file whose channels
        differ from the first file's is rejected."""
        try:
            self._add(result)
        finally:
            result.close_spill()

    def _add(self, result: FileChips) -> None:
        self.identifiers.update(result.phi)
        if result.images and self.channel_names and result.channel_names != self.channel_names:
            result = FileChips(result.relative, modality=result.modality,
                               rejected=f"{result.relative}: channels {result.channel_names} "
                                        f"differ from earlier files {self.channel_names}")
        if result.rejected or result.skipped:
            outcome = self.rejected if result.rejected else self.skipped
            outcome.append({"path": result.relative, "reason": result.rejected or result.skipped})
            self._count_modality(result.modality, "rejected" if result.rejected else "skipped")
            return
        if result.images:
            self.channel_names = self.channel_names or result.channel_names
        self.files[result.relative] = FileOutcome(
            intensity=result.intensity, modality=result.modality, group_by=result.group_by,
            dropped_low_valid=result.dropped_low_valid, dropped_constant=result.dropped_constant,
            no_chip_reason=result.no_chip_reason)
        count = len(result.images)
        extend(self.images, result.images)
        extend(self.valid, result.valid)
        self.rows += result.rows
        extend(self.masks, result.masks or [None] * count)
        self.deferred += [(result.deferred_group, result.invert)] * count
        self.range_group += [result.range_group] * count
        self.unit_range += [None] * count
        self.clip_counts.add(result.clip_counts)

    def _count_modality(self, modality: str, outcome: str) -> None:
        if modality:
            self.modalities.setdefault(modality, Counter())[outcome] += 1

    def add_label_objects(self, found: FolderLabels, strict: bool) -> None:
        """Merge the first pass's outcomes; ``strict`` stops at the first (by path) unusable label object."""
        self.identifiers.update(found.identifiers)
        bad = sorted(found.rejected + found.skipped, key=lambda line: line["path"])
        if strict and bad:
            raise IngestError(PathRedactor(self.identifiers, phi_salt()).text(bad[0]["reason"]))
        self.rejected += found.rejected
        self.skipped += found.skipped
        self.labels += found.used

    def finalise(self, percentiles: tuple[float, float]) -> None:
        """Map deferred chips (MR series) to [0, 1], drop the constant ones among them, and settle which
        files gave chips: a readable file that gave none is not *ingested* but has its own reason."""
        if any(group for group, _ in self.deferred):
            normalise_deferred(self.images, self.valid, self.deferred, percentiles)
            flags = constant_chips(self.images, self.valid)
            constant = [flag and bool(group) for flag, (group, _) in zip(flags, self.deferred)]
            for index in np.flatnonzero(constant):
                self.files[str(self.rows[index]["source"])].dropped_constant += 1
            self.keep_chips([not flag for flag in constant])
        chips = Counter(str(row["source"]) for row in self.rows)
        for relative, outcome in self.files.items():
            self._count_modality(outcome.modality, "ingested" if chips[relative] else "no_chips")

    def keep_chips(self, keep: list[bool]) -> None:
        """Drop the chips where ``keep`` is False from every per-chip list."""
        for name in ("images", "valid", "rows", "masks", "deferred", "range_group", "unit_range", "mapped_prints"):
            setattr(self, name, keep_items(getattr(self, name), keep))

    def spill_to(self, folder: Path) -> None:
        """Keep the chips, valid masks and segmentation masks in files below ``folder`` from now on (before the
        first :meth:`add`), so memory does not grow with the number of chips; a reader may spill a large file's
        chips there too (``FileTask.spill_dir``)."""
        vars(self).update(spilled_lists(folder))

    def scratch(self, name: str, dtype: np.dtype | type) -> SpilledArrays | None:
        """An empty spilled list beside the spilled chips (e.g. their fingerprints), or None when the chips are
        held in memory; the caller closes it."""
        if not isinstance(self.images, SpilledArrays):
            return None
        return SpilledArrays(self.images.path.parent / f"{name}.bin", dtype)

    def close(self) -> None:
        """Delete the spilled files and their folder (with any a reader left there), if any."""
        close_spilled(self.images, self.valid, self.masks, self.mapped_prints)

    def subset(self, name: str, indexes: list[int]) -> Sequence:
        """The chips (``name``: images / valid) at ``indexes``, read lazily when they are spilled; images in a
        value-range group whose range is fitted come mapped to [0, 1] (:class:`RangeMappedChips`)."""
        if name == "images" and any(self.unit_range[i] is not None for i in indexes):
            return RangeMappedChips(self, list(indexes))
        return self.raw_subset(name, indexes)

    def raw_subset(self, name: str, indexes: list[int]) -> Sequence:
        """The arrays as read (a value-range group's chips in physical units)."""
        values = getattr(self, name)
        return values.subset(indexes) if isinstance(values, SpilledArrays) else [values[i] for i in indexes]

    def has_masks(self) -> bool:
        return self.masks.any_present() if isinstance(self.masks, SpilledArrays) else \
            any(mask is not None for mask in self.masks)

    def map_pending_ranges(self, splits: list[str], cfg: DomainDataConfig,
                           with_fingerprints: bool = False) -> tuple[dict, list[str]]:
        """Fit each range group's per-channel value range on its train-split chips, give every chip of the group
        that range, and drop the ones that are constant once mapped (:func:`constant_chips`). The chips stay on
        disk as read and are mapped whenever they are read (:meth:`subset`): rewriting them cost a second write
        of every chip, which on a VM disk that sustains ~150 MB/s was a third of the ingest. With
        ``with_fingerprints``, every chip's near-duplicate fingerprint (of the chip as mapped) is taken in the
        same pass into :attr:`mapped_prints`: the near-duplicate count then needs no pass of its own over the
        chips (20 s of a 157,000-chip scene). Returns the report's ``value_range`` entry and the splits of the
        chips kept."""
        percentiles = tuple(cfg.geotiff.range_percentiles)
        sizes = Counter(group for group in self.range_group if group)
        ranges, left_out = self._fit_ranges(sorted(sizes), splits, percentiles)
        counts, dropped = {group: ClipCounts() for group in ranges}, set(left_out)
        for i in left_out:
            self.files[str(self.rows[i]["source"])].no_range += 1
        if with_fingerprints:
            self.mapped_prints = self.scratch("mapped_prints", np.float32)
            if self.mapped_prints is None:
                self.mapped_prints = []
        indexes = list(range(len(self.images))) if with_fingerprints else \
            [i for i, group in enumerate(self.range_group) if group in ranges]
        for i, chip, mask in zip(indexes, self.raw_subset("images", indexes), self.raw_subset("valid", indexes)):
            unit = ranges.get(self.range_group[i])
            if unit is not None:
                counts[self.range_group[i]].add(clip_counts(chip, mask, unit.low, unit.high))
                self.unit_range[i] = unit
                chip = to_unit(chip, mask, unit.low, unit.high)
                if constant_chips([chip], [mask])[0]:
                    self.files[str(self.rows[i]["source"])].dropped_constant += 1
                    dropped.add(i)
            if with_fingerprints:
                self.mapped_prints.append(fingerprint(chip, mask))
        keep = [i not in dropped for i in range(len(self.images))]
        self.keep_chips(keep)
        text = "-".join(f"p{v:g}" for v in percentiles)
        groups = {group: {"from": f"train split: {text} of valid pixels", "chips": sizes[group],
                          "channels": {name: [round(float(a), 6), round(float(b), 6)] for name, a, b in
                                       zip(self.channel_names, ranges[group].low, ranges[group].high)},
                          "clipped": counts[group].fractions(self.channel_names)} if group in ranges else
                  {"from": "no chip in the train split: not mapped, its chips left out", "chips": sizes[group]}
                  for group in sorted(sizes)}
        return {"groups": groups}, [split for split, kept in zip(splits, keep) if kept]

    def _fit_ranges(self, groups: list[str], splits: list[str],
                    percentiles: tuple[float, float]) -> tuple[dict[str, UnitRange], list[int]]:
        """Each group's range fitted on its train-split chips, and the chips of the groups without any: fitting
        on validation or test pixels would leak them into the mapping, so those are left out."""
        ranges, left_out = {}, []
        for group in groups:
            train = [i for i, g in enumerate(self.range_group) if g == group and splits[i] == "train"]
            if train:
                ranges[group] = UnitRange(*fit_range(self.raw_subset("images", train),
                                                     self.raw_subset("valid", train), percentiles))
            else:
                left_out += [i for i, g in enumerate(self.range_group) if g == group]
        return ranges, left_out

    def no_chip_files(self) -> list[dict[str, str]]:
        """One line per readable file that gave no chip, with why."""
        chips = Counter(str(row["source"]) for row in self.rows)
        return [{"path": relative, "reason": f"{relative}: {_no_chip_reason(outcome)}"}
                for relative, outcome in self.files.items() if not chips[relative]]

    def constant_chip_files(self) -> list[dict[str, object]]:
        """One line per file that lost chips to the constant rule (whether or not others were kept)."""
        return [{"path": relative, "chips": outcome.dropped_constant,
                 "reason": f"{relative}: {outcome.dropped_constant} chip(s) constant after {outcome.intensity}"}
                for relative, outcome in self.files.items() if outcome.dropped_constant]


class RangeMappedChips:
    """Some of the ingested chips, each mapped to [0, 1] by its value-range group's fitted range as it is read
    (chips without one as they are); iterating reads neighbouring chips together."""

    def __init__(self, found: IngestedChips, indexes: list[int]) -> None:
        self.found, self.indexes = found, indexes

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, position: int) -> np.ndarray:
        index = self.indexes[position]
        return self._mapped(self.found.images[index], self.found.valid[index], self.found.unit_range[index])

    def __iter__(self):
        images, valid = iter_items(self.found.images, self.indexes), iter_items(self.found.valid, self.indexes)
        for index, image, mask in zip(self.indexes, images, valid):
            yield self._mapped(image, mask, self.found.unit_range[index])

    @staticmethod
    def _mapped(image: np.ndarray, mask: np.ndarray, unit: UnitRange | None) -> np.ndarray:
        return image if unit is None else to_unit(image, mask, unit.low, unit.high)


def _no_chip_reason(outcome: FileOutcome) -> str:
    if outcome.no_chip_reason:
        return outcome.no_chip_reason
    parts = [f"{outcome.dropped_constant} constant after {outcome.intensity}"] if outcome.dropped_constant else []
    if outcome.dropped_low_valid:
        parts.append(f"{outcome.dropped_low_valid} under min_valid_fraction")
    if outcome.no_range:
        parts.append(f"{outcome.no_range} in a value-range group with no chip in the train split (set "
                     "value_range, or give the split more of these scenes)")
    return "no chips: " + (", ".join(parts) if parts else "nothing to read")
