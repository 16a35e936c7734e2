"""Generated DICOM files of every modality a hospital exports, written with pydicom's documented recipe
(``Dataset`` + ``FileMetaDataset``): radiographs with VOI LUTs, MR series and MOSAICs, colour ultrasound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.helpers.dicom_items import sequence_item

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "XC": "1.2.840.10008.5.1.4.1.1.77.1.4",
    "SM": "1.2.840.10008.5.1.4.1.1.77.1.6",
}


def write_image(path: Path, pixels: np.ndarray, modality: str, photometric: str = "MONOCHROME2",
                **attributes) -> Path:
    """A single- or multi-frame image file: (H, W) / (F, H, W) grey, (H, W, 3) / (F, H, W, 3) colour samples.

    Unsigned 8- or 16-bit samples as given; ``attributes`` set (value) or delete (None) any keyword.
    """
    pixels = np.asarray(pixels)
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, "PAT-1", "TEST^PATIENT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3 if colour else 1), photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def radiograph(shape: tuple[int, int] = (48, 80), seed: int = 0) -> np.ndarray:
    """uint16 detector-like signal: a smooth body over a 12-bit range, with noise, not square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    body = 1500 + 1800 * np.exp(-(((x - shape[1] / 2) / (shape[1] / 3)) ** 2 + ((y - shape[0] / 2) / shape[0]) ** 2))
    return np.clip(body + rng.normal(0, 40, shape), 0, 4095).astype(np.uint16)


def voi_lut_item(first: int, entries: int, bits: int = 12) -> Dataset:
    """A VOI LUT Sequence item: a gamma-like curve over ``entries`` input values starting at ``first``."""
    curve = (np.linspace(0, 1, entries) ** 0.6 * (2 ** bits - 1)).astype(np.uint16)
    item = sequence_item(LUTExplanation="TEST GAMMA")
    item.add_new(0x00283002, "US", [entries, first, bits])  # LUTDescriptor (US or SS: stated explicitly)
    item.add_new(0x00283006, "US", curve.tolist())  # LUTData (US or OW)
    return item


def ultrasound_frame(shape: tuple[int, int] = (60, 80), seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a speckled grey sector on black, burned-in white text at the top left, a small colour
    (Doppler-like) patch inside the sector."""
    rng = np.random.default_rng(seed)
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    angle, radius = np.arctan2(x - width / 2, y + 5), np.hypot(x - width / 2, y + 5)
    sector = (np.abs(angle) < 0.6) & (radius > 12) & (radius < height - 4)
    grey = np.where(sector, np.clip(rng.gamma(2.0, 40.0, shape), 8, 255), 0).astype(np.uint8)
    frame = np.repeat(grey[..., None], 3, axis=-1)
    frame[2:6, 2:14] = 255  # "text"
    frame[26:40, 34:50] = (200, 30, 30)  # flow
    return frame


def ultrasound_regions(x0: int, y0: int, x1: int, y1: int) -> Sequence:
    """A Sequence of Ultrasound Regions with one 2D tissue region and one spectral (non-image) region."""
    tissue = sequence_item(RegionSpatialFormat=1, RegionDataType=1, RegionFlags=0, RegionLocationMinX0=x0,
                           RegionLocationMinY0=y0, RegionLocationMaxX1=x1, RegionLocationMaxY1=y1,
                           PhysicalUnitsXDirection=3, PhysicalUnitsYDirection=3, PhysicalDeltaX=0.01,
                           PhysicalDeltaY=0.01)
    spectral = sequence_item(RegionSpatialFormat=3, RegionDataType=3, RegionFlags=0, RegionLocationMinX0=0,
                             RegionLocationMinY0=0, RegionLocationMaxX1=5, RegionLocationMaxY1=5,
                             PhysicalUnitsXDirection=4, PhysicalUnitsYDirection=7, PhysicalDeltaX=0.01,
                             PhysicalDeltaY=0.01)
    return Sequence([tissue, spectral])


def as_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """RGB → YBR_FULL samples with pydicom's own conversion (the inverse of what its decoder applies)."""
    return convert_color_space(rgb, "RGB", "YBR_FULL")
