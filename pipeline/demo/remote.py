"""Deterministic multispectral demo scenes: real GeoTIFFs, land-cover masks and building boxes.

Five land-cover classes (``water``, ``forest``, ``cropland``, ``urban``, ``grassland``) are painted
as spatially correlated regions of ~1.5-3 chips, so most chips have a dominant class. Each class
has a texture of its own (canopy blobs, oriented crop rows, buildings with shadows along streets,
smooth meadows, rippled water), while its spectrum is blurred on purpose: every land region's mean
spectrum is mixed towards a common soil/grass spectrum with random per-band gains, its contrast is
redrawn from a range shared by all land classes, a smooth shading field is laid over it, and every
scene gets an illumination gain. Per-band statistics alone then separate the four land classes
poorly, so a model has to use texture, which is what pretraining is meant to learn. Water stays
spectrally distinct, as it is in reality.

Pixels are linear mixtures of endmember spectra (``ENDMEMBERS`` × ``SPECTRA``), so any subset of
the bands in :data:`SPECTRA` can be written. Everything is drawn from one seeded
``numpy.random.Generator`` and GDAL writes no timestamps, so one seed gives byte-identical files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.data.chips import MASK_IGNORE

log = logging.getLogger(__name__)

LAND_COVER = ("water", "forest", "cropland", "urban", "grassland")
CLASS_PROBABILITIES = (0.12, 0.22, 0.22, 0.22, 0.22)
REFLECTANCE_SCALE = 1e-4  # stored uint16 = reflectance × 10000
UTM_33N = 32633
ENDMEMBERS = ("water", "tree", "crop", "grass", "soil", "roof", "tile", "asphalt", "shadow")
SPECTRA = {  # surface reflectance of each endmember, Sentinel-2-like bands
    "coastal":  (0.070, 0.030, 0.040, 0.050, 0.080, 0.150, 0.070, 0.070, 0.020),
    "blue":     (0.060, 0.030, 0.040, 0.050, 0.090, 0.160, 0.080, 0.070, 0.020),
    "green":    (0.050, 0.060, 0.090, 0.080, 0.120, 0.170, 0.100, 0.080, 0.020),
    "red":      (0.030, 0.035, 0.050, 0.070, 0.160, 0.190, 0.200, 0.090, 0.020),
    "red_edge": (0.020, 0.150, 0.200, 0.170, 0.200, 0.200, 0.220, 0.100, 0.030),
    "nir":      (0.015, 0.300, 0.380, 0.280, 0.240, 0.220, 0.250, 0.120, 0.040),
    "swir1":    (0.010, 0.150, 0.220, 0.250, 0.300, 0.250, 0.300, 0.140, 0.030),
    "swir2":    (0.008, 0.070, 0.110, 0.140, 0.250, 0.220, 0.250, 0.130, 0.020),
}
ENDMEMBER_INDEX = {name: i for i, name in enumerate(ENDMEMBERS)}


@dataclass(frozen=True)
class RemoteDemoSpec:
    """Size and bands of the remote-sensing demo."""

    scenes: int = 6
    scene_size: int = 768  # pixels per side
    band_names: tuple[str, ...] = ("blue", "green", "red", "nir")
    pixel_size_m: float = 10.0
    chip_size: int = 64  # the grid land-cover regions are sized against


@dataclass(frozen=True)
class Building:
    """An axis-aligned building footprint in scene pixels (row, col of its top-left corner)."""

    row: int
    col: int
    height: int
    width: int


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-correlated noise of ``shape``; correlation length ``sigma_px`` pixels."""
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), max(sigma_px, 0.3))
    return field / (field.std() + 1e-6)


def _abundances(shape: tuple[int, int], **fractions) -> np.ndarray:
    """Stack named endmember fraction maps (or scalars) into (h, w, len(ENDMEMBERS)) float32."""
    out = np.zeros((*shape, len(ENDMEMBERS)), np.float32)
    for name, value in fractions.items():
        out[..., ENDMEMBER_INDEX[name]] = value
    return out


def _pure(name: str, fraction: float = 1.0) -> np.ndarray:
    """Fractions (len(ENDMEMBERS),) of a pixel covered by one endmember only (a roof, a street)."""
    return np.eye(len(ENDMEMBERS), dtype=np.float32)[ENDMEMBER_INDEX[name]] * fraction


def _water(rng, rows, cols, inside, chip) -> tuple[np.ndarray, list[Building]]:
    """Open water: nearly flat, with a faint directional ripple and a little suspended sediment."""
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 14)
    ripple = np.sin(2 * np.pi * (cols * np.cos(angle) + rows * np.sin(angle)) / period)
    sediment = np.clip(0.05 + 0.03 * _smooth_noise(rng, rows.shape, 12), 0, 1)
    brightness = 1.0 + 0.04 * ripple
    return _abundances(rows.shape, water=(1 - sediment) * brightness, soil=sediment), []


def _forest(rng, rows, cols, inside, chip) -> tuple[np.ndarray, list[Building]]:
    """Closed canopy: round crowns (blob texture) with shadowed gaps between them."""
    crowns = _smooth_noise(rng, rows.shape, rng.uniform(1.5, 2.8))
    cover = 1 / (1 + np.exp(-rng.uniform(1.5, 4) * (crowns + rng.uniform(-0.3, 0.5))))
    return _abundances(rows.shape, tree=cover, shadow=(1 - cover) * 0.7, grass=(1 - cover) * 0.3), []


def _cropland(rng, rows, cols, inside, chip) -> tuple[np.ndarray, list[Building]]:
    """Field parcels on a rotated grid, each with crop rows at its own orientation and growth stage."""
    grid_angle, parcel = rng.uniform(0, np.pi), rng.uniform(0.4, 0.9) * chip
    u = cols * np.cos(grid_angle) + rows * np.sin(grid_angle)
    v = -cols * np.sin(grid_angle) + rows * np.cos(grid_angle)
    parcel_v = parcel * rng.uniform(0.6, 1.4)
    pu, pv = np.floor(u / parcel).astype(np.int64), np.floor(v / parcel_v).astype(np.int64)
    ids = np.unique(pu * 100003 + pv, return_inverse=True)[1].reshape(rows.shape)
    count = int(ids.max()) + 1
    theta = grid_angle + rng.choice([0, np.pi / 2], count) + rng.normal(0, 0.1, count)
    period, stage = rng.uniform(3, 7, count), rng.uniform(0.25, 1.0, count)
    phase = cols * np.cos(theta[ids]) + rows * np.sin(theta[ids])
    crop_rows = 0.5 + 0.5 * np.sin(2 * np.pi * phase / period[ids])
    crop = stage[ids] * (0.35 + 0.65 * crop_rows)
    margin = ((np.abs(u - (pu + 0.5) * parcel) > 0.5 * parcel - 1.0)
              | (np.abs(v - (pv + 0.5) * parcel_v) > 0.5 * parcel_v - 1.0)).astype(np.float32)
    crop = crop * (1 - margin)
    return _abundances(rows.shape, crop=crop, soil=(1 - crop) * (1 - margin), grass=margin), []


def _grassland(rng, rows, cols, inside, chip) -> tuple[np.ndarray, list[Building]]:
    """Meadow: smooth low-frequency variation of grass cover, scattered with a few bare patches."""
    low = _smooth_noise(rng, rows.shape, rng.uniform(8, 16))
    grass = np.clip(0.8 + rng.uniform(0.05, 0.15) * low + 0.02 * _smooth_noise(rng, rows.shape, 1), 0, 1)
    return _abundances(rows.shape, grass=grass, soil=1 - grass), []


def _urban(rng, rows, cols, inside, chip) -> tuple[np.ndarray, list[Building]]:
    """Street grid with blocks of rectangular buildings (bright or tiled roofs) casting shadows."""
    h, w = rows.shape
    block, street = int(rng.integers(20, 34)), int(rng.integers(2, 5))
    offset = rng.integers(0, block, 2)
    green = np.clip(rng.uniform(0.1, 0.5) + 0.2 * _smooth_noise(rng, (h, w), 3), 0, 1)
    out = _abundances((h, w), grass=green * 0.6, tree=green * 0.4, soil=(1 - green) * 0.5,
                      asphalt=(1 - green) * 0.5)
    is_street = (((rows - offset[0]) % block) < street) | (((cols - offset[1]) % block) < street)
    out[is_street] = _pure("asphalt")
    sun = rng.integers(1, 4, 2) * rng.choice([-1, 1], 2)  # shadow offset in pixels
    buildings = []
    for top in range(int(offset[0]) - block + street, h, block):
        for left in range(int(offset[1]) - block + street, w, block):
            buildings += _block_buildings(rng, out, inside, top, left, block - street, sun)
    origin_row, origin_col = int(rows[0, 0]), int(cols[0, 0])
    return out, [Building(b.row + origin_row, b.col + origin_col, b.height, b.width) for b in buildings]


def _block_buildings(rng, out: np.ndarray, inside, top: int, left: int, size: int, sun) -> list[Building]:
    """Up to four buildings in one city block (window coordinates); paints shadow, then roof.

    A building is only placed where its footprint lies wholly inside the urban region, so every
    visible roof has a box.
    """
    h, w = out.shape[:2]
    placed = []
    for quarter_row, quarter_col in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if rng.random() < 0.3:
            continue
        bh, bw = (int(v) for v in rng.integers(4, max(5, size // 2 - 1), 2))
        r = top + 1 + quarter_row * (size // 2) + int(rng.integers(0, max(1, size // 2 - bh - 1)))
        c = left + 1 + quarter_col * (size // 2) + int(rng.integers(0, max(1, size // 2 - bw - 1)))
        if r < 0 or c < 0 or r + bh > h or c + bw > w or not inside[r:r + bh, c:c + bw].all():
            continue
        sr, sc = max(r + sun[0], 0), max(c + sun[1], 0)  # shadow: the footprint shifted away from the sun
        out[sr:max(r + bh + sun[0], 0), sc:max(c + bw + sun[1], 0)] = _pure("shadow")
        out[r:r + bh, c:c + bw] = _pure("roof" if rng.random() < 0.6 else "tile", rng.uniform(0.8, 1.1))
        placed.append(Building(r, c, bh, bw))
    return placed


# One renderer per class in LAND_COVER: (rng, rows, cols, inside, chip) -> (endmember fractions, buildings)
RENDERERS = {"water": _water, "forest": _forest, "cropland": _cropland, "urban": _urban,
             "grassland": _grassland}


def _partition(rng: np.random.Generator, size: int, chip: int) -> np.ndarray:
    """Region ids (size, size) int32: a warped Voronoi tessellation with cells of ~1.8-2.6 chips."""
    cell = rng.uniform(1.8, 2.6) * chip
    count = max(1, int(np.ceil(size / cell)))
    step = size / count
    grid = (np.arange(count) + 0.5) * step
    seeds = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    seeds += rng.uniform(-0.35, 0.35, seeds.shape) * step
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    rows += 0.25 * step * _smooth_noise(rng, (size, size), 0.3 * step)
    cols += 0.25 * step * _smooth_noise(rng, (size, size), 0.3 * step)
    best = np.full((size, size), np.inf, np.float32)
    regions = np.zeros((size, size), np.int32)
    for k, (r, c) in enumerate(seeds):
        distance = (rows - r) ** 2 + (cols - c) ** 2
        closer = distance < best
        best[closer], regions[closer] = distance[closer], k
    return regions


def _valid_footprint(rng: np.random.Generator, size: int) -> np.ndarray:
    """Valid-data mask (size, size) bool: one or two slanted swath edges cut a nodata border."""
    rows, cols = np.mgrid[0:size, 0:size]
    valid = np.ones((size, size), bool)
    for side in rng.choice(4, int(rng.integers(1, 3)), replace=False):
        across = (cols, size - 1 - cols, rows, size - 1 - rows)[side]
        along = (rows, rows, cols, cols)[side]
        depth, slope = rng.uniform(0.03, 0.2) * size, rng.uniform(-0.25, 0.25)
        valid &= across >= depth + slope * (along - size / 2)
    return valid


def _blur_spectrum(rng, reflectance: np.ndarray, inside: np.ndarray, common: np.ndarray) -> np.ndarray:
    """Move a land region's mean spectrum towards ``common``, redraw its contrast, add smooth shading.

    Without this, a chip's per-band mean, std and percentiles name its class (forests are dark,
    grassland is flat, roofs skew the histogram); after it, those statistics overlap between the
    land classes and only the spatial pattern (rows, crowns, roofs) tells them apart. The shading
    (topography, soil moisture) is a low-frequency field that every land class shares.
    Shapes: reflectance (h, w, B), inside (h, w), common (B,).
    """
    pixels = reflectance[inside]
    mean, spread = pixels.mean(0), pixels.std(0) + 1e-6
    mix = rng.uniform(0.5, 0.9)
    new_mean = ((1 - mix) * mean + mix * common) * rng.uniform(0.9, 1.1, mean.shape)
    new_spread = new_mean * rng.uniform(0.04, 0.16) * rng.uniform(0.85, 1.15, mean.shape)
    shading = 1.0 + rng.uniform(0.03, 0.15) * _smooth_noise(rng, inside.shape, rng.uniform(8, 20))
    return (new_mean + (reflectance - mean) * (new_spread / spread)) * shading[..., None]


def render_scene(rng: np.random.Generator, spec: RemoteDemoSpec) -> tuple[np.ndarray, np.ndarray, list]:
    """Reflectance (B, S, S) float32, land-cover classes (S, S) uint8 and building footprints."""
    size = spec.scene_size
    regions = _partition(rng, size, spec.chip_size)
    classes = rng.choice(len(LAND_COVER), int(regions.max()) + 1, p=CLASS_PROBABILITIES)
    spectra = np.array([SPECTRA[name] for name in spec.band_names], np.float32).T  # (E, B)
    common = 0.5 * spectra[ENDMEMBER_INDEX["soil"]] + 0.5 * spectra[ENDMEMBER_INDEX["grass"]]
    reflectance = np.zeros((size, size, spectra.shape[1]), np.float32)
    buildings: list[Building] = []
    for region, cover in enumerate(classes):
        inside_scene = (regions == region).astype(np.uint8)
        left, top, width, height = cv2.boundingRect(inside_scene)
        if width == 0:
            continue
        window = (slice(top, top + height), slice(left, left + width))
        rows, cols = np.mgrid[window].astype(np.float32)
        inside = inside_scene[window].astype(bool)
        fractions, found = RENDERERS[LAND_COVER[cover]](rng, rows, cols, inside, spec.chip_size)
        local = fractions @ spectra
        if LAND_COVER[cover] == "water":
            local = local * rng.uniform(0.9, 1.1)
        else:
            local = _blur_spectrum(rng, local, inside, common)
        reflectance[window][inside] = local[inside]
        buildings += found
    reflectance = reflectance * rng.uniform(0.85, 1.15)  # per-scene illumination
    reflectance = cv2.GaussianBlur(reflectance, (0, 0), 0.6).reshape(size, size, -1)
    reflectance += rng.normal(0, 0.003, reflectance.shape).astype(np.float32)
    return np.moveaxis(reflectance, -1, 0), classes[regions].astype(np.uint8), buildings


def _profile(spec: RemoteDemoSpec, origin: tuple[float, float], count: int, dtype: str, nodata: int) -> dict:
    """GTiff creation options shared by a scene and its mask: same CRS, grid and tiling."""
    return {"driver": "GTiff", "width": spec.scene_size, "height": spec.scene_size, "count": count,
            "dtype": dtype, "crs": CRS.from_epsg(UTM_33N), "nodata": nodata,
            "transform": Affine(spec.pixel_size_m, 0, origin[0], 0, -spec.pixel_size_m, origin[1]),  # N-up
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


def _write_scene(path: Path, reflectance: np.ndarray, valid: np.ndarray, spec: RemoteDemoSpec,
                 origin: tuple[float, float]) -> None:
    """uint16 reflectance × 10000 with scale/offset tags, band descriptions and nodata = 0."""
    stored = np.clip(np.rint(reflectance / REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)
    stored[:, ~valid] = 0
    count = len(spec.band_names)
    with rasterio.open(path, "w", **_profile(spec, origin, count, "uint16", 0)) as dst:
        dst.write(stored)
        dst.scales = [REFLECTANCE_SCALE] * count
        dst.offsets = [0.0] * count
        dst.descriptions = tuple(spec.band_names)


def _write_mask(path: Path, classes: np.ndarray, valid: np.ndarray, spec: RemoteDemoSpec,
                origin: tuple[float, float]) -> None:
    """uint8 land-cover indexes on the scene's grid; 255 where the scene is nodata."""
    mask = np.where(valid, classes, MASK_IGNORE).astype(np.uint8)
    with rasterio.open(path, "w", **_profile(spec, origin, 1, "uint8", MASK_IGNORE)) as dst:
        dst.write(mask, 1)
        dst.descriptions = ("land_cover",)


def _building_boxes(buildings: list[Building], valid: np.ndarray, image_id: int, first_id: int) -> list[dict]:
    """COCO boxes of the valid part of each footprint; footprints less than half valid are dropped."""
    boxes = []
    for b in buildings:
        footprint = valid[b.row:b.row + b.height, b.col:b.col + b.width]
        rows, cols = np.nonzero(footprint)
        if rows.size < 0.5 * b.height * b.width:
            continue
        x, y = b.col + int(cols.min()), b.row + int(rows.min())
        w, h = int(cols.max() - cols.min()) + 1, int(rows.max() - rows.min()) + 1
        boxes.append({"id": first_id + len(boxes), "image_id": image_id, "category_id": 1,
                      "bbox": [x, y, w, h], "area": int(rows.size), "iscrowd": 0})
    return boxes


def _check_bands(band_names: tuple[str, ...]) -> None:
    unknown = [name for name in band_names if name not in SPECTRA]
    if unknown:
        raise ValueError(f"demo bands {unknown} have no endmember spectra; known: {sorted(SPECTRA)}")


def write_remote_demo(out_dir: Path, spec: RemoteDemoSpec, seed: int) -> None:
    """Write the GeoTIFF demo into ``out_dir``: scenes/, masks/, classes.json, boxes.json.

    ``scenes/scene_<k>.tif`` are uint16 reflectance × 10000 in UTM 33N (EPSG:32633), each at its own
    origin, nodata = 0 along slanted swath edges, 256 × 256 tiles, deflate. ``masks/scene_<k>.tif``
    holds the land-cover index (order of :data:`LAND_COVER`, 255 = nodata) on the same grid; chip
    labels are the dominant mask class, so no labels.csv is written. ``boxes.json`` has COCO boxes
    of building footprints in scene pixels.
    """
    _check_bands(spec.band_names)
    rng = np.random.default_rng(seed)
    (out_dir / "scenes").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(spec.scenes):
        reflectance, classes, buildings = render_scene(rng, spec)
        valid = _valid_footprint(rng, spec.scene_size)
        easting, northing = rng.uniform(300_000, 700_000), rng.uniform(4.6e6, 5.4e6)  # inside UTM zone 33N
        origin = (spec.pixel_size_m * round(easting / spec.pixel_size_m),
                  spec.pixel_size_m * round(northing / spec.pixel_size_m))
        name = f"scene_{k + 1:02d}.tif"
        _write_scene(out_dir / "scenes" / name, reflectance, valid, spec, origin)
        _write_mask(out_dir / "masks" / name, classes, valid, spec, origin)
        images.append({"id": k + 1, "file_name": f"scenes/{name}", "width": spec.scene_size,
                       "height": spec.scene_size})
        annotations += _building_boxes(buildings, valid, k + 1, len(annotations) + 1)
    names = list(LAND_COVER)
    classes_json = {"image_classes": names, "mask_classes": {str(i): n for i, n in enumerate(names)},
                    "band_names": list(spec.band_names), "mask_nodata": MASK_IGNORE}
    (out_dir / "classes.json").write_text(json.dumps(classes_json, indent=2) + "\n")
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "building", "supercategory": "urban"}]}
    (out_dir / "boxes.json").write_text(json.dumps(coco) + "\n")
    log.info("remote demo: %d scenes of %d px, %d buildings written to %s", spec.scenes, spec.scene_size,
             len(annotations), out_dir)
