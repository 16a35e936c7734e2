"""GeoTIFF scenes as ingest sees them: which files or folders are scenes, how one is opened, and its labels.

A **scene** is the unit ingest cuts into chips, one manifest ``source`` (and one spatial-split group):

- a **multi-band file** (``scenes/a.tif``): read with :func:`pipeline.io.geotiff.iter_chips`;
- a **band folder** (``products/T33UUP_20200101/``): a folder below the source whose rasters (``.tif`` /
  ``.tiff``, at least two) are *all* named like band files (a ``B<n>`` / ``B<n>A`` token, the convention of
  :func:`pipeline.io.geotiff_stack.find_band_files`: ``T33UUP_20200101_B02_10m.tif`` → ``B02``). Its bands,
  one single-band file each and possibly at different resolutions (Sentinel-2: 10 / 20 / 60 m), are stacked
  onto the finest selected band's grid (:func:`pipeline.io.geotiff_stack.plan_band_stack`). Its relative
  path is the folder's. A folder that also holds other rasters is not a band folder: its files are scenes
  of their own. Other files (metadata XML, previews) are ignored.

:func:`open_scene` dispatches on that one difference to one of two openers, which both return a
:class:`Scene`; everything after (band selection, value range, labels, chips) is shared.

Config policies (``data.<domain>.geotiff``):

- ``bands``: 1-based indexes or names. For a file, indexes count every band of the file (an alpha band is
  validity, never a channel) and names match band descriptions (``band_<i>`` where a band has none); for a
  band folder, names are the band tokens (``B02``, ``B8A``, ``VV``) and indexes count them in Sentinel-2
  order. Names match through :func:`pipeline.ingest.bands.canonical_band` (``nir`` = ``NIR`` = ``B08``); an
  unknown one rejects the scene naming the key and the available names. ``null``: the band set most scenes
  share (:func:`pipeline.ingest.bands.choose_band_set`, decided before any pixel is read).
- ``value_range``: see :mod:`pipeline.ingest.value_ranges` (configured, or the train split's robust range).

Labels (mirror the raster-mask convention): ``masks/<scene>`` with the scene's own path, or its name alone
in a flat ``masks/`` folder, where ``<scene>`` is the file's path (``masks/scenes/a.tif``, a class raster on
the scene grid) or, for vector labels, the path with the raster suffix replaced by ``.geojson``
(``masks/scenes/a.geojson``; for a band folder the folder path plus ``.geojson``:
``masks/products/T33UUP_20200101.geojson``; a band folder's class raster is the folder path plus ``.tif``).
GeoJSON polygons (any CRS; ``class`` property) are reprojected to the scene CRS and burnt into each chip.
Their class names map to ids through ``classes.json`` ``mask_classes`` (``{"0": "background", …}``); pixels
no polygon covers get the ``background`` id when that class exists, else they are ignored (255, as are
invalid pixels). A scene with both a class raster and a GeoJSON is rejected (which one is meant?).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.ingest.bands import match_band
from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import GeoChip, SceneInfo, iter_chips, open_raster, read_scene_info
from pipeline.io.geotiff_labels import VectorLabels, rasterize_labels, read_vector_labels
from pipeline.io.geotiff_masks import LabelRaster
from pipeline.io.geotiff_stack import band_token, find_band_files, iter_stack_chips, plan_band_stack

GEOTIFF_SUFFIXES = (".tif", ".tiff")
LABEL_FOLDER = "masks"
GDAL_CACHE_BYTES = 256 * 2**20  # GDAL block cache per reading process (GDAL's default is 5 % of RAM)


@dataclass(frozen=True)
class Scene:
    """One opened scene: its chip grid, the selected channels and how to cut its chips.

    Attributes:
        path: the file or band folder.
        grid: header on the chip grid (a band folder: the reference band's grid with the selected bands'
            names, scales and offsets); class rasters must match it.
        channel_names: chip channel names, in order.
        dtypes: stored data type of each channel.
        scales: scale tag of each channel (1.0 when the band has none).
        read_chips: ``chip_size`` → :class:`GeoChip` iterator (physical units, row-major, bounded memory).
    """

    path: Path
    grid: SceneInfo
    channel_names: tuple[str, ...]
    dtypes: tuple[str, ...]
    scales: tuple[float, ...]
    read_chips: Callable[[int], Iterator[GeoChip]]


@dataclass(frozen=True)
class ChipLabels:
    """How one scene's chips get their class mask (before invalid pixels are set to "ignore").

    Attributes:
        read: (chip, chip_size) → (chip_size, chip_size) class ids.
        class_names: id → name (a list indexed by id) for the chip's dominant-class label.
    """

    read: Callable[[GeoChip, int], np.ndarray]
    class_names: Sequence[str]
    close: Callable[[], None] = lambda: None  # releases an open class raster once the scene is read


# --- which paths are scenes --------------------------------------------------------------------------

def is_band_folder(rasters: Sequence[Path]) -> bool:
    """True when a folder's rasters (two or more) all carry a band token (``B02``, ``VV`` …) in their names, each
    a different one; a folder of several scenes of one band (``a_VV.tif``, ``b_VV.tif``) holds separate scenes."""
    tokens = [band_token(path.stem) for path in rasters]
    return len(rasters) >= 2 and all(tokens) and len(set(tokens)) == len(tokens)


def list_scenes(source: Path) -> list[Path]:
    """Band folders and every other GeoTIFF below ``source``, sorted; label files under ``masks/`` excluded.

    The source folder itself is never a band folder (a scene needs a path relative to the source).
    """
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(source.rglob("*")):
        if (path.suffix.lower() in GEOTIFF_SUFFIXES and path.is_file()
                and LABEL_FOLDER not in path.relative_to(source).parts):
            by_folder.setdefault(path.parent, []).append(path)
    scenes: list[Path] = []
    for folder, rasters in by_folder.items():
        scenes += [folder] if folder != source and is_band_folder(rasters) else rasters
    return sorted(scenes)


# --- band selection and value range ------------------------------------------------------------------

def select_bands(requested: Sequence[int | str] | None, names: Sequence[str], selectable: Sequence[int],
                 key: str, where: Path, alpha: int | None = None) -> tuple[int, ...]:
    """``bands`` from the config (1-based indexes or names) → 1-based positions into ``names``.

    Args:
        requested: the configured list, or None for every selectable band.
        names: every band's name, position i − 1 for band i.
        selectable: 1-based positions that may become channels (the data bands).
        key: the config key, named in errors (``data.<domain>.geotiff.bands``).
        where: the scene, named first in errors.
        alpha: 1-based position of an alpha band, for a clearer error when it is asked for.

    Raises:
        UnreadableImageError: an index out of range or the alpha band, or a name that matches no band or
            several (names the scene, the key and the available names).
    """
    if requested is None:
        return tuple(selectable)
    available = [names[i - 1] for i in selectable]
    picked = []
    for band in requested:
        if isinstance(band, int):
            if band == alpha:
                raise UnreadableImageError(f"{where}: {key}: band {band} is an alpha band (validity, not data)")
            if band not in selectable:
                raise UnreadableImageError(f"{where}: {key}: band index {band} is not one of its data bands "
                                           f"{list(selectable)} ({available})")
            picked.append(band)
            continue
        matches = [i for i in match_band(str(band), names) if i in selectable]
        if len(matches) != 1:
            problem = "matches several bands" if matches else "matches no band"
            raise UnreadableImageError(f"{where}: {key}: {band!r} {problem}; available names: {available}")
        picked.append(matches[0])
    return tuple(picked)


# --- the two openers ---------------------------------------------------------------------------------

def open_file_scene(path: Path, bands: Sequence[int | str] | None, key: str) -> Scene:
    """A multi-band GeoTIFF (any band count; an alpha band is validity only)."""
    info = read_scene_info(path)
    with open_raster(path) as src:
        dtypes = tuple(str(t) for t in src.dtypes)
    indexes = select_bands(bands, info.band_names, info.data_bands, key, path, info.alpha_band)
    return Scene(path=path, grid=info, channel_names=tuple(info.band_names[i - 1] for i in indexes),
                 dtypes=tuple(dtypes[i - 1] for i in indexes), scales=tuple(info.scales[i - 1] for i in indexes),
                 read_chips=partial(iter_chips, path, bands=indexes))


def open_band_folder(folder: Path, bands: Sequence[int | str] | None, key: str) -> Scene:
    """A folder of single-band files, stacked onto the finest selected band's grid."""
    files = find_band_files(folder, GEOTIFF_SUFFIXES)
    names = list(files)
    positions = select_bands(bands, names, range(1, len(names) + 1), key, folder)
    stack = plan_band_stack(files, [names[i - 1] for i in positions])
    infos = [read_scene_info(path) for path in stack.paths]
    grid = SceneInfo(path=folder, width=stack.width, height=stack.height, count=len(infos), dtype=infos[0].dtype,
                     crs=stack.crs, transform=stack.transform, nodata=None, band_names=stack.band_names,
                     scales=tuple(i.scales[0] for i in infos), offsets=tuple(i.offsets[0] for i in infos),
                     data_bands=tuple(range(1, len(infos) + 1)))
    return Scene(path=folder, grid=grid, channel_names=stack.band_names, dtypes=tuple(i.dtype for i in infos),
                 scales=grid.scales, read_chips=partial(iter_stack_chips, stack))


def scene_bands(path: Path) -> tuple[list[str], tuple[int, ...]]:
    """The data bands' names of a scene, in band order, and their indexes as ``open_scene`` takes them (a file's
    alpha band skipped), from its header alone (band folder: its band tokens, positions 1 … n).

    Raises:
        UnreadableImageError: unreadable or unsupported (the reader reports it again, with the same line).
    """
    if path.is_dir():
        names = list(find_band_files(path, GEOTIFF_SUFFIXES))
        return names, tuple(range(1, len(names) + 1))
    info = read_scene_info(path)
    return [info.band_names[i - 1] for i in info.data_bands], info.data_bands


def open_scene(path: Path, bands: Sequence[int | str] | None, key: str) -> Scene:
    """Open a scene from :func:`list_scenes`: a band folder or a multi-band file.

    Raises:
        UnreadableImageError: unreadable or unsupported file(s), or a bad ``bands`` entry (names the key).
    """
    return (open_band_folder if path.is_dir() else open_file_scene)(path, bands, key)


# --- labels ------------------------------------------------------------------------------------------

def _label_file(source: Path, relative: str, name: str) -> Path | None:
    """``masks/<folder of relative>/<name>``, else ``masks/<name>`` (flat), else None."""
    nested = source / LABEL_FOLDER / Path(relative).parent / name
    flat = source / LABEL_FOLDER / name
    return nested if nested.is_file() else flat if flat.is_file() else None


def read_mask_class_ids(source: Path) -> dict[str, int]:
    """``classes.json`` ``mask_classes`` ({"0": "background", …}) → {name: id}; {} when absent."""
    path = source / "classes.json"
    names = json.loads(path.read_text()).get("mask_classes", {}) if path.exists() else {}
    return {str(name): int(key) for key, name in names.items()}


def _mask_class_names(source: Path) -> list[str]:
    """``classes.json`` ``mask_classes`` as names by id ([] without it): what a class raster's ids mean."""
    by_id = {i: name for name, i in read_mask_class_ids(source).items()}
    return [by_id.get(i, "") for i in range(max(by_id) + 1)] if by_id else []


def _vector_labels(path: Path, scene: Scene, source: Path) -> ChipLabels:
    class_ids = read_mask_class_ids(source)
    if not class_ids:
        raise UnreadableImageError(f"{path}: GeoJSON labels need classes.json mask_classes "
                                   '({"0": "background", "1": …}) to give each class an id')
    labels: VectorLabels = read_vector_labels(path, scene.grid.crs)
    unknown = sorted(set(labels.classes) - set(class_ids))
    if unknown:
        raise UnreadableImageError(f"{path}: classes {unknown} are not in classes.json mask_classes "
                                   f"{sorted(class_ids)}")
    fill = class_ids.get("background", 255)
    by_id = {i: name for name, i in class_ids.items()}
    names = [by_id.get(i, "") for i in range(max(by_id) + 1)]
    return ChipLabels(lambda chip, size: rasterize_labels(labels, chip.transform, size, class_ids, fill=fill),
                      names)


def open_chip_labels(source: Path, relative: str, scene: Scene,
                     image_class_names: Sequence[str]) -> ChipLabels | None:
    """The scene's class raster or GeoJSON under ``masks/`` (see the module docstring), or None.

    Args:
        source: the source folder.
        relative: the scene's path relative to ``source``.
        scene: the opened scene (its grid and CRS place the labels).
        image_class_names: id → name for class rasters when ``classes.json`` names no ``mask_classes``.

    Raises:
        UnreadableImageError: both a class raster and a GeoJSON, or an unusable GeoJSON (names the file).
    """
    name = Path(relative).name
    raster = _label_file(source, relative, name + ".tif" if scene.path.is_dir() else name)
    stem = name if scene.path.is_dir() else Path(name).stem
    vector = _label_file(source, relative, stem + ".geojson")
    if raster and vector:
        raise UnreadableImageError(f"{scene.path}: both {raster.relative_to(source)} and "
                                   f"{vector.relative_to(source)} label it; keep one")
    if raster:
        opened = LabelRaster(raster, scene.grid)  # once per scene: a warp onto another grid is set up once
        mask_names = _mask_class_names(source)
        return ChipLabels(lambda chip, size: opened.read(chip.row, chip.col, size), mask_names or image_class_names,
                          opened.close)
    return _vector_labels(vector, scene, source) if vector else None
