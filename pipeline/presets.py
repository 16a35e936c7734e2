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
class DicomRecipe:
    """Which DICOM objects a preset reads and how their values become chip channels.

    Attributes:
        modalities: DICOM Modality values (0008,0060) read by default; ``data.<domain>.dicom.modalities``
            overrides them. A file of another modality is skipped with a reason naming the preset that reads it.
        intensity: key of :data:`pipeline.ingest.dicom_source.DICOM_INTENSITY`: ``hu_windows`` (CT: HU windows
            as channels), ``file_voi`` (radiographs: the file's VOI LUT, else a robust window), ``series_percentiles``
            (MR: robust percentiles of the whole series), ``colour`` (RGB, YBR, palette; grey as three channels).
        reads_colour: colour objects (RGB, YBR, PALETTE COLOR) of any modality belong here.
    """

    modalities: tuple[str, ...]
    intensity: Literal["hu_windows", "file_voi", "series_percentiles", "colour"]
    reads_colour: bool = False


@dataclass(frozen=True)
class GeoRecipe:
    """How a preset turns a GeoTIFF scene's physical values into channels, before the value range.

    Attributes:
        values: ``physical`` (reflectance, digital numbers, heights: as stored after scale / offset) or
            ``sar_db`` (backscatter to decibels, plus the cross-/co-polarisation ratio: :mod:`pipeline.io.sar`).
    """

    values: Literal["physical", "sar_db"] = "physical"


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
        dicom: for the ``dicom`` reader, which objects it reads and how (None for other readers).
        geotiff: for the ``geotiff`` reader, how values become channels (None for other readers).
        image_channels: for the ``image`` reader, the channels its augmentation recipe is written for (grey
            images are repeated to RGB for a 3-channel recipe, colour ones averaged to grey for a 1-channel one).
    """

    reader: Literal["dicom", "geotiff", "image"]
    split: Literal["group", "spatial_block"]
    augment: str
    demo: Literal["medical", "remote"] | None
    description: str
    display: DisplaySpec = DisplaySpec()
    dicom: DicomRecipe | None = None
    geotiff: GeoRecipe | None = None
    image_channels: Literal[1, 3] | None = None


PRESETS: dict[str, DomainPreset] = {
    "medical_ct": DomainPreset(
        reader="dicom",
        split="group",
        augment="medical_ct",
        demo="medical",
        description="CT slices (DICOM), HU windows stacked as channels, split by patient",
        display=DisplaySpec(),  # the first HU window (soft tissue by default), grey
        dicom=DicomRecipe(modalities=("CT",), intensity="hu_windows"),
    ),
    "medical_xray": DomainPreset(
        reader="dicom",
        split="group",
        augment="medical_xray",
        demo=None,
        description="radiographs and mammograms (DICOM CR, DX, MG, RF, XA, IO): the file's VOI LUT, "
                    "aspect kept, split by patient",
        display=DisplaySpec(),  # the VOI LUT is the display mapping
        dicom=DicomRecipe(modalities=("CR", "DX", "MG", "RF", "XA", "IO"), intensity="file_voi"),
    ),
    "medical_mr": DomainPreset(
        reader="dicom",
        split="group",
        augment="medical_mr",
        demo=None,
        description="MR slices (DICOM), intensities normalised per series, split by patient",
        display=DisplaySpec(),
        dicom=DicomRecipe(modalities=("MR",), intensity="series_percentiles"),
    ),
    "medical_colour": DomainPreset(
        reader="dicom",
        split="group",
        augment="medical_colour",
        demo=None,
        description="ultrasound, endoscopy, photographs, microscopy (DICOM US, ES, XC, SM, GM, OP and any colour "
                    "object) as RGB, scan region only, split by patient",
        display=DisplaySpec(rgb=("red", "green", "blue")),
        dicom=DicomRecipe(modalities=("US", "ES", "XC", "SM", "GM", "OP"), intensity="colour", reads_colour=True),
    ),
    "remote_multispectral": DomainPreset(
        reader="geotiff",
        split="spatial_block",
        augment="remote_multispectral",
        demo="remote",
        description="multispectral GeoTIFF scenes cut into chips, split by spatial block",
        display=DisplaySpec(rgb=("red", "green", "blue"), false_colour=("nir", "red", "green"), stretch=True),
        geotiff=GeoRecipe(),
    ),
    "remote_sar": DomainPreset(
        reader="geotiff",
        split="spatial_block",
        augment="remote_sar",
        demo=None,
        description="SAR GeoTIFF scenes (Sentinel-1 GRD, SLC amplitude, dB) in decibels with the polarisation "
                    "ratio, cut into chips, split by spatial block",
        display=DisplaySpec(rgb=("vv", "vh", "vh_vv_ratio"), stretch=True),
        geotiff=GeoRecipe(values="sar_db"),
    ),
    "natural_rgb": DomainPreset(
        reader="image",
        split="group",  # every image is its own group: a stratified random split
        augment="natural_rgb",
        demo=None,
        description="8- or 16-bit PNG / JPEG / TIFF images (CIFAR / STL-10 style folders), random split",
        display=DisplaySpec(rgb=("red", "green", "blue")),
        image_channels=3,
    ),
    "grey_images": DomainPreset(
        reader="image",
        split="group",
        augment="grey_images",
        demo=None,
        description="8- or 16-bit grey PNG / JPEG / TIFF images (radiographs, ultrasound exported as images) as "
                    "one channel, random split",
        display=DisplaySpec(),
        image_channels=1,
    ),
}


def dicom_preset_reading(modality: str, colour: bool) -> str | None:
    """The first preset whose default DICOM recipe reads this kind of file (colour objects: the colour preset),
    for skip reasons that tell the user which preset to use instead; None when no preset does."""
    for name, preset in PRESETS.items():
        recipe = preset.dicom
        if recipe is not None and ((colour and recipe.reads_colour) or (not colour and modality in recipe.modalities
                                                                           and not recipe.reads_colour)):
            return name
    for name, preset in PRESETS.items():  # grey ultrasound, endoscopy …: read by the colour preset too
        if preset.dicom is not None and modality in preset.dicom.modalities:
            return name
    return None
