"""The ``data.<domain>`` section of params.yaml: which files a domain reads and how each format becomes channels
(DICOM, GeoTIFF with its SAR options, plain images). Loaded as part of :class:`pipeline.config.Config`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from pipeline.config_types import Fraction, Percentiles, PositiveFloat, PositiveInt, Strict as _Strict

DEMO_SOURCE = "demo"  # data.<domain>.source: read the embedded demo the demo stage writes


class HUWindowConfig(_Strict):
    center: float
    width: PositiveFloat


def _low_below_high_percentile(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] < value[1]:
        raise ValueError(f"needs [low, high] percentiles with low < high, got {list(value)}")
    return value


class PercentileChannel(_Strict):
    """A radiograph channel windowed to the image's own percentiles of its valid pixels, e.g. [1, 99]."""

    percentiles: Percentiles

    _ordered = field_validator("percentiles")(classmethod(lambda cls, v: _low_below_high_percentile(v)))


class FileVoiChannel(_Strict):
    """A radiograph channel from one of the file's own VOI alternatives (1-based: tables first, then windows)."""

    voi: PositiveInt


def _xray_channel_kind(value: object) -> str:
    if isinstance(value, str):
        return "file_voi"
    keys = value.keys() if isinstance(value, dict) else vars(value) if hasattr(value, "__dict__") else {}
    return "voi" if "voi" in keys else "percentiles"


XrayChannel = Annotated[
    Annotated[Literal["file_voi"], Tag("file_voi")] | Annotated[FileVoiChannel, Tag("voi")]
    | Annotated[PercentileChannel, Tag("percentiles")],
    Discriminator(_xray_channel_kind),
]


class DicomOptions(_Strict):
    """How DICOM values become channels; each preset reads the part that concerns it (docs/medical-dicom.md)."""

    # DICOM Modality values this domain reads; None = its preset's (medical_ct: CT; medical_xray: CR, DX …)
    modalities: list[Annotated[str, Field(min_length=1, pattern=r"^[A-Z0-9_ ]+$")]] | None = None
    # medical_ct: one channel per HU window (docs/background.md §3: several windows beat one grey channel copied 3×)
    hu_windows: list[HUWindowConfig] = [
        HUWindowConfig(center=40, width=400),
        HUWindowConfig(center=-600, width=1500),
        HUWindowConfig(center=400, width=1800),
    ]
    # medical_xray: one channel per entry: "file_voi" = the file's VOI LUT number voi_number (else the robust
    # window below), {voi: n} = its n-th VOI alternative, {percentiles: [low, high]} = the image's own percentiles
    xray_channels: Annotated[list[XrayChannel], Field(min_length=1)] = ["file_voi"]
    voi_number: PositiveInt = 1  # which of several VOI alternatives "file_voi" uses (1-based: tables, then windows)
    # robust window: radiographs without a VOI LUT (per image), MR (per series), rescaled grey ultrasound
    percentiles: Percentiles = (0.5, 99.5)

    _ordered = field_validator("percentiles")(classmethod(lambda cls, v: _low_below_high_percentile(v)))


class SarOptions(_Strict):
    """SAR scenes (preset ``remote_sar``): how stored values become decibels (docs/earth-observation.md)."""

    # what the stored (scaled) values are: auto = complex → amplitude, integers → amplitude (GRD digital
    # numbers), floats → dB when the scene has negative values, else intensity (power, e.g. sigma0)
    input: Literal["auto", "intensity", "amplitude", "db"] = "auto"
    ratio: bool = True  # add the cross-/co-polarisation ratio (VH − VV, HV − HH in dB) as a channel


Range = tuple[float, float]


class GeoTiffOptions(_Strict):
    """GeoTIFF scenes (multi-band files or band folders); policies in :mod:`pipeline.ingest.scenes`."""

    # 1-based band indexes or band names (red, nir, B04, VV …); None = the band set most scenes share
    bands: Annotated[list[Annotated[int, Field(ge=1)] | Annotated[str, Field(min_length=1)]],
                     Field(min_length=1)] | None = None
    # physical values mapped linearly to [0, 1]: [low, high] for every band, or one [low, high] per channel;
    # None = each channel's range_percentiles of the train split's valid pixels
    value_range: Range | Annotated[list[Range], Field(min_length=1)] | None = None
    range_percentiles: Percentiles = (1.0, 99.0)
    min_valid_fraction: Fraction = 0.9
    block_size_px: PositiveInt = 256  # spatial-block split cell; larger than the correlation range
    buffer_px: Annotated[int, Field(ge=0)] = 0
    # a file labelled in labels.csv without a class raster (a labelled tile, EuroSAT / UC Merced style) is one
    # chip: the tile resized to chip_size; true cuts it into chips that each inherit its label instead
    chip_labelled_files: bool = False
    sar: SarOptions = SarOptions()

    @field_validator("value_range")
    @classmethod
    def _low_below_high(cls, value: Range | list[Range] | None) -> Range | list[Range] | None:
        ranges = [] if value is None else value if isinstance(value, list) else [value]
        for low, high in ranges:
            if not low < high:
                raise ValueError(f"needs [low, high] with low < high, got {[low, high]}")
        return value

    _ordered = field_validator("range_percentiles")(classmethod(lambda cls, v: _low_below_high_percentile(v)))


class ImageOptions(_Strict):
    """Plain image folders (PNG / JPEG / TIFF, 8 or 16 bit)."""

    # unset: the preset's (natural_rgb 3, grey_images 1); grey images are repeated to 3 channels, colour ones
    # averaged to 1 (BT.601)
    channels: Literal[1, 3] | None = None
    label_from_folder: bool = True  # without labels.csv: the parent folder names the class (ImageFolder layout)


class DomainDataConfig(_Strict):
    """One data domain: which preset (reader, split, augmentation) and which files."""

    preset: str
    source: str = DEMO_SOURCE  # "demo" or a folder of DICOM / GeoTIFF files (+ labels.csv / masks/)
    chip_size: PositiveInt = 64
    split_fractions: tuple[Fraction, Fraction, Fraction] = (0.6, 0.2, 0.2)
    dicom: DicomOptions = DicomOptions()
    geotiff: GeoTiffOptions = GeoTiffOptions()
    image: ImageOptions = ImageOptions()

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"train/val/test fractions must sum to 1, got {list(value)}")
        return value

    @property
    def uses_demo(self) -> bool:
        """Whether this domain reads the embedded demo (written by the demo stage) instead of the user's folder."""
        return self.source == DEMO_SOURCE

    def source_folder(self, demo_root: str, domain: str) -> Path:
        """The folder ingest reads: the demo stage's output for ``source: demo``, else the user's folder."""
        return Path(demo_root) / domain if self.uses_demo else Path(self.source)
