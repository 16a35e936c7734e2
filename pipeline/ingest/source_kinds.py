"""Which reader a preset's ``reader`` names: how one kind of source folder is listed and read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config_data import DomainDataConfig
from pipeline.ingest.dicom_source import list_dicom_files, read_dicom_file
from pipeline.ingest.geotiff_source import ScenePlan, list_geotiff_files, plan_scenes, read_geotiff_file
from pipeline.ingest.segmentations import FolderLabels, find_dicom_labels
from pipeline.ingest.sources import FileChips, FileTask, list_image_files, read_image_file


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source folder is listed and read.

    ``find_labels`` (optional) runs once over the listed files before any is read: it sets label objects
    apart from images and gives each image its masks (``(source, files, mask_classes) → FolderLabels``).
    ``plan_files`` (optional) runs once over the images' headers before any pixel is read: it settles what every
    file gives (GeoTIFF: the domain's band set) and rejects files that cannot
    (``(source, files, cfg, domain) → ScenePlan``).
    """

    list_files: Callable[[Path], list[Path]]
    read_file: Callable[[FileTask], FileChips]
    find_labels: Callable[[Path, list[Path], list[str]], FolderLabels] | None = None
    plan_files: Callable[[Path, list[Path], DomainDataConfig, str], ScenePlan] | None = None


SOURCE_KINDS: dict[str, SourceKind] = {
    "dicom": SourceKind(list_dicom_files, read_dicom_file, find_dicom_labels),
    "geotiff": SourceKind(list_geotiff_files, read_geotiff_file, plan_files=plan_scenes),
    "image": SourceKind(list_image_files, read_image_file),
}
