"""Which reader a preset's ``reader`` names: how one kind of source folder is listed and read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.dicom_source import list_dicom_files, read_dicom_file
from pipeline.data.segmentations import FolderLabels, find_dicom_labels
from pipeline.data.sources import (
    FileChips, FileTask, list_geotiff_files, list_image_files, read_geotiff_file, read_image_file,
)


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source folder is listed and read.

    ``find_labels`` (optional) runs once over the listed files before any is read: it sets label objects
    apart from images and gives each image its masks (``(source, files, mask_classes) → FolderLabels``).
    """

    list_files: Callable[[Path], list[Path]]
    read_file: Callable[[FileTask], FileChips]
    find_labels: Callable[[Path, list[Path], list[str]], FolderLabels] | None = None


SOURCE_KINDS: dict[str, SourceKind] = {
    "dicom": SourceKind(list_dicom_files, read_dicom_file, find_dicom_labels),
    "geotiff": SourceKind(list_geotiff_files, read_geotiff_file),
    "image": SourceKind(list_image_files, read_image_file),
}
