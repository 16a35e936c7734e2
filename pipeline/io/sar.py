"""Synthetic-aperture radar values → decibels, and the polarisation ratio as a channel.

Backscatter spans orders of magnitude and speckle is multiplicative, so SAR is learned in dB, where speckle is
additive and a few bright targets do not squash the rest (docs/background.md §4). What a file stores decides the formula:

* **intensity** (power, e.g. calibrated sigma0 / gamma0): ``10·log10(x)``;
* **amplitude** (GRD digital numbers, the magnitude of single-look complex data — complex bands are read as ``|z|``
  by :mod:`pipeline.io.geotiff`): ``20·log10(x)``;
* **db**: already decibels (BigEarthNet's Sentinel-1 patches), kept.

``auto`` decides per scene from its stored type and the median of all its valid values (:func:`input_kind`). Non-positive linear values have no
logarithm and are invalid (Sentinel-1 GRD uses 0 outside the swath). With co- and cross-polarised bands (VV and VH,
or HH and HV) the cross-/co-pol ratio, ``VH − VV`` in dB, is added as a channel: it separates volume scattering
(vegetation) from surface scattering better than either band alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POLARISATION_PAIRS = (("vv", "vh"), ("hh", "hv"))  # (co-pol, cross-pol)
SarInput = str  # "intensity" | "amplitude" | "db"


def input_kind(configured: str, dtypes: Sequence[str], median: float) -> SarInput:
    """What the stored values are: the configured kind, or for ``auto`` complex / integer → amplitude, float →
    ``db`` when the scene's median valid value is negative (backscatter in dB mostly is; linear power is not,
    though noise removal leaves a few small negative values in calibrated sigma0), else intensity."""
    if configured != "auto":
        return configured
    if any(str(t).startswith("complex") or np.issubdtype(np.dtype(str(t)), np.integer) for t in dtypes):
        return "amplitude"
    return "db" if median < 0 else "intensity"


def to_decibels(data: np.ndarray, valid: np.ndarray, kind: SarInput) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) linear intensity / amplitude (or dB) → (C, H, W) float32 dB and the valid mask, with
    non-positive linear values invalid and 0.0 where invalid."""
    if kind == "db":
        return data.astype(np.float32, copy=False), valid
    factor = 10.0 if kind == "intensity" else 20.0
    positive = (data > 0).all(axis=0)
    valid = valid & positive
    with np.errstate(divide="ignore", invalid="ignore"):
        decibels = (factor * np.log10(np.where(valid, data, 1.0))).astype(np.float32)
    return decibels, valid


def ratio_channels(names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(co-pol index, cross-pol index, channel name) for every polarisation pair present in ``names``."""
    lowered = [name.lower() for name in names]
    return [(lowered.index(co), lowered.index(cross), f"{cross}_{co}_ratio")
            for co, cross in POLARISATION_PAIRS if co in lowered and cross in lowered]


def with_ratios(decibels: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The dB channels plus one cross − co channel per polarisation pair (:func:`ratio_channels`)."""
    pairs = ratio_channels(names)
    if not pairs:
        return decibels, list(names)
    extra = [decibels[cross] - decibels[co] for co, cross, _ in pairs]
    return np.concatenate([decibels, np.stack(extra)]), [*names, *(name for _, _, name in pairs)]
