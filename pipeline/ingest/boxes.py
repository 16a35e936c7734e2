"""Object boxes: a source folder's COCO ground truth → boxes per chip, in chip pixels (cached by
:func:`pipeline.data.chips.write_chipset`).

Source layout: ``boxes.json`` (COCO detection format) in the source folder root. ``images[].file_name`` is
the image's path relative to the source folder, ``annotations[].bbox`` is ``[x, y, w, h]`` in that image's
pixels. A file listed in ``images`` is annotated — a chip of it without boxes is a true negative; a file not
listed is unannotated and its chips stay out of detection (``None`` in the cache).

How a box reaches a chip follows the manifest row, never the domain name: a chip that is a window of its
source (``row`` / ``col`` set, GeoTIFF grids) shifts the boxes by the window offset; a chip that is the
whole source resized to ``chip_size`` (plain images) scales them by ``chip_size`` / the COCO image ``width``
and ``height``; a chip that is the whole source with its aspect kept (DICOM, row ``fit: letterbox``) scales
them as the image was and shifts them by its padding. Boxes are then clipped to the chip, and a box keeping less than
:data:`MIN_VISIBLE` of its area is dropped: a sliver of a building at the chip edge is not an object to find.
Multi-frame files carry boxes on their first frame only, as their masks do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COCO_FILE = "boxes.json"  # in the source folder root
MIN_VISIBLE = 0.5  # fraction of a box's area that must lie inside the chip for it to be kept


@dataclass(frozen=True)
class CocoBoxes:
    """The COCO file of one source folder, indexed by relative path."""

    classes: list[str]  # category names in the file's category order; class_index = position here
    boxes: dict[str, np.ndarray]  # file_name → (K, 5) float32 x0, y0, x1, y1 (source pixels), class_index
    sizes: dict[str, tuple[int, int]]  # file_name → (width, height) of the source image in pixels


def read_coco(path: Path) -> CocoBoxes | None:
    """Parse a COCO detection file; ``None`` when the source folder has none."""
    if not path.exists():
        return None
    coco = json.loads(path.read_text())
    categories = list(coco.get("categories", []))
    index = {category["id"]: i for i, category in enumerate(categories)}
    by_id = {image["id"]: image for image in coco["images"]}
    boxes: dict[str, list[list[float]]] = {image["file_name"]: [] for image in coco["images"]}
    for annotation in coco.get("annotations", []):
        x, y, w, h = (float(v) for v in annotation["bbox"])
        boxes[by_id[annotation["image_id"]]["file_name"]].append([x, y, x + w, y + h, index[annotation["category_id"]]])
    return CocoBoxes(classes=[category["name"] for category in categories],
                     boxes={name: np.asarray(found, np.float32).reshape(-1, 5) for name, found in boxes.items()},
                     sizes={image["file_name"]: (int(image["width"]), int(image["height"])) for image in coco["images"]})


def chip_boxes(boxes: np.ndarray, row: dict, source_size: tuple[int, int], chip_size: int) -> np.ndarray:
    """Source-pixel boxes (K, 5) → the boxes of one chip (M, 5) in chip pixels, clipped, slivers dropped."""
    out = boxes.astype(np.float32).copy()
    if str(row.get("row", "")) != "":  # a window of the source: shift by its top-left corner
        out[:, [0, 2]] -= float(row["col"])
        out[:, [1, 3]] -= float(row["row"])
    elif row.get("fit") == "letterbox":  # the whole source, aspect kept and centred (DICOM: letterbox_chip)
        width, height = source_size
        scale = chip_size / max(width, height)
        inner_w, inner_h = max(1, round(width * scale)), max(1, round(height * scale))
        out[:, [0, 2]] = out[:, [0, 2]] * inner_w / width + (chip_size - inner_w) // 2
        out[:, [1, 3]] = out[:, [1, 3]] * inner_h / height + (chip_size - inner_h) // 2
    else:  # the whole source resized to chip_size × chip_size
        out[:, [0, 2]] *= chip_size / source_size[0]
        out[:, [1, 3]] *= chip_size / source_size[1]
    area = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    out[:, :4] = np.clip(out[:, :4], 0, chip_size)
    kept = (out[:, 2] - out[:, 0]) * (out[:, 3] - out[:, 1])
    return out[(kept > 0) & (kept >= MIN_VISIBLE * area)]


def boxes_for_chips(rows: list[dict], source: Path, chip_size: int) -> tuple[list, list[str]] | None:
    """Per chip in ``rows`` (manifest order) its boxes in chip pixels (``[[x0, y0, x1, y1, class_index], …]``, or
    ``None`` for an unannotated chip) and the box class names, from the source's COCO ``boxes.json``; ``None``
    when the source has none."""
    coco = read_coco(source / COCO_FILE)
    if coco is None:
        return None
    per_chip = []
    for row in rows:
        name = str(row["source"])
        if name not in coco.boxes or str(row.get("frame", "")) not in ("", "0"):
            per_chip.append(None)
            continue
        found = chip_boxes(coco.boxes[name], row, coco.sizes[name], chip_size)
        per_chip.append([[round(float(v), 2) for v in box[:4]] + [int(box[4])] for box in found])
    return per_chip, coco.classes
