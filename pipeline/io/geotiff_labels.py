"""Vector labels (GeoJSON polygons with a ``class`` property) → class masks and boxes on a chip's grid.

Label polygons are usually drawn in another CRS than the raster (EPSG:4326 from a web map, the raster in
UTM). They are reprojected once per scene into the raster's CRS (``rasterio.warp.transform_geom``: vertices
are transformed, edges stay straight, so densify very long edges before labelling), then burnt into each
chip's pixel grid with ``rasterio.features.rasterize``.

Policies:

- **CRS**: the GeoJSON's legacy ``crs`` member when present, else WGS 84 lon/lat (RFC 7946).
- **geometry**: Polygon and MultiPolygon (holes honoured); a feature without geometry is skipped; any other
  geometry, or a feature without the class property, rejects the file (a label silently lost is worse).
- **pixels**: a pixel belongs to a polygon when its centre is inside (GDAL's default); ``all_touched=True``
  takes every pixel the outline touches (small objects). Overlapping polygons: the later feature wins.
- **boxes** are the pixel extent of each feature's rasterised footprint on the chip, ``(xmin, ymin, xmax,
  ymax)`` in chip pixel coordinates with xmax/ymax exclusive (pixel edges), so a box is exactly the part of
  the object that lies on the chip, clipped at its border, and agrees with the class mask. A polygon that
  covers no pixel centre of the chip has no box.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.features import rasterize
from rasterio.transform import Affine, array_bounds
from rasterio.warp import transform_geom

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff_reads import one_line

log = logging.getLogger(__name__)

POLYGONAL = {"Polygon", "MultiPolygon"}
GEOJSON_DEFAULT_CRS = "OGC:CRS84"  # RFC 7946: WGS 84 longitude, latitude


@dataclass(frozen=True)
class VectorLabels:
    """Labelled polygons of one scene, already in the scene's CRS.

    Attributes:
        path: the GeoJSON file.
        crs: the CRS the geometries are in (the scene's).
        geometries: GeoJSON-like geometry mappings, in file order.
        classes: class name of each geometry.
        bounds: (N, 4) float64 ``xmin, ymin, xmax, ymax`` of each geometry, to skip far-away ones quickly.
    """

    path: Path
    crs: str
    geometries: tuple[dict, ...]
    classes: tuple[str, ...]
    bounds: np.ndarray


def _load_features(path: Path) -> tuple[list[dict], str]:
    """The file's features and the CRS they are written in."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableImageError(f"{path}: not a readable GeoJSON file ({one_line(error)})") from error
    if not isinstance(document, dict):
        raise UnreadableImageError(f"{path}: GeoJSON must be an object, found a {type(document).__name__}")
    crs = ((document.get("crs") or {}).get("properties") or {}).get("name", GEOJSON_DEFAULT_CRS)
    if document.get("type") == "FeatureCollection":
        return list(document.get("features") or []), crs
    if document.get("type") == "Feature":
        return [document], crs
    raise UnreadableImageError(f"{path}: GeoJSON type {document.get('type')!r} is not a Feature(Collection)")


def _coordinate_bounds(geometry: dict) -> tuple[float, float, float, float]:
    points = np.array([xy[:2] for polygon in _polygons(geometry) for ring in polygon for xy in ring],
                      dtype=np.float64)
    return (*points.min(axis=0), *points.max(axis=0))


def _polygons(geometry: dict) -> list:
    coordinates = geometry["coordinates"]
    return [coordinates] if geometry["type"] == "Polygon" else list(coordinates)


def _checked(features: list[dict], path: Path, class_property: str) -> list[tuple[dict, str]]:
    """(geometry, class) of every feature that has a geometry; anything unusable rejects the file."""
    kept = []
    for number, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise UnreadableImageError(f"{path}: feature {number} is not a GeoJSON object")
        geometry = feature.get("geometry")
        if not geometry:
            continue
        if geometry.get("type") not in POLYGONAL:
            raise UnreadableImageError(f"{path}: feature {number} is a {geometry.get('type')}, "
                                       "only Polygon / MultiPolygon labels are supported")
        try:
            _coordinate_bounds(geometry)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise UnreadableImageError(f"{path}: feature {number} has malformed coordinates "
                                       f"({one_line(error)})") from error
        name = (feature.get("properties") or {}).get(class_property)
        if name is None or str(name) == "":
            raise UnreadableImageError(f"{path}: feature {number} has no {class_property!r} property")
        kept.append((geometry, str(name)))
    return kept


def read_vector_labels(path: Path, crs: str, class_property: str = "class") -> VectorLabels:
    """Read a GeoJSON label file and reproject its polygons into the scene's CRS (``SceneInfo.crs``).

    Raises:
        UnreadableImageError: unreadable JSON, an unknown CRS, a non-polygon feature or a feature without a
            class (names the file).
    """
    path = Path(path)
    features, source_crs = _load_features(path)
    kept = _checked(features, path, class_property)
    if not crs:
        raise UnreadableImageError(f"{path}: the scene has no CRS, so vector labels cannot be placed on it")
    try:
        source, target = CRS.from_user_input(source_crs), CRS.from_user_input(crs)
        geometries = [dict(transform_geom(source, target, g)) for g, _ in kept] if source != target \
            else [g for g, _ in kept]
    except (RasterioError, ValueError) as error:
        raise UnreadableImageError(f"{path}: cannot reproject labels from {source_crs} to the scene CRS "
                                   f"({one_line(error)})") from error
    bounds = np.array([_coordinate_bounds(g) for g in geometries], dtype=np.float64).reshape(-1, 4)
    log.debug("%s: %d labelled polygons reprojected %s → %s", path, len(geometries), source_crs, crs)
    return VectorLabels(path=path, crs=crs, geometries=tuple(geometries), classes=tuple(c for _, c in kept),
                        bounds=bounds)


def _on_chip(labels: VectorLabels, transform: Affine, chip_size: int) -> list[int]:
    """Indexes of the geometries whose bounding box overlaps the chip's footprint."""
    x0, y0, x1, y1 = array_bounds(chip_size, chip_size, transform)
    west, east, south, north = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)  # south-up grids too
    b = labels.bounds
    hits = (b[:, 0] < east) & (b[:, 2] > west) & (b[:, 1] < north) & (b[:, 3] > south)
    return [int(i) for i in np.flatnonzero(hits)]


def rasterize_labels(labels: VectorLabels, chip_transform: Sequence[float], chip_size: int,
                     class_ids: Mapping[str, int], fill: int = 0, all_touched: bool = False) -> np.ndarray:
    """Burn the polygons into a class mask on one chip's grid.

    Args:
        labels: from :func:`read_vector_labels` (in the scene's CRS).
        chip_transform: ``GeoChip.transform`` (a, b, c, d, e, f).
        chip_size: chip side in pixels.
        class_ids: class name → id in 0..254 (255 is left for "ignore").
        fill: id of pixels no polygon covers (background).
        all_touched: every pixel the outline touches, not only those whose centre is inside.

    Returns:
        (chip_size, chip_size) uint8 class ids; later features overwrite earlier ones where they overlap.

    Raises:
        UnreadableImageError: the file has a class missing from ``class_ids`` (on this chip or not, so the
            outcome does not depend on which chips are kept).
    """
    unknown = sorted(set(labels.classes) - set(class_ids))
    if unknown:
        raise UnreadableImageError(
            f"{labels.path}: classes {unknown} are not in the class list {sorted(class_ids)}")
    if any(not 0 <= value < 255 for value in class_ids.values()) or not 0 <= fill <= 255:
        raise ValueError(f"class ids must be in 0..254 and fill in 0..255: {dict(class_ids)}, fill={fill}")
    transform = Affine(*chip_transform[:6])
    shapes = [(labels.geometries[i], int(class_ids[labels.classes[i]]))
              for i in _on_chip(labels, transform, chip_size)]
    if not shapes:
        return np.full((chip_size, chip_size), fill, dtype=np.uint8)
    return rasterize(shapes, out_shape=(chip_size, chip_size), transform=transform, fill=fill,
                     all_touched=all_touched, dtype="uint8")


def label_boxes(labels: VectorLabels, chip_transform: Sequence[float], chip_size: int,
                all_touched: bool = False) -> tuple[np.ndarray, list[str]]:
    """Boxes of the polygons that cover pixels of one chip, clipped to the chip.

    Returns:
        ((N, 4) float32 ``xmin, ymin, xmax, ymax`` in chip pixel coordinates, xmax/ymax exclusive; the N
        class names), in file order.
    """
    transform = Affine(*chip_transform[:6])
    boxes, names = [], []
    for index in _on_chip(labels, transform, chip_size):
        footprint = rasterize([(labels.geometries[index], 1)], out_shape=(chip_size, chip_size),
                              transform=transform, fill=0, all_touched=all_touched, dtype="uint8")
        rows, cols = np.nonzero(footprint)
        if rows.size:
            boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
            names.append(labels.classes[index])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), names
