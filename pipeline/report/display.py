"""Turn a (C, H, W) chip in [0, 1] into something a person can look at, following a preset's DisplaySpec."""

from __future__ import annotations

import numpy as np

from pipeline.presets import DisplaySpec


def composite(chip: np.ndarray, channel_names: list[str], names: tuple[str, ...], stretch: bool) -> np.ndarray:
    """(H, W, 3) RGB from the named channels, or (H, W) grey of channel 0 when any name is missing."""
    if names and all(name in channel_names for name in names):
        image = np.stack([chip[channel_names.index(name)] for name in names], axis=-1)
    else:
        image = chip[0]
    return percentile_stretch(image) if stretch else np.clip(image, 0, 1)


def percentile_stretch(image: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    """Map the 2nd–98th percentile to [0, 1]: multispectral reflectance is too dark to see as is."""
    lo, hi = np.percentile(image, [low, high])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def display_views(chip: np.ndarray, channel_names: list[str], spec: DisplaySpec) -> list[np.ndarray]:
    """The true-colour (or grey) image, plus the false-colour one when the spec has it and the bands exist."""
    images = [composite(chip, channel_names, spec.rgb, spec.stretch)]
    if spec.false_colour and all(name in channel_names for name in spec.false_colour):
        images.append(composite(chip, channel_names, spec.false_colour, spec.stretch))
    return images
