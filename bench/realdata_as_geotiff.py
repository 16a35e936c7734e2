"""Write a real labelled aerial PNG set (UC Merced) as georeferenced GeoTIFF tiles, outside the repository.

UC Merced's tiles are 256 px, 1 ft (0.3048 m) USGS orthophotos whose coordinates the public set does not keep.
An archive delivers such tiles as GeoTIFF; this writes each PNG as a 3-band uint8 GeoTIFF (band descriptions
red / green / blue) placed on a synthetic UTM grid, one tile per 1 km cell in file order, so that every tile
has a CRS and transform like a real export, plus ``labels.csv`` (path, label, split) and ``classes.json``.
The pixels are the PNG's, unchanged (tested: rasterio reads back the PNG's values).

Usage::

    python bench/realdata_as_geotiff.py /path/to/labelled/ucmerced /tmp/ucmerced_tif [--limit 2]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import cv2
import rasterio
from affine import Affine

UTM_CRS = "EPSG:32610"  # UTM zone 10N (the set's cities lie in several zones; one grid is enough here)
PIXEL_M = 0.3048
CELL_M = 1000.0  # tiles 1 km apart: no two tiles overlap or touch


def write_tile(png: Path, target: Path, index: int) -> None:
    """One RGB PNG as a 3-band GeoTIFF in its own 1 km cell of the synthetic grid."""
    bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"error: {png}: not a readable image")
    rgb = bgr[..., ::-1].transpose(2, 0, 1)
    origin_x, origin_y = 500_000.0 + (index % 100) * CELL_M, 4_200_000.0 - (index // 100) * CELL_M
    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(target, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
                       dtype="uint8", crs=UTM_CRS, transform=Affine(PIXEL_M, 0, origin_x, 0, -PIXEL_M, origin_y),
                       photometric="RGB", compress="deflate") as dst:
        dst.write(rgb)
        for band, name in enumerate(("red", "green", "blue"), start=1):
            dst.set_band_description(band, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the UC Merced development set folder (<split>/<class>/*.png and split.csv)")
    parser.add_argument("out", type=Path, help="where the GeoTIFF folder is written (outside the repository)")
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split and class")
    args = parser.parse_args()
    rows, seen = [], {}
    for row in csv.DictReader(open(args.source / "split.csv", newline="")):
        key = (row["split"], row["class"])
        seen[key] = seen.get(key, 0) + 1
        if row.get("status", "kept") == "kept" and (args.limit is None or seen[key] <= args.limit):
            rows.append(row)
    out_rows = []
    for index, row in enumerate(rows):
        target = Path(row["image"]).with_suffix(".tif")
        write_tile(args.source / row["image"], args.out / target, index)
        out_rows.append({"path": target.as_posix(), "label": row["class"], "split": row["split"]})
    with open(args.out / "labels.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["path", "label", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(out_rows)
    classes = sorted({row["label"] for row in out_rows})
    (args.out / "classes.json").write_text(json.dumps({"image_classes": classes}, indent=2) + "\n")
    print(f"{len(out_rows)} tiles of {len(classes)} classes written as GeoTIFF to {args.out}")


if __name__ == "__main__":
    main()
