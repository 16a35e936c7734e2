"""RTSTRUCT contours → boolean masks on the pixel grid of the images they were drawn on.

An RT Structure Set stores each ROI as planar polygons in patient coordinates (mm), and each contour names
the image it lies on (Contour Image Sequence). Placing it needs that image's plane (:class:`ImagePlane`):
ImagePositionPatient (centre of the first transmitted pixel), ImageOrientationPatient (direction cosines of a
row, i.e. of increasing column index, then of a column) and PixelSpacing (between rows, between columns). A
point P satisfies ``P − position = col · Δcol · row_cosine + row · Δrow · column_cosine (+ off-plane part)``;
(col, row) is solved by least squares against the two scaled cosines, exact for the orthonormal cosines the
standard requires and still the nearest in-plane point when a writer rounded them.

Policies:

* **Filling**: ``cv2.fillPoly`` at sub-pixel precision (8 fractional bits), pixel centres at integer
  (col, row). Several contours of one ROI on one image are combined by XOR (even-odd rule): a contour inside
  another is a hole, a disjoint one an island. That is how planning systems export holes (the standard has
  no hole flag) and what pydicom-based tools such as rt-utils and plastimatch do. fillPoly also fills the
  pixels its outline touches, so a mask may be up to one pixel larger at its edges (a hole one pixel larger).
* **Contour types**: only CLOSED_PLANAR contours enclose a region; POINT (markers, isocentres), OPEN_PLANAR
  and OPEN_NONPLANAR ones are ignored.
* **Placement**: by the referenced SOP Instance UID (+ frame number) only. A contour naming no image is not
  placed (counted in ``unplaced``); it is not guessed from its slice position. A contour farther from its
  image's plane than half the slice thickness (1 mm without SliceThickness) is an error: the structure set
  and the image disagree, and a mask drawn from it would be on the wrong slice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import one_line, read_dataset
from pipeline.io.dicom_pixels import functional_group
from pipeline.io.dicom_seg import DecodedSegmentation, ImageKey, SegmentLayer, segmentation_reference

PLANE_TOLERANCE_MM = 1.0  # off-plane tolerance for an image without SliceThickness
SUBPIXEL_BITS = 8  # fillPoly's ``shift``: vertices keep 1/256 pixel precision
_MAX_PIXEL = 1e5  # far-off vertices are clipped so that the fixed-point coordinates fit in int32
_PLANE_MACROS = (("PlanePositionSequence", "ImagePositionPatient"),  # (functional group macro, keyword)
                     ("PlaneOrientationSequence", "ImageOrientationPatient"),
                     ("PixelMeasuresSequence", "PixelSpacing"), ("PixelMeasuresSequence", "SliceThickness"))


@dataclass(frozen=True)
class ImagePlane:
    """Where one image's pixels lie in patient coordinates.

    Attributes:
        position: ImagePositionPatient, mm: the centre of pixel (row 0, column 0).
        row_cosine: direction of increasing column index (first half of ImageOrientationPatient).
        column_cosine: direction of increasing row index (second half).
        spacing_mm: PixelSpacing (distance between rows, distance between columns), mm.
        shape: (Rows, Columns).
        thickness_mm: SliceThickness, None when absent.
    """

    position: tuple[float, float, float]
    row_cosine: tuple[float, float, float]
    column_cosine: tuple[float, float, float]
    spacing_mm: tuple[float, float]
    shape: tuple[int, int]
    thickness_mm: float | None = None


def image_plane(ds: Dataset, frame_index: int = 0) -> ImagePlane | None:
    """The plane of one frame: Plane Position / Orientation and Pixel Measures functional groups (enhanced
    objects), else the top-level attributes; None when any of them is missing or malformed."""
    values = {keyword: _frame_attribute(ds, frame_index, group, keyword) for group, keyword in _PLANE_MACROS}
    try:
        position, orientation, spacing = (tuple(float(v) for v in values[keyword]) for keyword in (
            "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"))
        shape = (int(ds.Rows), int(ds.Columns))
        thickness = float(values["SliceThickness"]) if values["SliceThickness"] else None
    except (AttributeError, TypeError, ValueError):  # absent (None) or not numbers
        return None
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2 or min(spacing) <= 0:
        return None
    return ImagePlane(position, orientation[:3], orientation[3:], spacing, shape, thickness)


def _frame_attribute(ds: Dataset, frame_index: int, macro: str, keyword: str) -> object:
    item = functional_group(ds, frame_index, macro)
    value = item.get(keyword) if item is not None else None
    return ds.get(keyword) if value is None else value


def patient_to_pixel(points: np.ndarray, plane: ImagePlane) -> tuple[np.ndarray, np.ndarray]:
    """Patient coordinates → pixel coordinates of ``plane``.

    Args:
        points: (N, 3) x, y, z in mm.
        plane: the image the points are drawn on.

    Returns:
        (N, 2) float (column, row) with pixel centres at integers, and (N,) distance of each point from the
        image plane in mm.
    """
    steps = np.stack([np.asarray(plane.row_cosine) * plane.spacing_mm[1],  # one column to the right
                      np.asarray(plane.column_cosine) * plane.spacing_mm[0]], axis=1)  # one row down; (3, 2)
    offsets = np.asarray(points, dtype=np.float64).reshape(-1, 3) - np.asarray(plane.position)
    pixels, *_ = np.linalg.lstsq(steps, offsets.T, rcond=None)  # (2, N)
    off_plane = np.linalg.norm(offsets - (steps @ pixels).T, axis=1)
    return pixels.T, off_plane


def fill_contours(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of closed polygons: (H, W) bool, the XOR of each polygon filled on its own.

    Args:
        polygons: each (N, 2) float (column, row) vertices, N ≥ 3.
        shape: (H, W) of the image.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    for polygon in polygons:
        filled = np.zeros(shape, dtype=np.uint8)
        fixed = np.round(np.clip(polygon, -_MAX_PIXEL, _MAX_PIXEL) * (1 << SUBPIXEL_BITS)).astype(np.int32)
        cv2.fillPoly(filled, [fixed.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_BITS)
        mask ^= filled
    return mask.astype(bool)


def read_rtstruct_layers(path: Path, planes: Mapping[ImageKey, ImagePlane | None]) -> DecodedSegmentation:
    """Rasterise every ROI's CLOSED_PLANAR contours onto the images the caller has.

    Args:
        path: an RT Structure Set file.
        planes: the plane of each image the caller holds (e.g. the images of a source folder). A contour on
            an image not in ``planes`` is left out (the caller reports absent images from the reference);
            one on an image whose plane is None (no geometry) is an error.

    Raises:
        UnreadableImageError: unreadable, not an RTSTRUCT, malformed contours, a contour on an image without
            geometry or off its plane. One line naming the file (ROI numbers only, never names or UIDs).
    """
    path = Path(path)
    ds = read_dataset(path)
    reference = segmentation_reference(ds, path)
    if reference.kind != "RTSTRUCT":
        raise UnreadableImageError(f"{path}: not an RTSTRUCT ({reference.kind}: decode its frames instead)")
    layers = {number: SegmentLayer(number, label) for number, label in reference.segment_labels.items()}
    polygons: dict[tuple[int, ImageKey], list[np.ndarray]] = {}
    contours = _closed_contours(ds, path)
    for number, key, points in contours:
        if key is not None and key in planes:
            polygons.setdefault((number, key), []).append(_on_plane(points, planes[key], number, path))
    for (number, key), shapes in polygons.items():
        layers.setdefault(number, SegmentLayer(number, "")).add(key, fill_contours(shapes, planes[key].shape))
    unplaced = sum(key is None for _, key, _ in contours)
    return DecodedSegmentation(reference, tuple(layers[n] for n in sorted(layers)), unplaced)


def _closed_contours(ds: Dataset, path: Path) -> list[tuple[int, ImageKey | None, np.ndarray]]:
    """(ROI number, image key or None, (N, 3) points) of every CLOSED_PLANAR contour with ≥ 3 points."""
    found = []
    try:
        for roi in ds.get("ROIContourSequence") or []:
            for contour in roi.get("ContourSequence") or []:
                if str(contour.get("ContourGeometricType", "")).strip().upper() != "CLOSED_PLANAR":
                    continue
                points = np.array([float(v) for v in contour.ContourData], dtype=np.float64).reshape(-1, 3)
                if len(points) >= 3:
                    found.append((int(roi.ReferencedROINumber), _contour_image(contour), points))
    except (AttributeError, TypeError, ValueError, IndexError) as error:  # missing or non-numeric data
        raise UnreadableImageError(f"{path}: malformed RTSTRUCT contours ({one_line(error)})") from error
    return found


def _contour_image(contour: Dataset) -> ImageKey | None:
    images = contour.get("ContourImageSequence") or []
    uid = str(images[0].get("ReferencedSOPInstanceUID", "") or "") if images else ""
    if not uid:
        return None
    frame = images[0].get("ReferencedFrameNumber")
    if frame is not None and not isinstance(frame, int):  # VM 1-n
        frame = frame[0] if len(frame) else None
    return uid, int(frame) if frame else 1


def _on_plane(points: np.ndarray, plane: ImagePlane | None, number: int, path: Path) -> np.ndarray:
    """(N, 2) pixel vertices of a contour, checked to lie on the plane of the image it names."""
    if plane is None:
        raise UnreadableImageError(f"{path}: ROI {number} has a contour on an image without "
                                   "ImagePositionPatient / ImageOrientationPatient / PixelSpacing")
    pixels, off_plane = patient_to_pixel(points, plane)
    tolerance = plane.thickness_mm / 2 if plane.thickness_mm else PLANE_TOLERANCE_MM
    if off_plane.max() > tolerance:
        raise UnreadableImageError(f"{path}: a contour of ROI {number} lies {off_plane.max():.1f} mm off the "
                                   f"plane of the image it names (tolerance {tolerance:g} mm)")
    return pixels
