"""Where the image is in an ultrasound, endoscopy or photo frame: the scan region, not the text and bars around it.

An ultrasound frame is a screen capture: the scan sector, and around it burned-in text (patient, probe, depth),
calipers, colour bars and a black background. Only the sector is anatomy. Two sources, best first:

* **Sequence of Ultrasound Regions** (PS3.3 C.8.5.5): rectangles in pixel coordinates
  (``RegionLocationMinX0 … MaxY1``, inclusive). Regions whose RegionSpatialFormat is 1 (2D: tissue or flow) are
  the image; if there are none, every region is. Text outside the regions is excluded with them.
* Otherwise, the **constant border**: the background is the colour that most of the frame's border has; every
  background pixel connected to the border is outside. The image is the convex hull of the largest remaining
  component (a sector, a round endoscope field and a photo are all convex), so text and calipers on the
  background are outside, and dark fluid inside a sector that happens to touch its edge is not.

A frame whose border has no dominant colour (a photograph filling the frame) is all valid.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydicom.dataset import Dataset

TWO_D_REGION = 1  # RegionSpatialFormat: 2D (tissue or flow)
BORDER_DOMINANCE = 0.5  # the background colour must cover at least this fraction of the border
BACKGROUND_TOLERANCE = 0.01  # of the sample range: lossy compression leaves ±1–2 levels of noise on black


def ultrasound_regions(ds: Dataset, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) bool: inside the 2D regions of the Sequence of Ultrasound Regions; None when it is absent or
    names no usable rectangle."""
    items = list(ds.get("SequenceOfUltrasoundRegions") or [])
    rectangles = [_rectangle(item) for item in items]
    usable = [(rect, item) for rect, item in zip(rectangles, items) if rect is not None]
    two_d = [rect for rect, item in usable if _int(item, "RegionSpatialFormat") == TWO_D_REGION]
    chosen = two_d or [rect for rect, _ in usable]
    if not chosen:
        return None
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in chosen:
        mask[max(y0, 0):min(y1, shape[0] - 1) + 1, max(x0, 0):min(x1, shape[1] - 1) + 1] = True
    return mask if mask.any() else None


def _rectangle(item: Dataset) -> tuple[int, int, int, int] | None:
    corners = [_int(item, k) for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
                                        "RegionLocationMaxY1")]
    if None in corners or corners[2] < corners[0] or corners[3] < corners[1]:
        return None
    return tuple(corners)  # type: ignore[return-value]


def _int(item: Dataset, keyword: str) -> int | None:
    try:
        return int(item.get(keyword))
    except (TypeError, ValueError):
        return None


def constant_border_region(image: np.ndarray, sample_max: float) -> np.ndarray | None:
    """(H, W) bool: the image inside a constant-colour border (see the module docstring); None when the border
    has no dominant colour (within the tolerance of its median colour), i.e. the frame is all image.

    Args:
        image: (H, W) or (H, W, C) samples.
        sample_max: the largest possible sample value, which scales :data:`BACKGROUND_TOLERANCE`.
    """
    pixels = image.reshape(*image.shape[:2], -1).astype(np.float32, copy=False)
    height, width = pixels.shape[:2]
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    tolerance = BACKGROUND_TOLERANCE * max(float(sample_max), 1.0)
    background_colour = np.median(border, axis=0)  # robust to text and bars that reach the edge
    if (np.abs(border - background_colour) <= tolerance).all(axis=-1).mean() < BORDER_DOMINANCE:
        return None
    background = (np.abs(pixels - background_colour) <= tolerance).all(axis=-1).astype(np.uint8)
    outside = _touching_border(background)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~outside).astype(np.uint8), connectivity=8)
    if count < 2:  # nothing but background
        return np.zeros((height, width), dtype=bool)
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    hull = np.zeros((height, width), dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(bool)


def _touching_border(background: np.ndarray) -> np.ndarray:
    """Background components (4-connected) that touch the frame's edge."""
    _, labels = cv2.connectedComponents(background, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    return np.isin(labels, edge)
