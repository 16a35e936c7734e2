"""Ingest's first pass over a DICOM folder: DICOM-SEG / RTSTRUCT objects → class-id masks for their images.

Runs in the main process before any image is decoded, so that each worker's :class:`FileTask` carries the
masks of its own image (``FileTask.frame_masks``) and the per-file worker design and merge order stay as
they are. Images are never decoded here: only headers are read.

Rules (what a user sees):

* **Which files**: a listed DICOM file of SOP class Segmentation, Label Map Segmentation or RT Structure Set
  (:func:`~pipeline.io.dicom_files.segmentation_kind`, from the file meta group) is a label object; every
  other file is read as an image, as before.
* **Matching**: by referenced SOP Instance UID (+ frame number for multi-frame sources) against the
  SOPInstanceUID of the folder's images (one header read per image). An image that any object references
  gets a mask for *every* frame, background (class 0) wherever no segment covers a pixel: a SEG usually
  leaves out empty frames, and being referenced means the image was looked at. An image that no object
  references gets no mask from here (a PNG under ``masks/`` may still give it one).
* **Class ids**: 0 is background. A segment label (SegmentLabel / ROIName, else ``segment <n>`` /
  ``ROI <n>``) equal, ignoring case, to a name of ``classes.json`` ``mask_classes`` takes that id; other
  labels get the next free ids in order of first appearance, label objects in sorted path order and their
  segments by number. ``stats.json`` ``mask_classes`` lists the result.
* **Overlaps**: where segments overlap (within one object or between objects on one image), the segment
  with the fewest pixels over all its images wins; ties go to the later object, then the higher segment
  number. Overlaps in clinical segmentations are mostly nesting (tumour in organ, GTV in CTV in PTV, every
  organ in BODY / External), and the inner, smaller structure is the one a model should learn, whatever
  number an annotator happened to give it. A segment whose label maps to background paints nothing.
* **PNG masks**: for an image that a label object references, its DICOM mask replaces a PNG under
  ``masks/`` (logged): DICOM-SEG / RTSTRUCT name their segments and are matched by UID, a PNG only by name.
* **Outcomes** (``FolderLabels``): a used object gets a report entry (path, kind, class names, images
  labelled; a ``reason`` when some referenced images are absent or some frames / contours name no image);
  an object none of whose referenced images is in the folder is *skipped* with a one-line reason; a
  malformed one (undecodable, frames that do not match their groups, a grid that differs from its image, a
  contour off its image's plane) is *rejected* with one line. ``ingest.strict`` stops at either.

Masks are held at the source images' resolution (one byte per pixel of each labelled frame) until the
workers resize them to the chip grid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.chips import MASK_IGNORE
from pipeline.ingest.phi import PathRedactor, phi_salt
from pipeline.io import UnreadableImageError
from pipeline.io.dicom import PHI_KEYWORDS, read_identifiers
from pipeline.io.dicom_files import frame_count, one_line, read_dataset, segmentation_kind
from pipeline.io.dicom_rtstruct import ImagePlane, image_plane, read_rtstruct_layers
from pipeline.io.dicom_seg import (
    DecodedSegmentation, ImageKey, SegmentationReference, SegmentLayer, read_seg_layers,
    read_segmentation_reference,
)

log = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass(frozen=True)
class ImageEntry:
    """One image file of the folder, from its header: what a label object's masks must fit."""

    path: Path
    relative: str
    shape: tuple[int, int]  # (Rows, Columns)
    frames: int
    planes: dict[int, ImagePlane | None] = field(default_factory=dict)  # frame number → plane (RTSTRUCT only)


@dataclass
class FolderLabels:
    """Outcome of the first pass: which files are images, their masks, and one line per label object."""

    images: list[Path]  # files to read as images, in listed order
    frame_masks: dict[Path, dict[int, np.ndarray]] = field(default_factory=dict)  # file → frame → (H, W)
    mask_classes: list[str] = field(default_factory=list)  # class names by id; [] when no object is used
    used: list[dict[str, object]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)  # label objects' patient identifiers: redact their paths


@dataclass(frozen=True)
class _Used:
    order: int
    relative: str
    decoded: DecodedSegmentation
    matched: tuple[str, ...]  # referenced SOP Instance UIDs found in the folder


def find_dicom_labels(source: Path, files: list[Path], mask_classes: list[str]) -> FolderLabels:
    """Split ``files`` into images and label objects, and turn the label objects into per-image masks.

    Args:
        source: the source folder (paths in outcomes are relative to it).
        files: the listed DICOM files, sorted.
        mask_classes: ``classes.json`` ``mask_classes`` by id (``[]`` when absent).
    """
    kinds = {path: segmentation_kind(path) for path in files}
    out = FolderLabels([path for path in files if kinds[path] is None])
    objects = [path for path in files if kinds[path] is not None]
    if not objects:
        return out
    out.identifiers = {value for path in objects for value in read_identifiers(path)[0]}
    index = index_images(out.images, source, with_planes="RTSTRUCT" in kinds.values())
    planes = {(uid, number): plane for uid, entry in index.items() for number, plane in entry.planes.items()}
    used = [item for order, path in enumerate(objects)
            if (item := _read_object(path, source, index, planes, order, out)) is not None]
    if used:
        labels = [_label(item.decoded.reference, layer) for item in used for layer in item.decoded.layers]
        out.mask_classes = assign_class_ids(mask_classes, labels)
        out.frame_masks = paint_masks(used, out.mask_classes, index)
        out.used = [_used_entry(item, out.mask_classes) for item in used]
        _log_replaced_png_masks(source, out.frame_masks)
    return out


def index_images(paths: list[Path], source: Path, with_planes: bool = False) -> dict[str, ImageEntry]:
    """SOPInstanceUID → image file, from headers (pixels not read); unreadable headers are left to the
    image reader, which reports them. A UID held by two files labels the first (sorted) one only."""
    index: dict[str, ImageEntry] = {}
    for path in paths:
        try:
            ds = read_dataset(path, stop_before_pixels=True)
            uid, frames = str(ds.get("SOPInstanceUID", "") or ""), frame_count(ds, path)
            shape = (int(ds.Rows), int(ds.Columns))
        except (UnreadableImageError, AttributeError, TypeError, ValueError):  # no image header: not ours
            continue
        if uid in index:
            redact = PathRedactor([str(ds.get(k, "") or "") for k in PHI_KEYWORDS], phi_salt())
            log.warning("%s: same SOP Instance UID as %s; segmentations label the first only",
                        redact.path(path.relative_to(source).as_posix()), redact.path(index[uid].relative))
        elif uid:
            planes = {n: image_plane(ds, n - 1) for n in range(1, frames + 1)} if with_planes else {}
            index[uid] = ImageEntry(path, path.relative_to(source).as_posix(), shape, frames, planes)
    return index


def _read_object(path: Path, source: Path, index: dict[str, ImageEntry],
                 planes: dict[ImageKey, ImagePlane | None], order: int, out: FolderLabels) -> _Used | None:
    """Decode one label object whose images are in the folder; else record why it is skipped / rejected."""
    relative = path.relative_to(source).as_posix()
    try:
        reference = read_segmentation_reference(path)
        matched = tuple(uid for uid in reference.referenced_sop_instance_uids if uid in index)
        if not matched:
            out.skipped.append({"path": relative, "reason": _unmatched_reason(relative, reference)})
            return None
        decoded = read_seg_layers(path) if reference.kind == "SEG" else read_rtstruct_layers(path, planes)
        check_grids(decoded, index, path)
    except UnreadableImageError as error:
        out.rejected.append({"path": relative, "reason": str(error).replace(str(path), relative)})
        return None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:  # odd values in an export
        out.rejected.append({"path": relative, "reason": f"{relative}: malformed segmentation object "
                                                         f"({one_line(error)})"})
        return None
    return _Used(order, relative, decoded, matched)


def _unmatched_reason(relative: str, reference: SegmentationReference) -> str:
    count = len(reference.referenced_sop_instance_uids)
    if count == 0:
        return f"{relative}: {reference.kind} references no image, its labels are not used, skipped"
    return (f"{relative}: {reference.kind} labels {count} image(s), none of them in the source folder, "
            "skipped")


def check_grids(decoded: DecodedSegmentation, index: dict[str, ImageEntry], path: Path) -> None:
    """Every mask must be on its image's pixel grid and name one of its frames; otherwise the object was
    drawn on other images (or is corrupt), and resizing it would put labels on the wrong anatomy."""
    for layer in decoded.layers:
        for (uid, frame), mask in layer.masks.items():
            entry = index.get(uid)
            if entry is None:
                continue
            if frame > entry.frames:
                raise UnreadableImageError(f"{path}: segment {layer.number} names frame {frame} of "
                                           f"{entry.relative}, which has {entry.frames}")
            if mask.shape != entry.shape:
                size, expected = "x".join(map(str, mask.shape)), "x".join(map(str, entry.shape))
                raise UnreadableImageError(f"{path}: segment {layer.number} is {size} pixels, its image "
                                           f"{entry.relative} {expected}")


def _label(reference: SegmentationReference, layer: SegmentLayer) -> str:
    """The class name of a layer: its label, else ``segment <n>`` / ``ROI <n>`` (ROIName may be empty)."""
    return layer.label.strip() or f"{'segment' if reference.kind == 'SEG' else 'ROI'} {layer.number}"


def assign_class_ids(mask_classes: list[str], labels: Iterable[str]) -> list[str]:
    """Class names by id: ``mask_classes`` first (just ``background`` when empty), then each other label in
    the order given; names are compared ignoring case, the first spelling is kept."""
    names = list(mask_classes) or [BACKGROUND]
    known = {name.casefold() for name in names}
    for label in labels:
        if label.casefold() not in known:
            known.add(label.casefold())
            names.append(label)
    if len(names) > MASK_IGNORE:
        raise ValueError(f"{len(names)} mask classes: ids must stay below {MASK_IGNORE} (the ignore value)")
    return names


def _class_ids(names: list[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for number, name in enumerate(names):
        ids.setdefault(name.casefold(), number)
    return ids


def paint_masks(used: list[_Used], names: list[str],
                index: dict[str, ImageEntry]) -> dict[Path, dict[int, np.ndarray]]:
    """Image file → frame number → (H, W) uint8 class ids, overlaps resolved as the module docstring says.

    Layers are painted largest first, so a smaller one overwrites a larger one where they overlap.
    """
    ids = _class_ids(names)
    masks: dict[Path, dict[int, np.ndarray]] = {index[uid].path: {} for item in used for uid in item.matched}
    layers = [(item, layer) for item in used for layer in item.decoded.layers]
    layers.sort(key=lambda pair: (-pair[1].area, pair[0].order, pair[1].number))  # largest first
    for item, layer in layers:
        class_id = ids[_label(item.decoded.reference, layer).casefold()]
        for (uid, frame), mask in layer.masks.items():
            if class_id == 0 or uid not in index:
                continue
            frames = masks.setdefault(index[uid].path, {})
            frames.setdefault(frame, np.zeros(index[uid].shape, np.uint8))[mask] = class_id
    return masks


def _used_entry(item: _Used, names: list[str]) -> dict[str, object]:
    """The report line of a used object; ``reason`` says what of it could not be used."""
    ids = _class_ids(names)
    reference = item.decoded.reference
    entry: dict[str, object] = {
        "path": item.relative, "kind": reference.kind, "images": len(item.matched),
        "segments": [names[ids[_label(reference, layer).casefold()]] for layer in item.decoded.layers]}
    notes = []
    referenced = len(reference.referenced_sop_instance_uids)
    if referenced > len(item.matched):
        absent = referenced - len(item.matched)
        notes.append(f"{absent} of {referenced} referenced images are not in the source folder, their masks "
                     "are not used")
    if item.decoded.unplaced:
        what = "frames" if reference.kind == "SEG" else "contours"
        notes.append(f"{item.decoded.unplaced} {what} name no source image and are not used")
    if notes:
        entry["reason"] = f"{item.relative}: " + "; ".join(notes)
    return entry


def _log_replaced_png_masks(source: Path, frame_masks: dict[Path, dict[int, np.ndarray]]) -> None:
    both = [path.relative_to(source) for path in frame_masks
            if (source / "masks" / path.relative_to(source).with_suffix(".png")).exists()]
    if both:  # no path: a folder may be named after its patient (pipeline.ingest.phi)
        log.warning("%d images labelled by DICOM-SEG / RTSTRUCT also have a PNG mask under masks/: "
                    "the DICOM masks are used", len(both))
