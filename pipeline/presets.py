"""Domain presets: everything that differs between medical and remote-sensing imagery, as data.

Code looks a preset up by name and never branches on the domain name (like timm's ``pretrained_cfg``):
adding an X-ray or SAR domain means adding a row here, not editing the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DisplaySpec:
    """How the report shows a chip to a person.

    Attributes:
        rgb: channel names composited as R, G, B (true colour); empty = the first channel in grey.
        false_colour: a second composite (e.g. NIR-R-G, vegetation red); empty = none.
        stretch: 2–98 % percentile stretch per composite (dark reflectance); off for CT, whose HU window
            already is the display mapping.
    """

    rgb: tuple[str, ...] = ()
    false_colour: tuple[str, ...] = ()
    stretch: bool = False


@dataclass(frozen=True)
class DomainPreset:
    """How one kind of imagery is read, split, augmented and generated for the demo.

    Attributes:
        reader: file reader used by ingest (``dicom``: one chip per slice; ``geotiff``: a chip grid per scene).
        split: ``group`` keeps all images of one patient in one split; ``spatial_block`` assigns whole
            grid blocks of a scene to one split so neighbouring, correlated chips cannot leak.
        augment: key of :data:`pipeline.augment.AUGMENT_PRESETS`.
        demo: which demo generator writes this domain's embedded example data (None: bring your own folder).
        description: one line for reports.
        display: how the report draws its chips.
    """

    reader: Literal["dicom", "geotiff", "image"]
    split: Literal["group", "spatial_block"]
    augment: str
    demo: Literal["medical", "remote"] | None
    description: str
    display: DisplaySpec = DisplaySpec()


PRESETS: dict[str, DomainPreset] = {
    "medical_ct": DomainPreset(
        reader="dicom",
        split="group",
        augment="medical_ct",
        demo="medical",
        description="CT slices (DICOM), HU windows stacked as channels, split by patient",
        display=DisplaySpec(),  # the first HU window (soft tissue by default), grey
    ),
    "remote_multispectral": DomainPreset(
        reader="geotiff",
        split="spatial_block",
        augment="remote_multispectral",
        demo="remote",
        description="multispectral GeoTIFF scenes cut into chips, split by spatial block",
        display=DisplaySpec(rgb=("red", "green", "blue"), false_colour=("nir", "red", "green"), stretch=True),
    ),
    "natural_rgb": DomainPreset(
        reader="image",
        split="group",  # every image is its own group: a stratified random split
        augment="natural_rgb",
        demo=None,
        description="8- or 16-bit PNG / JPEG / TIFF images (CIFAR / STL-10 style folders), random split",
        display=DisplaySpec(rgb=("red", "green", "blue")),
    ),
}
