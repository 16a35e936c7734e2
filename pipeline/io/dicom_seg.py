"""DICOM-SEG and RTSTRUCT objects as *labels*: what they segment and which images they refer to.

A segmentation is never ingested as an image (:func:`pipeline.io.dicom.read_dicom_frames` raises
:class:`~pipeline.io.dicom_files.NotAnImageError` for it); instead :func:`read_segmentation_reference` reads
only its header, so that a later step can pair it with the images it was drawn on by SOP Instance UID
(``DicomImage.sop_instance_uid``, plus ``frame_index + 1`` for multi-frame sources). Pixel masks are not
decoded here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_files import (
    SEGMENTATION_SOP_CLASSES, frame_count, one_line, read_dataset, sop_class_name, sop_class_uid,
)


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
    ds = read_dataset(path, stop_before_pixels=True)
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
    referenced = (_uids(_nested([ds], "ReferencedSeriesSequence", "ReferencedInstanceSequence"))
                  | _uids(_nested([ds], "SourceImageSequence")) | per_frame)
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or "")
              for item in ds.get("SegmentSequence") or []}
    return SegmentationReference("SEG", str(ds.get("SOPInstanceUID", "")), tuple(sorted(referenced)), labels,
                                 frames)


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
