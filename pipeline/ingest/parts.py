"""Ingest as several independent jobs (a SLURM array, ``dvc exp`` queue workers, a Kubernetes indexed Job), then
one merge that writes the cache a single ingest would have written.

Why this split: decoding is where an archive's ingest spends its time, and each file decodes on its own. What
needs every file comes after it: the split (patients and spatial blocks across files), an MR series' mapping,
train-split value ranges and channel statistics, the constant-chip rule of a range group. So a part
(:func:`ingest_part`) decodes its slice of the sorted files (:class:`~pipeline.ingest.part_spec.PartSpec`) into
its own spill files and saves what it found; the merge (:func:`merge_parts`) chains the parts' files in part
order, which is file order, without copying them, and runs the passes a single ingest runs after reading. The
cache is the same bytes whatever the number of parts or where they ran (tested with 3 parts).

A part's folder is ``<parts_dir>/part-I-of-N``; it holds the chips (raw, as ingest spills them: uint16 while
they are whole numbers, else float32), the valid and segmentation masks and ``found.pkl`` (the manifest rows
and every file's outcome, pickled: read it only from folders your own jobs wrote). Each part records a
fingerprint of the source listing, the domain's data settings and the PHI salt; the merge refuses a part whose
fingerprint differs from its own, naming it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

from pipeline.atomic import atomic_dir
from pipeline.config_data import DomainDataConfig
from pipeline.ingest.folder import DuplicatePolicy, finish_reading, read_files, split_and_write
from pipeline.ingest.ingested import IngestedChips, IngestError
from pipeline.ingest.part_spec import PartSpec
from pipeline.ingest.phi import pseudonymise, phi_salt
from pipeline.ingest.source_kinds import SOURCE_KINDS
from pipeline.ingest.spill import ChainedArrays, reopen
from pipeline.presets import DomainPreset

FORMAT = 3  # 2: per-chip fitted value ranges (`unit_range`) in found.pkl; 3: chips stored narrow (`stored`);
# a merge refuses parts of another format
SPILLED = ("images", "valid", "masks")
_PART_FOLDER = re.compile(r"^part-(\d+)-of-(\d+)$")


def fingerprint(source: Path, cfg: DomainDataConfig, preset: DomainPreset, count: int) -> dict[str, object]:
    """What must be the same for parts to make one cache: the files (relative paths and sizes), the data settings
    (not the source's path, which differs between machines that mount it elsewhere), the reader, the salt."""
    listing = "\n".join(f"{path.relative_to(source).as_posix()}\t{path.stat().st_size}"
                        for path in SOURCE_KINDS[preset.reader].list_files(source))
    return {"format": FORMAT, "parts": count, "reader": preset.reader,
            "files": hashlib.sha256(listing.encode()).hexdigest(),
            "data": cfg.model_dump(mode="json", exclude={"source"}),
            "phi_salt": pseudonymise("ingest parts", phi_salt())}


def ingest_part(source: Path, cfg: DomainDataConfig, preset: DomainPreset, part: PartSpec, parts_dir: Path,
                workers: int = 1, strict: bool = False, domain: str = "") -> Path:
    """Decode one part's files into ``parts_dir/part-I-of-N`` (written atomically; a re-run replaces it).

    Returns the part's folder.
    """
    if not source.is_dir():
        raise FileNotFoundError(f"data source {source} is not a folder")
    target = parts_dir / part.name
    with atomic_dir(target) as staging:
        found = read_files(source, cfg, preset.reader, workers, strict, domain, staging / "chips", part)
        try:
            _save(found, staging, fingerprint(source, cfg, preset, part.count))
        except BaseException:
            found.close()
            raise
    return target


def merge_parts(parts_dir: Path, source: Path, cfg: DomainDataConfig, preset: DomainPreset, seed: int,
                out_dir: Path, domain: str = "", source_label: str | None = None,
                duplicates: DuplicatePolicy = DuplicatePolicy()) -> dict:
    """Chain every part in ``parts_dir`` and write the cache into ``out_dir`` as :func:`ingest_folder` does.

    Returns the outcome report (that of a single ingest of the whole folder).

    Raises:
        IngestError: a part is missing, was read from other files or settings, or holds other channels.
    """
    count = _part_count(parts_dir)
    expected = fingerprint(source, cfg, preset, count)
    found = _chained([_load(parts_dir, PartSpec(index, count), expected) for index in range(count)],
                     out_dir / ".spill")
    try:
        return split_and_write(finish_reading(found, source, cfg), source, cfg, preset, seed, out_dir, domain,
                               source_label, duplicates)
    finally:
        found.close()


def _save(found: IngestedChips, folder: Path, print_: dict) -> None:
    state = dict(vars(found))
    for name in SPILLED:
        state[name] = state[name].layout()
    with open(folder / "found.pkl", "wb") as stream:
        pickle.dump(state, stream, protocol=pickle.HIGHEST_PROTOCOL)
    for name in SPILLED:
        getattr(found, name).detach()
    (folder / "part.json").write_text(json.dumps({"fingerprint": print_, "files": len(found.files),
                                                  "chips": len(found.rows)}, indent=2) + "\n")


def _part_count(parts_dir: Path) -> int:
    counts = {int(match[2]) for path in (parts_dir.iterdir() if parts_dir.is_dir() else [])
              if (match := _PART_FOLDER.match(path.name))}
    if len(counts) != 1:
        found = f"parts of {sorted(counts)} in all" if counts else "no part-I-of-N folder"
        raise IngestError(f"{parts_dir}: {found}; a merge needs the parts of one run (remove the others)")
    return counts.pop()


def _load(parts_dir: Path, part: PartSpec, expected: dict) -> IngestedChips:
    folder = parts_dir / part.name
    if not (folder / "part.json").is_file():
        raise IngestError(f"{folder}: part {part} is missing (run ingest --part {part} first)")
    recorded = json.loads((folder / "part.json").read_text())["fingerprint"]
    differing = [key for key in expected if recorded.get(key) != expected.get(key)]
    if differing:
        raise IngestError(f"{folder}: part {part} was read with other {', '.join(differing)} than this merge "
                          "(source files, data settings or PIPELINE_PHI_SALT): run it again")
    with open(folder / "found.pkl", "rb") as stream:
        state = pickle.load(stream)
    found = IngestedChips()
    vars(found).update({**state, **{name: reopen(folder / "chips", state[name]) for name in SPILLED}})
    return found


def _chained(parts: list[IngestedChips], overlay: Path) -> IngestedChips:
    """One :class:`IngestedChips` of the parts in order: what a single read of all their files holds."""
    first = parts[0]
    merged = IngestedChips(files_seen=first.files_seen, mask_classes=first.mask_classes, band_plan=first.band_plan,
                           user_splits=first.user_splits, labels_csv=first.labels_csv)
    for index, part in enumerate(parts):
        if part.channel_names and merged.channel_names and part.channel_names != merged.channel_names:
            for other in parts:  # the parts' files stay for a later merge
                for name in SPILLED:
                    getattr(other, name).detach()
            raise IngestError(f"part {index}/{len(parts)}: channels {part.channel_names} differ from the earlier "
                              f"parts' {merged.channel_names}; ingest such a folder in one part")
        merged.channel_names = merged.channel_names or part.channel_names
        for name in ("rows", "deferred", "range_group", "unit_range", "rejected", "skipped", "labels"):
            getattr(merged, name).extend(getattr(part, name))
        merged.files.update(part.files)
        merged.identifiers |= part.identifiers
        merged.clip_counts.add(part.clip_counts)
        for modality, outcomes in part.modalities.items():
            merged.modalities.setdefault(modality, type(outcomes)()).update(outcomes)
    overlay.mkdir(parents=True, exist_ok=True)
    for name in SPILLED:
        setattr(merged, name, ChainedArrays([getattr(part, name) for part in parts], overlay / f"{name}.bin"))
    return merged

