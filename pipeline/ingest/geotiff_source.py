"""GeoTIFF scenes → chips: one band set per domain, SAR in decibels, values mapped by a range that fits the data.

Three steps, each a policy of its own module:

1. **Before any pixel**, :func:`plan_scenes` reads every scene's header and settles the domain's band set
   (:mod:`pipeline.ingest.bands`): with ``bands: null`` the set most scenes share, each scene contributing exactly
   those bands, a scene without them rejected with its band set and how many scenes share it. The choice does not
   depend on file order, and ``ingest.strict`` stops at such a rejection like any other.
2. :func:`read_geotiff_file` cuts a scene into chips in physical units (scale / offset applied, complex SAR as
   amplitude); a ``sar_db`` preset converts them to decibels and adds the polarisation ratio (:mod:`pipeline.io.sar`).
3. Values → [0, 1] (:mod:`pipeline.ingest.value_ranges`): a configured range is applied here; without one, chips
   stay in physical units (``FileChips.range_group``) until ingest has split them and fitted each channel's
   range on the train split's chips of the same *range group*: scenes that store the same type with the same
   scale / offset (an 8-bit quick-look and a 16-bit product of the same bands are not mapped by one range).

Labels: the dominant class of the scene's class raster or GeoJSON under ``masks/`` (:mod:`pipeline.ingest.scenes`),
else its ``labels.csv`` row. GDAL's block cache is capped at ``GDAL_CACHE_BYTES`` in whichever process reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from pipeline.config_data import DomainDataConfig, GeoTiffOptions
from pipeline.ingest.bands import canonical_band, choose_band_set
from pipeline.ingest.scenes import (
    GDAL_CACHE_BYTES, ChipLabels, Scene, list_scenes, open_chip_labels, open_scene, scene_bands,
)
from pipeline.data.chips import MASK_IGNORE
from pipeline.ingest.sources import FileChips, FileTask, resize_chip
from pipeline.ingest.value_ranges import clip_counts, configured_range, range_pairs, to_unit
from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import GeoChip
from pipeline.io.sar import input_kind, ratio_channels, to_decibels, with_ratios
from pipeline.presets import PRESETS


def list_geotiff_files(source: Path) -> list[Path]:
    """Scenes below the source: band folders and multi-band files (:func:`pipeline.ingest.scenes.list_scenes`)."""
    return list_scenes(source)


@dataclass
class ScenePlan:
    """The domain's band set, decided from headers before any pixel is read.

    Attributes:
        bands: per scene, the band indexes to read (1-based, as ``data.<d>.geotiff.bands`` takes them).
        channel_names: the domain's channel names (before SAR adds its ratio).
        rejected: ``{path, reason}`` of scenes that lack the band set.
        summary: for the ingest report: the chosen set and how many scenes share it.
    """

    bands: dict[Path, tuple[int | str, ...]] = field(default_factory=dict)
    channel_names: tuple[str, ...] | None = None
    rejected: list[dict[str, str]] = field(default_factory=list)
    summary: dict[str, object] = field(default_factory=dict)


def plan_scenes(source: Path, files: list[Path], cfg: DomainDataConfig, domain: str) -> ScenePlan:
    """Settle the band set (see the module docstring); unreadable headers are left to the reader."""
    if cfg.geotiff.bands is not None:  # the user's choice: every scene reads it (or is rejected by the reader)
        return ScenePlan(summary={"bands": list(cfg.geotiff.bands), "chosen": "configured"})
    headers: dict[Path, tuple[list[str], tuple[int, ...]]] = {}  # one header read per scene
    for path in files:
        try:
            headers[path] = scene_bands(path)
        except UnreadableImageError:
            continue
    if not headers:
        return ScenePlan()
    key = f"data.{domain or '<domain>'}.geotiff.bands"
    choice = choose_band_set({path.relative_to(source).as_posix(): names for path, (names, _) in headers.items()},
                             key)
    plan = ScenePlan(channel_names=choice.channel_names)
    for path, (_, indexes) in headers.items():
        relative = path.relative_to(source).as_posix()
        if relative in choice.rejected:
            plan.rejected.append({"path": relative, "reason": f"{relative}: {choice.rejected[relative]}"})
        else:  # positions among the scene's data bands → the band indexes open_scene takes
            plan.bands[path] = tuple(indexes[p - 1] for p in choice.selection[relative])
    plan.summary = {"bands": list(choice.channel_names), "chosen": "keeps the most (scenes x bands)",
                    "scenes_giving_it": len(plan.bands), "scenes": len(headers), "candidates": choice.candidates}
    return plan


def read_geotiff_file(task: FileTask) -> FileChips:
    """One scene (a multi-band file or a band folder) → a non-overlapping chip grid (see the module docstring)."""
    key = f"data.{task.domain or '<domain>'}.geotiff"
    options, recipe = task.cfg.geotiff, PRESETS[task.cfg.preset].geotiff
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        scene = open_scene(task.path, task.bands if task.bands is not None else options.bands, f"{key}.bands")
        out = FileChips(task.relative, channel_names=list(task.channel_names or _channel_names(scene, options.bands)))
        labels = open_chip_labels(task.source, task.relative, scene, task.class_names)
        tile = labels is None and bool(task.labels.get(task.relative)) and not options.chip_labelled_files
        side = min(scene.grid.width, scene.grid.height) if tile else task.cfg.chip_size
        if min(scene.grid.width, scene.grid.height) < side:
            out.no_chip_reason = (f"the {scene.grid.width}x{scene.grid.height} scene is smaller than chip_size "
                                  f"{task.cfg.chip_size}")
        large = bool(task.spill_dir) and scene.grid.width * scene.grid.height * len(out.channel_names) * 4 > \
            task.spill_above
        if large:  # its chips go to the spill as they are read
            out.spill_to(Path(task.spill_dir) / hashlib.sha1(task.relative.encode()).hexdigest()[:16])
        sar = recipe is not None and recipe.values == "sar_db"
        chips, median, sar_input = _physical_chips(scene, side, options, sar, large, out)
        if tile:
            chips = _resized(chips, task.cfg.chip_size)
        fixed = configured_range(options.value_range, len(out.channel_names), f"{key}.value_range", task.relative)
        try:
            for chip, data, valid in chips:
                _add_chip(out, task, chip, data, valid, labels, scene.grid.crs, fixed)
        finally:
            if labels is not None:
                labels.close()
        if out.range_group:
            out.range_group = range_group(scene, sar_input, median)
        out.intensity = _intensity_text(out, sar_input, options)
    return out


def _physical_chips(scene: Scene, size: int, options: GeoTiffOptions, sar: bool, large: bool,
                    out: FileChips) -> tuple[Iterable[tuple], float | None, str | None]:
    """The scene's kept chips in physical units (SAR: in dB, ``out.channel_names`` with the ratio), the median of
    their valid values where it decides something (a SAR scene's input kind, a float scene's range group; None
    otherwise or without chips) and the SAR input kind. A large scene's chips are read as they are used, after a
    first pass for the median alone; a small one's are gathered, one pass."""
    chips = _kept_chips(scene, size, options.min_valid_fraction, out)
    median = None
    if sar or any(str(t).startswith("float") for t in scene.dtypes):
        if large:
            median = _scene_median(scene, size, options.min_valid_fraction)
        else:
            chips = list(chips)
            median = valid_median(chips) if chips else None
    sar_input = input_kind(options.sar.input, scene.dtypes, median) if sar and median is not None else None
    if sar_input:
        if options.sar.ratio:
            out.channel_names = [*out.channel_names, *(name for _, _, name in ratio_channels(out.channel_names))]
        chips = _in_decibels(chips, out, sar_input, options)
    return chips, median, sar_input


def _resized(chips: Iterable[tuple], size: int) -> Iterator[tuple]:
    """A labelled tile read as one chip (its largest square from the top-left: all of a square tile) and
    resized to ``size``, so that one image is one labelled example, as the label means."""
    for chip, data, valid in chips:
        data, valid = resize_chip(data, valid, size)
        yield chip, np.ascontiguousarray(data, dtype=np.float32), valid


def _kept_chips(scene: Scene, size: int, min_valid_fraction: float, out: FileChips) -> Iterator[tuple]:
    """(chip, data, valid) of each chip with enough valid pixels, as read; the others are counted in ``out``."""
    for chip in scene.read_chips(size):
        if chip.valid_fraction < min_valid_fraction:
            out.dropped_low_valid += 1
        else:
            yield chip, chip.data, chip.valid


def _channel_names(scene: Scene, requested: list | None) -> list[str]:
    """Canonical names (``B04`` → red); a generic band is ``band_<i>`` by the index it was asked for (or its
    position), so ``b1`` and ``band_1`` files give the same channel."""
    names = []
    for position, name in enumerate(scene.channel_names, start=1):
        asked = requested[position - 1] if requested is not None else position
        names.append(canonical_band(name) or (canonical_band(asked) if isinstance(asked, str) else None)
                     or f"band_{asked if isinstance(asked, int) else position}")
    return names


def valid_median(chips: list[tuple[GeoChip, np.ndarray, np.ndarray]]) -> float:
    """Median of the scene's valid values (a regular subsample of every kept chip): decides what SAR data is."""
    values = np.concatenate([data[:, valid][:, ::16].ravel() for _, data, valid in chips])
    return float(np.median(values)) if values.size else 0.0


def _in_decibels(chips: Iterable[tuple], out: FileChips, sar_input: str, options: GeoTiffOptions) -> Iterator[tuple]:
    """SAR chips in dB (plus the polarisation ratio; ``out.channel_names`` already names it); a chip whose share
    of valid pixels falls under ``min_valid_fraction`` once non-positive linear values are invalid is dropped like
    any other."""
    for chip, data, valid in chips:
        data, valid = to_decibels(data, valid, sar_input)
        if valid.mean() < options.min_valid_fraction:
            out.dropped_low_valid += 1
            continue
        if options.sar.ratio:
            data, _ = with_ratios(data, out.channel_names[:data.shape[0]])
        yield chip, data, valid


def _scene_median(scene: Scene, size: int, min_valid_fraction: float) -> float | None:
    """:func:`valid_median` of the scene's kept chips, read once without holding them; None without any."""
    samples = [chip.data[:, chip.valid][:, ::16].ravel().copy() for chip in scene.read_chips(size)
               if chip.valid_fraction >= min_valid_fraction]
    if not samples:
        return None
    values = np.concatenate(samples)
    return float(np.median(values)) if values.size else 0.0


def _add_chip(out: FileChips, task: FileTask, chip: GeoChip, data: np.ndarray, valid: np.ndarray,
              labels: ChipLabels | None, crs: str, fixed: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Map one chip to [0, 1] (or keep it pending a fitted range) and add it with its row and mask."""
    label, mask = task.labels.get(task.relative, ""), None
    if labels is not None:
        mask = np.where(valid, labels.read(chip, task.cfg.chip_size), MASK_IGNORE).astype(np.uint8)
        label = dominant_class(mask, labels.class_names, task.relative)
    if fixed is None:
        out.range_group = "pending"
        out.images.append(np.ascontiguousarray(data, dtype=np.float32))
    else:
        out.clip_counts.add(clip_counts(data, valid, *fixed))
        # [0, 1] is the augmentation space; standardised values downstream are never clamped.
        out.images.append(to_unit(data, valid, *fixed))
    out.masks.append(mask)
    out.valid.append(valid)
    out.rows.append({"source": task.relative, "group": task.relative, "label": label, "row": chip.row,
                     "col": chip.col, "crs": crs, "transform": " ".join(f"{v:.6f}" for v in chip.transform)})


def _intensity_text(out: FileChips, kind: str | None, options: GeoTiffOptions) -> str:
    """How the file's values became [0, 1], for the report and for reasons (``constant after …``)."""
    sar = f"SAR {kind} -> dB, " if kind else ""
    if out.range_group:
        low, high = options.range_percentiles
        return f"{sar}train-split range p{low:g}-p{high:g} -> [0, 1]"
    pairs = range_pairs(options.value_range, len(out.channel_names)) or []
    shown = ", ".join(f"[{low:g}, {high:g}]" for low, high in dict.fromkeys(pairs))
    return f"{sar}value range {shown} -> [0, 1]"


def range_group(scene: Scene, sar_input: str | None, median: float | None) -> str:
    """Scenes whose values share a range: the same stored types, scales and offsets, SAR input kind and, for
    floating-point data (no bit depth to go by), the decade of their median magnitude: reflectance in [0, 1] and
    reflectance × 10⁴ stored as float32 are not mapped by one range."""
    types = "/".join(dict.fromkeys(scene.dtypes))
    scales = "/".join(dict.fromkeys(f"x{s:g}" for s in scene.scales if s != 1.0))
    offsets = "/".join(dict.fromkeys(f"{o:+g}" for o in scene.grid.offsets if o != 0.0))
    magnitude = ""
    if any(str(t).startswith("float") for t in scene.dtypes) and sar_input is None:
        median = abs(median) if median is not None else 0.0
        magnitude = f"~1e{int(np.floor(np.log10(median)))}" if median > 0 else "~0"
    parts = (types, scales, offsets, magnitude, f"SAR {sar_input}" if sar_input else "")
    return " ".join(part for part in parts if part)


def dominant_class(mask: np.ndarray, class_names: list[str], where: str = "") -> str:
    """The most common class id of a chip's valid pixels, by name ("" without valid pixels).

    Raises:
        UnreadableImageError: a class id that ``classes.json`` (or the labels) give no name (names the scene).
    """
    values = mask[mask != MASK_IGNORE]
    if values.size == 0:
        return ""
    dominant = int(np.bincount(values.astype(np.int64)).argmax())
    if dominant >= len(class_names):
        raise UnreadableImageError(f"{where}: class raster value {dominant} has no class name; name it in "
                                   "classes.json mask_classes")
    return class_names[dominant]
