"""GeoJSON labels in EPSG:4326 on a UTM raster → class masks and boxes, against pixel ranges known by design.

Every label polygon is a rectangle whose edges lie on pixel edges of the UTM grid, written to the GeoJSON in
lon/lat (corners converted with rasterio.warp.transform); the expected mask is then a numpy slice per polygon.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform as transform_points

from pipeline.io import UnreadableImageError
from pipeline.io.geotiff import iter_chips, read_scene_info
from pipeline.io.geotiff_labels import label_boxes, rasterize_labels, read_vector_labels

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

CRS = "EPSG:32633"
GRID = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_600_000.0)  # 10 m, north-up
SIZE, CHIP = 64, 32
CLASS_IDS = {"background": 0, "field": 1, "forest": 2, "water": 3}
# (class, (row0, row1, col0, col1) exterior in scene pixels, optional hole) — later ones overwrite earlier ones
RECTANGLES = [
    ("field", (4, 40, 2, 20), (10, 14, 5, 9)),  # straddles the chip row boundary, with a hole
    ("forest", (30, 50, 28, 60), None),  # straddles all four chips
    ("water", (34, 38, 40, 44), None),  # on top of the forest
]


def ring(rows: tuple[int, int], cols: tuple[int, int], crs: str = "EPSG:4326") -> list[list[float]]:
    """Closed ring of a pixel-aligned rectangle, in ``crs`` coordinates."""
    (r0, r1), (c0, c1) = rows, cols
    corners = [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]
    xs, ys = zip(*[GRID @ corner for corner in corners], strict=True)
    if crs != CRS:
        xs, ys = transform_points(CRS, crs, xs, ys)
    return [[x, y] for x, y in zip(xs, ys, strict=True)]


def feature(name: str, box: tuple[int, int, int, int], hole=None, crs: str = "EPSG:4326") -> dict:
    rings = [ring(box[:2], box[2:], crs)] + ([ring(hole[:2], hole[2:], crs)[::-1]] if hole else [])
    geometry = {"type": "Polygon", "coordinates": rings}
    return {"type": "Feature", "properties": {"class": name}, "geometry": geometry}


def write_geojson(path: Path, features: list[dict], crs_name: str | None = None) -> Path:
    document = {"type": "FeatureCollection", "features": features}
    if crs_name:
        document["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def scene(tmp_path) -> Path:
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint16", crs=CRS,
                       transform=GRID) as dst:
        dst.write(np.ones((1, SIZE, SIZE), np.uint16))
    return path


def expected_scene_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for name, (r0, r1, c0, c1), hole in RECTANGLES:
        inside = np.zeros_like(mask, dtype=bool)
        inside[r0:r1, c0:c1] = True
        if hole:
            inside[hole[0]:hole[1], hole[2]:hole[3]] = False
        mask[inside] = CLASS_IDS[name]
    return mask


def expected_boxes(row: int, col: int) -> tuple[list[tuple[int, ...]], list[str]]:
    boxes, names = [], []
    for name, (r0, r1, c0, c1), _ in RECTANGLES:
        top, bottom = max(r0, row) - row, min(r1, row + CHIP) - row
        left, right = max(c0, col) - col, min(c1, col + CHIP) - col
        if top < bottom and left < right:
            boxes.append((left, top, right, bottom))
            names.append(name)
    return boxes, names


def test_wgs84_polygons_become_masks_and_boxes_on_utm_chips(scene, tmp_path):
    features = [feature(name, box, hole) for name, box, hole in RECTANGLES]
    features.append({"type": "Feature", "properties": {"class": "field"}, "geometry": None})  # skipped
    info = read_scene_info(scene)
    labels = read_vector_labels(write_geojson(tmp_path / "labels.geojson", features), info.crs)
    assert labels.classes == ("field", "forest", "water")
    expected = expected_scene_mask()
    chips = list(iter_chips(scene, CHIP))
    assert len(chips) == 4
    for chip in chips:
        mask = rasterize_labels(labels, chip.transform, CHIP, CLASS_IDS)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, expected[chip.row:chip.row + CHIP, chip.col:chip.col + CHIP])
        boxes, names = label_boxes(labels, chip.transform, CHIP)
        want_boxes, want_names = expected_boxes(chip.row, chip.col)
        assert names == want_names
        np.testing.assert_array_equal(boxes, np.array(want_boxes, np.float32).reshape(-1, 4))


def test_legacy_crs_member_in_scene_crs_is_used_without_reprojection(scene, tmp_path):
    path = write_geojson(tmp_path / "utm.geojson", [feature("water", (0, 8, 0, 8), crs=CRS)],
                         crs_name="urn:ogc:def:crs:EPSG::32633")
    labels = read_vector_labels(path, read_scene_info(scene).crs)
    chip = next(iter_chips(scene, CHIP))
    mask = rasterize_labels(labels, chip.transform, CHIP, CLASS_IDS, fill=7)
    assert (mask[:8, :8] == 3).all() and (mask[8:] == 7).all() and (mask[:, 8:] == 7).all()


def test_small_polygon_has_a_box_only_with_all_touched(scene, tmp_path):
    x, y = GRID @ (3.1, 3.1)  # 0.3 px square inside pixel (3, 3), not covering its centre
    square = [[x, y], [x + 3, y], [x + 3, y - 3], [x, y - 3], [x, y]]
    lon, lat = transform_points(CRS, "EPSG:4326", [p[0] for p in square], [p[1] for p in square])
    geometry = {"type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat, strict=True)]]}
    path = write_geojson(tmp_path / "small.geojson", [{"type": "Feature", "properties": {"class": "water"},
                                                        "geometry": geometry}])
    labels = read_vector_labels(path, CRS)
    chip = next(iter_chips(scene, CHIP))
    assert label_boxes(labels, chip.transform, CHIP)[0].shape == (0, 4)
    boxes, names = label_boxes(labels, chip.transform, CHIP, all_touched=True)
    np.testing.assert_array_equal(boxes, [[3, 3, 4, 4]])
    assert rasterize_labels(labels, chip.transform, CHIP, CLASS_IDS, all_touched=True)[3, 3] == 3


def test_multipolygon_gives_one_box_over_its_parts(scene, tmp_path):
    parts = [[ring((1, 3), (1, 3))], [ring((6, 9), (10, 12))]]
    geometry = {"type": "MultiPolygon", "coordinates": parts}
    path = write_geojson(tmp_path / "multi.geojson",
                         [{"type": "Feature", "properties": {"class": "forest"}, "geometry": geometry}])
    chip = next(iter_chips(scene, CHIP))
    boxes, names = label_boxes(read_vector_labels(path, CRS), chip.transform, CHIP)
    np.testing.assert_array_equal(boxes, [[1, 1, 12, 9]])
    assert names == ["forest"]


def collection(properties: dict, geometry: dict) -> str:
    return json.dumps({"type": "FeatureCollection",
                       "features": [{"type": "Feature", "properties": properties, "geometry": geometry}]})


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "not a readable GeoJSON"),
    (collection({"class": "x"}, {"type": "Point", "coordinates": [15, 41]}), "feature 0 is a Point"),
    (collection({}, {"type": "Polygon", "coordinates": [ring((0, 2), (0, 2))]}), "feature 0 has no 'class'"),
    (json.dumps({"type": "GeometryCollection", "geometries": []}), "is not a Feature"),
    (json.dumps([1, 2]), "must be an object"),
    (collection({"class": "x"}, {"type": "Polygon", "coordinates": [[]]}), "feature 0 has malformed coordinates"),
])
def test_bad_label_files_are_rejected_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(UnreadableImageError, match=rf"^{tmp_path}/bad.geojson: .*{reason}") as caught:
        read_vector_labels(path, CRS)
    assert "\n" not in str(caught.value)


def test_unknown_class_is_rejected_even_off_the_chip(scene, tmp_path):
    path = write_geojson(tmp_path / "labels.geojson", [feature("clouds", (40, 44, 40, 44))])
    labels = read_vector_labels(path, CRS)
    chip = next(iter_chips(scene, CHIP))  # (0, 0): the cloud polygon is not on it
    with pytest.raises(UnreadableImageError, match=r"labels.geojson: classes \['clouds'\] are not in"):
        rasterize_labels(labels, chip.transform, CHIP, CLASS_IDS)
