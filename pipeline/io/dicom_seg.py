"""DICOM-SEG and RTSTRUCT objects as *labels*: which images they segment, and their masks on those images.

A segmentation is never ingested as an image (:func:`pipeline.io.dicom.read_dicom_frames` raises
:class:`~pipeline.io.dicom_files.SegmentationObjectError` for it). Two readers, cheapest first:

* :func:`read_segmentation_reference` reads only the header: the segment labels and the SOP Instance UIDs
  (and, for multi-frame sources, frame numbers) of the images it was drawn on, so ingest can pair it with
  those images (``DicomImage.sop_instance_uid``, frame number ``frame_index + 1``) before decoding anything.
* :func:`read_seg_layers` decodes a DICOM-SEG into one :class:`SegmentLayer` per segment: boolean masks on the
  pixel grid of each referenced source image, keyed by :data:`ImageKey`. RTSTRUCT contours are rasterised by
  :func:`pipeline.io.dicom_rtstruct.read_rtstruct_layers`, which returns the same layers.

How a SEG frame becomes a mask (pydicom decodes the frames one at a time; BINARY frames are bit-packed in
the file and come back as 0 / 1):

* **BINARY**: pixel ≠ 0 is in the segment.
* **FRACTIONAL**: in the segment when the stored value ≥ 0.5 × MaximumFractionalValue, i.e. when at least half
  of the pixel (occupancy) or a probability of at least one half belongs to it, the usual reading of both
  FractionalType values.
* **LABELMAP** (Label Map Segmentation Storage, or SegmentationType ``LABELMAP``): one frame holds every
  segment; the pixel value is the SegmentNumber. PixelPaddingValue and values that name no segment belong to
  no segment.

A frame is placed by its Derivation Image macro (the first Source Image of the frame), or for a TILED_FULL
object (whole-slide segmentations, which have no per-frame groups) by its position in the standard's frame
order (:func:`_tiled_full_frames`); a frame without either cannot be placed and is counted in ``DecodedSegmentation.unplaced`` rather than guessed from its position.
Several frames of one segment on the same image are OR-ed. Overlaps *between* segments are not resolved here:
layers stay separate so that the caller can apply one rule over all objects of a folder
(:mod:`pipeline.ingest.segmentations`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import (
    SEGMENTATION_SOP_CLASSES, frame_count, one_line, read_dataset, sop_class_name, sop_class_uid,
)
from pipeline.io.dicom_pixels import decode_frames

LABEL_MAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"  # Label Map Segmentation Storage
ImageKey = tuple[str, int]
"""(SOP Instance UID, 1-based frame number) of one source image; a single-frame image is frame 1."""


@dataclass(frozen=True)
class SegmentationFrame:
    """Where one SEG frame belongs.

    Attributes:
        segment_number: ReferencedSegmentNumber of the frame; 0 for a label-map frame (it holds all segments).
        referenced_sop_instance_uid: the source image of the frame (Derivation Image macro), ``""`` if absent.
        referenced_frame_number: 1-based frame of a multi-frame source image, None for single-frame sources.
    """

    segment_number: int
    referenced_sop_instance_uid: str
    referenced_frame_number: int | None = None


@dataclass(frozen=True)
class SegmentationReference:
    """What a DICOM-SEG or RTSTRUCT object labels.

    Attributes:
        kind: ``"SEG"`` (Segmentation or Label Map Segmentation Storage) or ``"RTSTRUCT"``.
        sop_instance_uid: the segmentation object's own SOP Instance UID.
        referenced_sop_instance_uids: sorted unique SOP Instance UIDs of the images it was drawn on.
        segment_labels: SegmentNumber → SegmentLabel (SEG) or ROINumber → ROIName (RTSTRUCT).
        frames: SEG only, one entry per frame in frame order; empty for RTSTRUCT (contours have no frames).
    """

    kind: Literal["SEG", "RTSTRUCT"]
    sop_instance_uid: str
    referenced_sop_instance_uids: tuple[str, ...]
    segment_labels: dict[int, str]
    frames: tuple[SegmentationFrame, ...] = field(default=())


def read_segmentation_reference(path: Path) -> SegmentationReference:
    """Read the labels and image references of a DICOM-SEG or RTSTRUCT file (header only, pixels not read).

    Raises:
        UnreadableImageError: not readable, or not a segmentation object. The message names the file.
    """
    path = Path(path)
    return segmentation_reference(read_dataset(path, stop_before_pixels=True), path)


def segmentation_reference(ds: Dataset, path: Path) -> SegmentationReference:
    """:func:`read_segmentation_reference` of a dataset already read (``path`` only names it in errors)."""
    uid = sop_class_uid(ds)
    kind = SEGMENTATION_SOP_CLASSES.get(uid)
    if kind is None:
        raise UnreadableImageError(f"{path}: not a segmentation object ({sop_class_name(uid)})")
    try:
        return _seg_reference(ds, frame_count(ds, path)) if kind == "SEG" else _rtstruct_reference(ds)
    except (AttributeError, TypeError, ValueError, IndexError) as error:  # malformed sequences or numbers
        raise UnreadableImageError(f"{path}: malformed {kind} references ({one_line(error)})") from error


def _nested(items: Iterable[Dataset], *keywords: str) -> list[Dataset]:
    """Items reached by following nested sequences, e.g. ``_nested([ds], "ROIContourSequence", …)``."""
    found = list(items)
    for keyword in keywords:
        found = [child for item in found for child in (item.get(keyword) or [])]
    return found


def _uids(items: Iterable[Dataset]) -> set[str]:
    return {str(item.ReferencedSOPInstanceUID) for item in items if item.get("ReferencedSOPInstanceUID")}


def _seg_reference(ds: Dataset, number_of_frames: int) -> SegmentationReference:
    items = list(ds.get("PerFrameFunctionalGroupsSequence") or [])[:number_of_frames]  # extra items: no frame
    frames = tuple(_seg_frame(item) for item in items)
    per_frame = {frame.referenced_sop_instance_uid for frame in frames} - {""}
    shared = _nested(ds.get("SharedFunctionalGroupsSequence") or [], "DerivationImageSequence",
                     "SourceImageSequence")
    referenced = (_uids(_nested([ds], "ReferencedSeriesSequence", "ReferencedInstanceSequence"))
                  | _uids(_nested([ds], "SourceImageSequence")) | _uids(shared) | per_frame)
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or "")
              for item in ds.get("SegmentSequence") or []}
    if not items and str(ds.get("DimensionOrganizationType", "") or "").strip().upper() == "TILED_FULL":
        frames = _tiled_full_frames(ds, sorted(labels), referenced)
    return SegmentationReference("SEG", str(ds.get("SOPInstanceUID", "")), tuple(sorted(referenced)), labels,
                                 frames)


def _tiled_full_frames(ds: Dataset, segments: list[int], referenced: set[str]) -> tuple[SegmentationFrame, ...]:
    """Frame positions of a TILED_FULL segmentation, which has no per-frame functional groups (PS3.3
    C.7.6.17.3): segment slowest (label maps: none), then focal plane, then tiles of the total pixel matrix row
    by row. Tile ``k`` of a plane is placed on frame ``k + 1`` of the one source image, the layout of a
    TILED_FULL source with the same tile size, one focal plane and one optical path (what highdicom writes
    for a slide image); a SEG of several source images cannot be placed this way and stays unplaced."""
    tiles_down = -(-int(ds.TotalPixelMatrixRows) // int(ds.Rows))
    tiles_across = -(-int(ds.TotalPixelMatrixColumns) // int(ds.Columns))
    planes = int(ds.get("TotalPixelMatrixFocalPlanes", 1) or 1)
    label_map = sop_class_uid(ds) == LABEL_MAP_SOP_CLASS or _segmentation_type(ds) == "LABELMAP"
    source = next(iter(referenced)) if len(referenced) == 1 else ""
    frames = []
    for segment in [0] if label_map else segments:
        for plane in range(planes):
            placed = bool(source) and plane == 0  # further focal planes: no frame of the source to match
            frames += [SegmentationFrame(segment, source if placed else "", tile + 1 if placed else None)
                       for tile in range(tiles_down * tiles_across)]
    return tuple(frames)


def _seg_frame(item: Dataset) -> SegmentationFrame:
    identification = item.get("SegmentIdentificationSequence")
    segment = int(identification[0].ReferencedSegmentNumber) if identification else 0
    sources = _nested([item], "DerivationImageSequence", "SourceImageSequence")
    if not sources:
        return SegmentationFrame(segment, "")
    number = sources[0].get("ReferencedFrameNumber")
    if number is not None and not isinstance(number, int):  # VM 1-n: a multi-valued element
        number = number[0] if len(number) else None
    return SegmentationFrame(segment, str(sources[0].get("ReferencedSOPInstanceUID", "")),
                             None if number is None else int(number))


def _rtstruct_reference(ds: Dataset) -> SegmentationReference:
    contour_images = _nested([ds], "ROIContourSequence", "ContourSequence", "ContourImageSequence")
    series_images = _nested([ds], "ReferencedFrameOfReferenceSequence", "RTReferencedStudySequence",
                            "RTReferencedSeriesSequence", "ContourImageSequence")
    labels = {int(item.ROINumber): str(item.get("ROIName", "") or "")
              for item in ds.get("StructureSetROISequence") or []}
    referenced = _uids(contour_images) | _uids(series_images)
    return SegmentationReference("RTSTRUCT", str(ds.get("SOPInstanceUID", "")), tuple(sorted(referenced)),
                                 labels)


@dataclass
class SegmentLayer:
    """One segment (SEG) or ROI (RTSTRUCT) as boolean masks on the source images it was drawn on.

    Attributes:
        number: SegmentNumber (SEG) or ROINumber (RTSTRUCT).
        label: SegmentLabel or ROIName as written, ``""`` when absent.
        masks: (H, W) bool on the pixel grid (Rows × Columns) of each source image it covers.
    """

    number: int
    label: str
    masks: dict[ImageKey, np.ndarray] = field(default_factory=dict)

    @property
    def area(self) -> int:
        """Pixels over all its images: the size by which overlapping segments are ordered."""
        return sum(int(np.count_nonzero(mask)) for mask in self.masks.values())

    def add(self, key: ImageKey, mask: np.ndarray) -> None:
        """OR ``mask`` into the mask of image ``key`` (several frames or contours may cover one image)."""
        mask = np.asarray(mask, dtype=bool)
        self.masks[key] = self.masks[key] | mask if key in self.masks else mask


@dataclass(frozen=True)
class DecodedSegmentation:
    """A segmentation object decoded into layers.

    Attributes:
        reference: its header (:func:`read_segmentation_reference`).
        layers: one per segment / ROI, in SegmentNumber / ROINumber order, including empty ones.
        unplaced: SEG frames or RTSTRUCT contours that name no source image, hence are not in any layer.
    """

    reference: SegmentationReference
    layers: tuple[SegmentLayer, ...]
    unplaced: int = 0


def read_seg_layers(path: Path) -> DecodedSegmentation:
    """Decode a DICOM-SEG (Segmentation or Label Map Segmentation Storage) into one layer per segment.

    Masks are keyed by the frame's source image; a reference without ReferencedFrameNumber is frame 1, which
    is the whole image for the usual single-frame source.

    Raises:
        UnreadableImageError: unreadable, not a SEG, undecodable pixel data, or frames that do not match
            the per-frame functional groups / segment definitions. One line naming the file.
    """
    path = Path(path)
    ds = read_dataset(path)
    reference = segmentation_reference(ds, path)
    if reference.kind != "SEG":
        raise UnreadableImageError(f"{path}: not a DICOM-SEG ({reference.kind}: read its contours instead)")
    pixels = _seg_frames(ds, path, len(reference.frames))
    layers = {number: SegmentLayer(number, reference.segment_labels[number])
              for number in sorted(reference.segment_labels)}
    label_map = sop_class_uid(ds) == LABEL_MAP_SOP_CLASS or _segmentation_type(ds) == "LABELMAP"
    unplaced = 0
    for index, (frame, place) in enumerate(zip(pixels, reference.frames, strict=True)):
        if not place.referenced_sop_instance_uid:
            unplaced += 1
            continue
        key = (place.referenced_sop_instance_uid, place.referenced_frame_number or 1)
        if label_map:
            _add_label_map_frame(layers, key, frame, ds.get("PixelPaddingValue"))
        elif place.segment_number not in layers:
            raise UnreadableImageError(f"{path}: frame {index + 1} names segment {place.segment_number}, "
                                       "which the SegmentSequence does not define")
        else:
            layers[place.segment_number].add(key, _foreground(frame, ds, path))
    return DecodedSegmentation(reference, tuple(layers.values()), unplaced)


def _segmentation_type(ds: Dataset) -> str:
    return str(ds.get("SegmentationType", "") or "").strip().upper()


def _seg_frames(ds: Dataset, path: Path, placed_frames: int) -> Iterator[np.ndarray]:
    """Decoded (H, W) frames one at a time (a SEG of many segments can hold thousands of frames); each frame
    needs its per-frame functional group to be placed."""
    frames = frame_count(ds, path)
    if frames != placed_frames:
        tiled = str(ds.get("DimensionOrganizationType", "") or "").strip().upper() == "TILED_FULL"
        layout = "frame positions from its TILED_FULL layout" if tiled else "per-frame functional groups"
        raise UnreadableImageError(f"{path}: {frames} frames but {placed_frames} {layout} to place them")
    return decode_frames(ds, path)


def _foreground(frame: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """BINARY: any set pixel; FRACTIONAL: at least half of MaximumFractionalValue."""
    if _segmentation_type(ds) != "FRACTIONAL":
        return frame != 0
    maximum = ds.get("MaximumFractionalValue")
    if not maximum:
        raise UnreadableImageError(f"{path}: FRACTIONAL segmentation without MaximumFractionalValue")
    return frame.astype(np.float64) >= 0.5 * float(maximum)


def _add_label_map_frame(layers: dict[int, SegmentLayer], key: ImageKey, frame: np.ndarray,
                         padding: object) -> None:
    """A label-map frame: pixel value = SegmentNumber; the padding value belongs to no segment."""
    for number, layer in layers.items():
        if padding is not None and number == int(padding):
            continue
        hit = frame == number
        if hit.any():
            layer.add(key, hit)
