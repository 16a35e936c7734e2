"""SimCLR two-view augmentation, with each domain's recipe written as data.

Chips arrive as float32 (H, W, C) arrays in [0, 1]: CT with one HU window per channel, multispectral
with reflectance clipped to [0, 1]. Every transform below is defined for float32 and any channel count
(1, 3, 4, 13, …) and keeps values in [0, 1]; per-channel standardisation happens later, on the batch, in
torch. The medical and remote recipes assume nothing about RGB: no hue / saturation / ColorJitter / ToGray
(docs/background.md §3, §4); only the ``natural_rgb`` recipe (:data:`RGB_PRESETS`) is for photographs.

Randomness comes from (seed, epoch, index) for every call, never from the worker process or call order,
so a run gives the same views with 0 or 8 DataLoader workers.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import albumentations as A
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SIZE = "<image_size>"
"""Placeholder in a recipe for the output side length, filled in by :func:`build_view_transform`."""


class BandDropout(A.ChannelDropout):
    """``A.ChannelDropout`` that is a no-op on 1-channel images and never drops every band.

    Albumentations raises on C = 1 and when the drop range reaches C; a recipe must work for any C,
    so the upper bound is clipped to C − 1 and single-channel images pass through unchanged.
    """

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Pick 1 … min(max, C − 1) bands to fill, or none when C = 1."""
        image = data["image"] if "image" in data else data["images"][0]
        num_channels = image.shape[-1] if image.ndim == 3 else 1
        if num_channels < 2:
            return {"channels_to_drop": []}
        low, high = self.channel_drop_range
        count = self.py_random.randint(min(low, num_channels - 1), min(high, num_channels - 1))
        return {"channels_to_drop": self.py_random.sample(range(num_channels), k=count)}

    def apply(self, img: np.ndarray, channels_to_drop: list[int], **params: Any) -> np.ndarray:
        """(H, W, C) → same shape with the chosen bands set to ``fill``."""
        return img if not channels_to_drop else super().apply(img, channels_to_drop, **params)


class BiasField(A.ImageOnlyTransform):
    """Smooth multiplicative intensity inhomogeneity, the MR coil-sensitivity artefact (torchio's RandomBiasField).

    The field is ``exp(p(x, y))`` for a random polynomial ``p`` of the normalised image coordinates of total
    degree ≤ ``order``, each coefficient uniform in ``±coefficients``; every channel is multiplied by it and the
    result is clipped to [0, 1]. A network that should recognise anatomy must not rely on absolute brightness
    at a position, which is what the field varies between scanners and coils.
    """

    def __init__(self, coefficients: float = 0.3, order: int = 3, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.coefficients = coefficients
        self.order = order

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """One coefficient per monomial x^i y^j with i + j ≤ order."""
        terms = [(i, j) for i in range(self.order + 1) for j in range(self.order + 1 - i)]
        values = self.random_generator.uniform(-self.coefficients, self.coefficients, len(terms))
        return {"terms": terms, "values": values}

    def apply(self, img: np.ndarray, terms: list[tuple[int, int]], values: np.ndarray,
              **params: Any) -> np.ndarray:
        """(H, W, C) → same shape, multiplied by the field."""
        height, width = img.shape[:2]
        y, x = np.meshgrid(np.linspace(-1, 1, height, dtype=np.float32), np.linspace(-1, 1, width, dtype=np.float32),
                           indexing="ij")
        log_field = sum(np.float32(v) * x ** i * y ** j for (i, j), v in zip(terms, values))
        field = np.exp(log_field).astype(np.float32)
        return np.clip(img * (field[..., None] if img.ndim == 3 else field), 0.0, 1.0).astype(np.float32)


# One row per step, applied in order: {"transform": <albumentations class name>, **its arguments}.
# Intensity steps come after the crop so they run on the small output image.
AUGMENT_PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    # Evaluation: resize only.
    "none": (
        {"transform": "Resize", "height": IMAGE_SIZE, "width": IMAGE_SIZE, "area_for_downscale": "image"},
    ),
    # CT axial slices (§3): anatomy has a side, so no flips; crops large enough to usually keep the
    # lesion; "window jitter" = per-channel gain (window width) + per-channel offset (window level).
    "medical_ct": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.35, 1.0),
         "ratio": (0.8, 1.25), "area_for_downscale": "image"},
        {"transform": "Affine", "rotate": (-12, 12), "scale": (0.9, 1.1), "translate_percent": (-0.05, 0.05),
         "fill": 0.0, "fill_mask": 255, "p": 0.7},  # 0 = below every window (air); masks: 255 = ignore
        {"transform": "MultiplicativeNoise", "multiplier": (0.85, 1.15), "per_channel": True,
         "elementwise": False, "p": 0.8},
        {"transform": "AdditiveNoise", "noise_type": "uniform", "spatial_mode": "constant",
         "noise_params": {"ranges": [(-0.08, 0.08)]}, "p": 0.8},
        {"transform": "RandomGamma", "gamma_limit": (80, 125), "p": 0.5},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.0), "p": 0.3},
        {"transform": "GaussNoise", "std_range": (0.005, 0.03), "p": 0.3},
    ),
    # Radiographs (CR, DX, MG): MoCo-CXR found aggressive crops and colour jitter destroy the findings, so
    # crops keep most of the image; anatomy has a side (laterality), so no flips (add a HorizontalFlip row to a
    # copy of this recipe to allow them); small rotation; brightness / contrast / gamma, no hue.
    "medical_xray": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.7, 1.0),
         "ratio": (0.85, 1.18), "area_for_downscale": "image"},
        {"transform": "Affine", "rotate": (-10, 10), "scale": (0.95, 1.05), "translate_percent": (-0.04, 0.04),
         "fill": 0.0, "fill_mask": 255, "p": 0.7},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2,
         "brightness_by_max": False, "p": 0.8},
        {"transform": "RandomGamma", "gamma_limit": (80, 125), "p": 0.5},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 0.8), "p": 0.2},
        {"transform": "GaussNoise", "std_range": (0.005, 0.02), "p": 0.3},
    ),
    # MR slices: no physical unit and scanner-dependent shading, so a smooth bias field, gamma and a global
    # intensity scale; small affine; no flips (a left-right flip swaps hemispheres / organs).
    "medical_mr": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.5, 1.0),
         "ratio": (0.85, 1.18), "area_for_downscale": "image"},
        {"transform": "Affine", "rotate": (-10, 10), "scale": (0.9, 1.1), "translate_percent": (-0.05, 0.05),
         "fill": 0.0, "fill_mask": 255, "p": 0.7},
        {"transform": "BiasField", "coefficients": 0.3, "order": 3, "p": 0.6},
        {"transform": "RandomGamma", "gamma_limit": (75, 135), "p": 0.6},
        {"transform": "MultiplicativeNoise", "multiplier": (0.9, 1.1), "per_channel": False, "elementwise": False,
         "p": 0.5},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 0.8), "p": 0.2},
        {"transform": "GaussNoise", "std_range": (0.005, 0.03), "p": 0.3},
    ),
    # Ultrasound, endoscopy, photographs: RGB, but hue is Doppler flow or tissue colour, so no hue jitter;
    # speckle is multiplicative (elementwise multiplicative noise); mirror images are plausible.
    "medical_colour": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.35, 1.0),
         "ratio": (0.75, 4 / 3), "area_for_downscale": "image"},
        {"transform": "HorizontalFlip", "p": 0.5},
        {"transform": "Affine", "rotate": (-15, 15), "scale": (0.9, 1.1), "fill": 0.0, "fill_mask": 255, "p": 0.6},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.25, "contrast_limit": 0.25,
         "brightness_by_max": False, "p": 0.8},
        {"transform": "RandomGamma", "gamma_limit": (80, 125), "p": 0.5},
        {"transform": "MultiplicativeNoise", "multiplier": (0.85, 1.15), "per_channel": False, "elementwise": True,
         "p": 0.3},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.0), "p": 0.3},
    ),
    # Multispectral chips (§4): overhead imagery has no "up", so all 8 flips/rotations; per-band gain,
    # brightness relative to the chip's mean reflectance, band dropout, blur, sensor noise.
    "remote_multispectral": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.25, 1.0),
         "ratio": (0.75, 4 / 3), "area_for_downscale": "image"},
        {"transform": "D4", "p": 1.0},
        {"transform": "MultiplicativeNoise", "multiplier": (0.8, 1.2), "per_channel": True,
         "elementwise": False, "p": 0.8},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2,
         "brightness_by_max": False, "p": 0.8},
        {"transform": "BandDropout", "channel_drop_range": (1, 2), "fill": 0.0, "p": 0.2},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.0), "p": 0.3},
        {"transform": "GaussNoise", "std_range": (0.005, 0.02), "p": 0.3},
    ),
    # SAR in dB (§4): overhead, so all 8 flips/rotations; speckle is multiplicative, i.e. additive in dB:
    # additive noise and multi-look-like blur; a small global offset (calibration); no optical band jitter,
    # no band dropout (the ratio channel is a function of the others).
    "remote_sar": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.25, 1.0),
         "ratio": (0.75, 4 / 3), "area_for_downscale": "image"},
        {"transform": "D4", "p": 1.0},
        {"transform": "AdditiveNoise", "noise_type": "gaussian", "spatial_mode": "per_pixel",
         "noise_params": {"mean_range": (0.0, 0.0), "std_range": (0.01, 0.05)}, "p": 0.6},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.2), "p": 0.4},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.08, "contrast_limit": 0.1,
         "brightness_by_max": False, "p": 0.5},
    ),
    # Grey images from an image folder (radiographs, ultrasound, microscopy exported as PNG): the SimCLR recipe
    # without what needs colour (hue, saturation, grey conversion); brightness / contrast jitter of the same
    # strength, gamma, blur. Flips stay: a folder of PNGs says nothing about laterality (use medical_xray's DICOM
    # preset where it does).
    "grey_images": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.2, 1.0),
         "area_for_downscale": "image"},
        {"transform": "HorizontalFlip", "p": 0.5},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.4, "contrast_limit": 0.4,
         "brightness_by_max": False, "p": 0.8},
        {"transform": "RandomGamma", "gamma_limit": (80, 125), "p": 0.5},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.5), "p": 0.5},
    ),
    # Natural RGB photographs: the SimCLR paper's recipe (crop 0.08–1, flip, colour jitter 0.8 × strength
    # 0.5, grey 0.2, blur 0.5). RGB only: hue and saturation have no meaning for other channel sets.
    "natural_rgb": (
        {"transform": "RandomResizedCrop", "size": (IMAGE_SIZE, IMAGE_SIZE), "scale": (0.08, 1.0),
         "area_for_downscale": "image"},
        {"transform": "HorizontalFlip", "p": 0.5},
        {"transform": "ColorJitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "p": 0.8},
        {"transform": "ToGray", "p": 0.2},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 2.0), "p": 0.5},
    ),
}

RGB_PRESETS = frozenset({"natural_rgb"})
"""Recipes with colour transforms (hue, saturation, grey conversion) that only mean something for RGB."""

_LOCAL_TRANSFORMS: dict[str, type[A.BasicTransform]] = {"BandDropout": BandDropout, "BiasField": BiasField}


SPATIAL_TRANSFORMS = frozenset({"RandomResizedCrop", "Resize", "HorizontalFlip", "VerticalFlip", "D4", "Affine"})
"""Steps that move pixels without changing their values: what supervised fine-tuning keeps of a recipe (the
SimCLR paper fine-tunes with random crops and flips only; the photometric steps are for contrastive views)."""


def build_view_transform(preset: str, image_size: int, spatial_only: bool = False,
                         crop_scale: tuple[float, float] | None = None) -> A.Compose:
    """One random view of a float32 (H, W, C) chip in [0, 1] → (image_size, image_size, C), same range.

    Args:
        preset: key of :data:`AUGMENT_PRESETS`.
        image_size: output side length in pixels.
        spatial_only: keep only the recipe's :data:`SPATIAL_TRANSFORMS` (fine-tuning's views).
        crop_scale: (low, high) area fraction of the random resized crop, in place of the preset's
            (``simclr.crop_scale``); None keeps the preset's.

    Returns:
        An ``A.Compose``; seed it per call (``set_random_seed`` / ``set_random_state``) for reproducibility.

    Raises:
        ValueError: for an unknown preset (the message lists the known ones) or a non-positive size.
    """
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; known presets: {sorted(AUGMENT_PRESETS)}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    steps = [step for step in AUGMENT_PRESETS[preset] if not spatial_only or step["transform"] in SPATIAL_TRANSFORMS]
    if crop_scale is not None:
        steps = [{**step, "scale": tuple(crop_scale)} if step["transform"] == "RandomResizedCrop" else step
                 for step in steps]
    return A.Compose([_build_step(step, int(image_size)) for step in steps])


def _build_step(step: dict[str, Any], image_size: int) -> A.BasicTransform:
    """Instantiate one recipe row, replacing :data:`IMAGE_SIZE` placeholders by ``image_size``."""
    kwargs = {key: _fill_size(value, image_size) for key, value in step.items() if key != "transform"}
    name = step["transform"]
    cls = _LOCAL_TRANSFORMS.get(name) or getattr(A, name, None)
    if cls is None:
        raise ValueError(f"augmentation step names unknown transform {name!r}")
    return cls(**kwargs)


def _fill_size(value: Any, image_size: int) -> Any:
    """Recursively substitute the output size placeholder inside tuples."""
    if isinstance(value, str) and value == IMAGE_SIZE:
        return image_size
    if isinstance(value, tuple):
        return tuple(_fill_size(item, image_size) for item in value)
    return value


class TwoViewTransform:
    """Two independent augmentations of one chip, reproducible from (seed, epoch, index).

    Each call seeds one numpy and one Python generator from ``SeedSequence([seed, epoch, index])`` and
    hands them to the Compose (``set_random_state``: two generator constructions per call, not one per
    transform); views a and b are consecutive draws from that state. The result therefore does not
    depend on which DataLoader worker computes it or on what it computed before.
    """

    def __init__(self, preset: str, image_size: int, seed: int,
                 crop_scale: tuple[float, float] | None = None) -> None:
        self.preset = preset
        self.image_size = image_size
        self.seed = seed
        self.compose = build_view_transform(preset, image_size, crop_scale=crop_scale)

    def __call__(self, image: np.ndarray, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, C) float32 in [0, 1] → two (C, image_size, image_size) float32 C-contiguous views.

        Raises:
            ValueError: if ``image`` is not a float32 (H, W, C) array.
        """
        _check_image(image)
        if self.preset in RGB_PRESETS and image.shape[-1] != 3:
            raise ValueError(f"augmentation preset {self.preset!r} is for RGB images, got {image.shape[-1]} channels")
        self.compose.set_random_state(*_generators(self.seed, epoch, index))
        return self._view(image), self._view(image)

    def _view(self, image: np.ndarray) -> np.ndarray:
        """One draw of the recipe, channels moved first: (H, W, C) → (C, S, S)."""
        view = self.compose(image=image)["image"].reshape(self.image_size, self.image_size, image.shape[-1])
        return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)


def _generators(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, random.Random]:
    """Independent numpy and Python generators for one (seed, epoch, index); all must be ≥ 0."""
    numpy_sequence, python_sequence = np.random.SeedSequence([seed, epoch, index]).spawn(2)
    return np.random.default_rng(numpy_sequence), random.Random(int(python_sequence.generate_state(1)[0]))


def _check_image(image: np.ndarray) -> None:
    """Albumentations treats uint8 and float differently; only float32 (H, W, C) in [0, 1] is meant."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.float32:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a float32 (H, W, C) array in [0, 1], got shape {shape} and dtype {dtype}")
