"""Box-aware augmentation for detection fine-tuning, each domain's recipe written as data.

The SimCLR recipes (:mod:`pipeline.augment`) crop hard and would cut boxes in half; here every spatial step
moves the boxes with the image (albumentations ``BboxParams``), and a box left with under half its area in
view is dropped rather than kept as a sliver. Each domain keeps its own rules: CT anatomy has a side, so
the medical recipe scales and shifts but never mirrors; overhead imagery has no "up", so the remote recipe
takes all 8 flips and rotations. Rotations by other angles are left out: a rotated box's axis-aligned
hull is looser than the object, which would teach the detector loose boxes.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np

BOX_AUGMENT_PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    "none": (),
    "medical_ct": (
        {"transform": "Affine", "scale": (0.85, 1.15), "translate_percent": (-0.08, 0.08), "fill": 0.0, "p": 0.7},
        {"transform": "MultiplicativeNoise", "multiplier": (0.9, 1.1), "per_channel": True, "elementwise": False,
         "p": 0.5},
    ),
    "medical_xray": (
        {"transform": "Affine", "scale": (0.9, 1.1), "translate_percent": (-0.06, 0.06), "fill": 0.0, "p": 0.7},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.15, "contrast_limit": 0.15,
         "brightness_by_max": False, "p": 0.5},
    ),
    "medical_mr": (
        {"transform": "Affine", "scale": (0.9, 1.1), "translate_percent": (-0.06, 0.06), "fill": 0.0, "p": 0.7},
        {"transform": "RandomGamma", "gamma_limit": (80, 125), "p": 0.5},
    ),
    "medical_colour": (
        {"transform": "HorizontalFlip", "p": 0.5},
        {"transform": "Affine", "scale": (0.85, 1.15), "translate_percent": (-0.08, 0.08), "fill": 0.0, "p": 0.7},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2,
         "brightness_by_max": False, "p": 0.5},
    ),
    "remote_multispectral": (
        {"transform": "D4", "p": 1.0},
        {"transform": "Affine", "scale": (0.85, 1.15), "translate_percent": (-0.08, 0.08), "fill": 0.0, "p": 0.5},
        {"transform": "MultiplicativeNoise", "multiplier": (0.9, 1.1), "per_channel": True, "elementwise": False,
         "p": 0.5},
    ),
    "remote_sar": (
        {"transform": "D4", "p": 1.0},
        {"transform": "Affine", "scale": (0.85, 1.15), "translate_percent": (-0.08, 0.08), "fill": 0.0, "p": 0.5},
        {"transform": "GaussianBlur", "sigma_limit": (0.1, 1.0), "p": 0.3},
    ),
    "natural_rgb": (
        {"transform": "HorizontalFlip", "p": 0.5},
        {"transform": "Affine", "scale": (0.8, 1.2), "translate_percent": (-0.1, 0.1), "fill": 0.0, "p": 0.7},
        {"transform": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
    ),
}

MIN_VISIBLE_FRACTION = 0.5


def build_box_transform(preset: str) -> A.Compose:
    """The domain's detection recipe: ``transform(image=(H, W, C), bboxes=(K, 4) x0 y0 x1 y1, labels=(K,))``.

    Raises:
        ValueError: for an unknown preset (the message lists the known ones).
    """
    if preset not in BOX_AUGMENT_PRESETS:
        raise ValueError(f"no box augmentation for preset {preset!r}; known: {sorted(BOX_AUGMENT_PRESETS)}")
    steps = [getattr(A, row["transform"])(**{k: v for k, v in row.items() if k != "transform"})
             for row in BOX_AUGMENT_PRESETS[preset]]
    return A.Compose(steps or [A.NoOp()], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                     min_visibility=MIN_VISIBLE_FRACTION, clip=True))


def augment_with_boxes(transform: A.Compose, image: np.ndarray, boxes: np.ndarray,
                       seed_words: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (C, S, S) chip and its (K', 5) x0, y0, x1, y1, class boxes; randomness fixed by ``seed_words``."""
    transform.set_random_seed(int(np.random.SeedSequence(seed_words).generate_state(1)[0]))
    hwc = np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.float32), 0, -1))
    out = transform(image=hwc, bboxes=np.asarray(boxes[:, :4], np.float32).reshape(-1, 4), labels=boxes[:, 4])
    moved = np.concatenate([np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
                            np.asarray(out["labels"], np.float32).reshape(-1, 1)], axis=1)
    return np.ascontiguousarray(np.moveaxis(out["image"], -1, 0)), moved
