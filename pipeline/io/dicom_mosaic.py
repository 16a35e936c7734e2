"""Siemens MOSAIC: one stored image that tiles the slices of a whole MR volume (fMRI, DWI), split back into slices.

A MOSAIC (``ImageType`` contains ``MOSAIC``) stores N slices of r × c pixels as a grid of ⌈√N⌉ × ⌈√N⌉ tiles,
row by row, in one Rows × Columns image; the unused tiles at the end are blank. N is the private attribute
*NumberOfImagesInMosaic* (0019,xx0A) of the ``SIEMENS MR HEADER`` block, the same one dcm2niix reads. Read as
one image, the chip would be a thumbnail sheet of the volume; split, each slice is an image like any other.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

from pipeline.io import UnreadableImageError

if TYPE_CHECKING:
    from pipeline.io.dicom import DicomImage

SIEMENS_MR_HEADER = "SIEMENS MR HEADER"
IMAGES_IN_MOSAIC_ELEMENT = 0x0A  # (0019,xx0A) NumberOfImagesInMosaic


def images_in_mosaic(ds: Dataset, path: Path) -> int:
    """NumberOfImagesInMosaic, or a one-line error naming the file when it is missing or malformed."""
    value = None
    try:
        value = ds.private_block(0x0019, SIEMENS_MR_HEADER)[IMAGES_IN_MOSAIC_ELEMENT].value
    except (KeyError, AttributeError):  # no such block or element; a plain header has no private blocks
        value = None
    if isinstance(value, bytes | bytearray) and len(value) == 2:  # VR UN (implicit VR, unknown creator)
        value = struct.unpack("<H", value)[0]
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UnreadableImageError(f"{path}: MOSAIC image without NumberOfImagesInMosaic (0019,xx0A): "
                                   "cannot split it into slices") from None
    if count < 1:
        raise UnreadableImageError(f"{path}: MOSAIC image with NumberOfImagesInMosaic {count}")
    return count


def split_mosaic(image: DicomImage, ds: Dataset, path: Path) -> Iterator[DicomImage]:
    """The N slices of one decoded MOSAIC frame, each a :class:`DicomImage` with ``frame_index`` = slice number
    (``frame * N + slice`` for a multi-frame mosaic)."""
    count = images_in_mosaic(ds, path)
    side = math.ceil(math.sqrt(count))
    rows, columns = image.values.shape[0] // side, image.values.shape[1] // side
    if rows < 1 or columns < 1:
        raise UnreadableImageError(f"{path}: MOSAIC of {count} slices in a {image.values.shape[0]}x"
                                   f"{image.values.shape[1]} image: tiles would be empty")
    for tile in range(count):
        top, left = (tile // side) * rows, (tile % side) * columns
        window = (slice(top, top + rows), slice(left, left + columns))
        yield dataclasses.replace(image, values=image.values[window].copy(), valid=image.valid[window].copy(),
                                  frame_index=image.frame_index * count + tile)
