"""Which files are DICOM, how to read them, and which DICOM objects hold images to learn from.

A PACS export mixes images with objects that only *refer* to images: structured reports, presentation states,
key-object selections, RT plans and doses, segmentations, and the DICOMDIR index of the media. Every one of
them is DICOM, so "is DICOM" and "is an image" are two separate questions, answered here:

* :func:`is_dicom_file`: the content is DICOM (not the extension), the DICOMDIR index excluded.
* :func:`segmentation_kind`: a DICOM-SEG or RTSTRUCT (labels for other images), from the SOP class alone.
* :func:`check_image_object`: raises :class:`NotAnImageError` for objects that are not images, with a one-line
  reason naming the file, so ingest can report them as *skipped* (not *rejected*: nothing is wrong with them).

Messages name the file and the SOP class only, never a patient identifier or an instance UID.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MediaStorageDirectoryStorage,
)

from pipeline.io import UnreadableImageError
from pipeline.io.dicom_header import MAGIC, MEDIA_STORAGE_SOP_CLASS, PREAMBLE_BYTES, meta_uid

log = logging.getLogger(__name__)

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Objects whose pixels are label masks; a later step matches them to images by referenced SOP Instance UID.
SEGMENTATION_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7": "SEG",  # Label Map Segmentation Storage (2024, newer than pydicom 3.0)
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",  # RT Structure Set Storage (contours, no pixels)
}
_NAMES_MISSING_FROM_PYDICOM = {"1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage"}
# Objects that do carry Pixel Data, but not a picture of the patient: an RT dose grid is in Gy.
NON_IMAGE_PIXEL_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.481.2"})  # RT Dose Storage
_META_HEAD_BYTES = 2048  # the file meta group is a few hundred bytes
# A dataset stream without preamble starts with group 0x0008 (or the 0x0002 meta group), either byte order.
_RAW_FIRST_GROUPS = (b"\x08\x00", b"\x00\x08", b"\x02\x00")


class NotAnImageError(UnreadableImageError):
    """A valid DICOM object with no image to train on (SR, RT plan/dose, PR, KO, SEG, RTSTRUCT, DICOMDIR).

    A subclass of :class:`~pipeline.io.UnreadableImageError` so callers that only know that one still skip the
    file; callers that catch this first can report it as *skipped* rather than *rejected*. The message is one
    line, starts with the file's path and ends with ``skipped``.
    """


class SegmentationObjectError(NotAnImageError):
    """A DICOM-SEG or RTSTRUCT: labels, not an image. Read it with ``read_segmentation_reference`` instead."""


def is_dicom_file(path: Path, include_dicomdir: bool = False) -> bool:
    """Whether ``path`` holds a DICOM object, by content, not by extension; the DICOMDIR index is excluded.

    Many archives store DICOM without a ``.dcm`` suffix. A Part 10 file is recognised by its 128-byte preamble
    and ``DICM`` magic. A stream without preamble (old ACR-NEMA style, some gateways) is accepted only when it
    starts with a low group number, parses with ``force=True`` and names a registered SOP class and a valid
    SOP Instance UID: ``force=True`` alone "reads" almost any bytes, hence the extra checks. A DICOMDIR (Media
    Storage SOP Class 1.2.840.10008.1.3.10) indexes the other files of the media and holds no image: it is
    logged with its reason and returns False, unless ``include_dicomdir`` (ingest lists it, to count it as
    skipped). Unreadable paths and folders return False.
    """
    head = _read_head(Path(path), _META_HEAD_BYTES)
    if head is None:
        return False
    if head[PREAMBLE_BYTES:PREAMBLE_BYTES + len(MAGIC)] == MAGIC:
        return include_dicomdir or not _is_dicomdir(Path(path), head)
    return head[:2] in _RAW_FIRST_GROUPS and _raw_stream_is_dicom(Path(path))


def _read_head(path: Path, size: int = PREAMBLE_BYTES + len(MAGIC)) -> bytes | None:
    try:
        with open(path, "rb") as stream:
            return stream.read(size)
    except OSError:
        return None


def media_storage_sop_class(path: Path, head: bytes | None = None) -> str:
    """MediaStorageSOPClassUID of a Part 10 file's meta group; ``""`` without one (raw stream, damaged).

    Ingest asks this of every file twice (DICOMDIR? segmentation?) before any is decoded. The meta group is
    always explicit VR little endian (PS3.10 7.1), so the common case is parsed here from the first bytes,
    about 10× cheaper than pydicom's ``read_file_meta_info``, which still handles anything unusual.
    """
    head = _read_head(Path(path), _META_HEAD_BYTES) if head is None else head
    if head is None or head[PREAMBLE_BYTES:PREAMBLE_BYTES + len(MAGIC)] != MAGIC:
        return ""
    found = meta_uid(head, MEDIA_STORAGE_SOP_CLASS)
    if found is not None:
        return found
    try:
        return str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "") or "")
    except Exception:  # a damaged meta group: leave it to the reader, which rejects it with a reason
        return ""


def _is_dicomdir(path: Path, head: bytes) -> bool:
    if media_storage_sop_class(path, head) != MediaStorageDirectoryStorage:
        return False
    log.debug("%s: DICOMDIR media directory index, not an image, skipped", path)  # paths may carry PHI
    return True


def _raw_stream_is_dicom(path: Path) -> bool:
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:  # force=True parsing of arbitrary bytes fails in many ways; none of them is DICOM
        return False
    sop_class, instance = UID(str(ds.get("SOPClassUID", ""))), UID(str(ds.get("SOPInstanceUID", "")))
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    known_syntax = syntax is None or UID(str(syntax)).is_transfer_syntax
    return sop_class.type == "SOP Class" and instance.is_valid and known_syntax


def segmentation_kind(path: Path) -> str | None:
    """``"SEG"`` or ``"RTSTRUCT"`` for a segmentation object, else None, from its SOP class alone.

    Ingest asks this of every file before decoding anything, so it reads the file meta group (a few hundred
    bytes) and falls back to the dataset header only for raw streams, which have none. An unreadable file
    returns None: the image reader then rejects it with its own reason.
    """
    uid = media_storage_sop_class(path)
    if not uid:
        try:
            uid = sop_class_uid(read_dataset(path, stop_before_pixels=True))
        except UnreadableImageError:
            return None
    return SEGMENTATION_SOP_CLASSES.get(uid)


def read_dataset(path: Path, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM object (Part 10, or a raw stream :func:`is_dicom_file` accepts) or raise a one-line error.

    A raw stream (and the odd Part 10 file whose meta group lacks it) has no Transfer Syntax UID; the one its
    encoding implies (implicit / explicit VR, byte order) is filled in so pydicom can decode native pixels.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError as error:
        raise UnreadableImageError(f"{path}: file not found") from error
    except InvalidDicomError as error:
        head = _read_head(path) or b""
        if head[:2] not in _RAW_FIRST_GROUPS or not _raw_stream_is_dicom(path):
            raise UnreadableImageError(f"{path}: not a readable DICOM file ({one_line(error)})") from error
        ds = _read_raw_stream(path, stop_before_pixels)
    except Exception as error:  # pydicom raises many types for corrupt input; one error type for callers
        raise UnreadableImageError(f"{path}: not a readable DICOM file ({one_line(error)})") from error
    if "TransferSyntaxUID" not in ds.file_meta and None not in ds.original_encoding:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _read_raw_stream(path: Path, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as error:  # accepted by the sniffer yet unreadable in full: truncated after the header
        raise UnreadableImageError(f"{path}: not a readable DICOM file ({one_line(error)})") from error


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line (pydicom's decoder errors list every plugin on its own line)."""
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def sop_class_uid(ds: Dataset) -> str:
    """SOPClassUID, else the file meta's MediaStorageSOPClassUID, else ``""``."""
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")


def sop_class_name(uid: str) -> str:
    """``"Basic Text SR"`` for 1.2.840.10008.5.1.4.1.1.88.11: the registry name without "Storage"."""
    if not uid:
        return "no SOP Class UID"
    return _registry_name(uid).removesuffix(" Storage").removesuffix(" SOP Class")


def _registry_name(uid: str) -> str:
    """The standard's name for a UID (pydicom's registry), the UID itself when unknown."""
    return _NAMES_MISSING_FROM_PYDICOM.get(uid) or UID(uid).name


def frame_count(ds: Dataset, path: Path) -> int:
    """NumberOfFrames (1 when absent); a malformed value is a one-line error rather than a crash."""
    value = ds.get("NumberOfFrames", 1)
    try:
        frames = int(value or 1)
    except (TypeError, ValueError) as error:
        raise UnreadableImageError(f"{path}: invalid NumberOfFrames {str(value)!r}") from error
    if frames < 1:
        raise UnreadableImageError(f"{path}: invalid NumberOfFrames {frames}")
    return frames


def check_image_object(ds: Dataset, path: Path) -> None:
    """Raise :class:`NotAnImageError` unless ``ds`` is an image to learn from.

    Not images: the DICOMDIR index; segmentations (SEG, label-map SEG, RTSTRUCT: their pixels or contours are
    labels, read by :func:`pipeline.io.dicom_seg.read_segmentation_reference`); every object of a non-image
    SOP class without Pixel Data (SR, KO, PR, RT plan, waveforms, encapsulated documents …); RT dose grids.

    An *image* SOP class (``… Image Storage``) without Pixel Data is a damaged or header-only export, and a
    dataset with neither SOP class nor Pixel Data is damaged or not DICOM at all: the user should look at
    both, so they raise the plain :class:`~pipeline.io.UnreadableImageError` (rejected, not skipped).
    """
    uid = sop_class_uid(ds)
    if uid == MediaStorageDirectoryStorage:
        raise NotAnImageError(f"{path}: DICOMDIR media directory index, not an image, skipped")
    if uid in SEGMENTATION_SOP_CLASSES:
        raise SegmentationObjectError(f"{path}: segmentation object ({sop_class_name(uid)}), not an image, "
                                      "skipped")
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        if not uid:
            raise UnreadableImageError(f"{path}: no SOP Class UID and no pixel data (damaged, or not DICOM)")
        if "Image Storage" in _registry_name(uid):
            raise UnreadableImageError(f"{path}: {sop_class_name(uid)} object without pixel data")
        raise NotAnImageError(f"{path}: not an image ({sop_class_name(uid)}, no pixel data), skipped")
    if uid in NON_IMAGE_PIXEL_SOP_CLASSES:
        frames = str(ds.get("NumberOfFrames", "1") or "1").strip()
        detail = f", multi-frame with {frames} frames" if frames.isdigit() and int(frames) > 1 else ""
        raise NotAnImageError(f"{path}: not an image ({sop_class_name(uid)}{detail}), skipped")
