"""Two-view SimCLR augmentation: shapes, range, determinism and the domain rules of docs/background.md §3–4."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.augment import AUGMENT_PRESETS, RGB_PRESETS, BandDropout, TwoViewTransform, build_view_transform

SIZE = 32
CHANNELS = (1, 3, 4, 13)
RANDOM_PRESETS = tuple(name for name in AUGMENT_PRESETS if name != "none")
ANY_CHANNEL_PRESETS = tuple(sorted(name for name in AUGMENT_PRESETS if name not in RGB_PRESETS))
PRESET_CHANNELS = [(p, c) for p in ANY_CHANNEL_PRESETS for c in CHANNELS] + [(p, 3) for p in sorted(RGB_PRESETS)]


def _channels_for(preset: str) -> int:
    return 3 if preset in RGB_PRESETS else 4
SIDE_SWAPPING = {"HorizontalFlip", "VerticalFlip", "Transpose", "D4", "SquareSymmetry", "RandomRotate90"}
RGB_ONLY = {"HueSaturationValue", "ColorJitter", "ToGray", "ToSepia", "RGBShift", "FancyPCA", "PlanckianJitter"}


def _chip(channels: int, side: int = 40, seed: int = 0) -> np.ndarray:
    """(side, side, C) float32 in [0, 1] with spatial structure, as a windowed CT or reflectance chip."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)
    image = 0.5 * ramp[:, None, None] * ramp[None, :, None] + 0.5 * rng.random((side, side, channels))
    return image.astype(np.float32)


def _left_bright(channels: int = 3, side: int = 48) -> np.ndarray:
    """Left half 1, right half 0: any horizontal flip puts the bright side on the right."""
    image = np.zeros((side, side, channels), dtype=np.float32)
    image[:, : side // 2] = 1.0
    return image


@pytest.mark.parametrize(("preset", "channels"), PRESET_CHANNELS)
def test_views_have_shape_dtype_and_range(preset: str, channels: int) -> None:
    transform = TwoViewTransform(preset, SIZE, seed=0)
    image = _chip(channels)
    for index in range(6):
        for view in transform(image, index=index, epoch=0):
            assert view.shape == (channels, SIZE, SIZE)
            assert view.dtype == np.float32 and view.flags.c_contiguous
            assert np.isfinite(view).all()
            assert view.min() >= 0.0 and view.max() <= 1.0


@pytest.mark.parametrize(("preset", "channels"), [(p, c) for p, c in PRESET_CHANNELS if p in RANDOM_PRESETS])
def test_two_views_differ(preset: str, channels: int) -> None:
    transform = TwoViewTransform(preset, SIZE, seed=0)
    view_a, view_b = transform(_chip(channels), index=3, epoch=1)
    assert not np.allclose(view_a, view_b)


@pytest.mark.parametrize("preset", RANDOM_PRESETS)
def test_same_seed_epoch_index_gives_identical_views(preset: str) -> None:
    """Independent of instance, of earlier calls (i.e. of the worker) and of pickling into a worker."""
    image = _chip(_channels_for(preset))
    first = TwoViewTransform(preset, SIZE, seed=7)
    expected = first(image, index=5, epoch=2)
    first(image, index=6, epoch=2)  # unrelated work in between must not matter
    again = first(image, index=5, epoch=2)
    fresh = TwoViewTransform(preset, SIZE, seed=7)(image, index=5, epoch=2)
    unpickled = pickle.loads(pickle.dumps(first))(image, index=5, epoch=2)
    for views in (again, fresh, unpickled):
        for got, want in zip(views, expected):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("preset", RANDOM_PRESETS)
def test_different_index_epoch_or_seed_gives_different_views(preset: str) -> None:
    image = _chip(_channels_for(preset))
    reference = TwoViewTransform(preset, SIZE, seed=7)(image, index=5, epoch=2)[0]
    variants = (
        TwoViewTransform(preset, SIZE, seed=7)(image, index=6, epoch=2)[0],
        TwoViewTransform(preset, SIZE, seed=7)(image, index=5, epoch=3)[0],
        TwoViewTransform(preset, SIZE, seed=8)(image, index=5, epoch=2)[0],
    )
    for other in variants:
        assert not np.allclose(other, reference)


def test_unknown_preset_is_named_with_known_ones() -> None:
    with pytest.raises(ValueError, match="ct_lungs") as info:
        build_view_transform("ct_lungs", SIZE)
    assert all(name in str(info.value) for name in AUGMENT_PRESETS)
    with pytest.raises(ValueError, match="ct_lungs"):
        TwoViewTransform("ct_lungs", SIZE, seed=0)


@pytest.mark.parametrize("image_size", [0, -3, 2.5, True])
def test_bad_image_size_is_rejected(image_size) -> None:
    with pytest.raises(ValueError, match="image_size"):
        build_view_transform("medical_ct", image_size)


@pytest.mark.parametrize("image", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)])
def test_non_float32_hwc_input_is_rejected(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match="float32"):
        TwoViewTransform("none", 8, seed=0)(image, index=0, epoch=0)


@pytest.mark.parametrize("channels", CHANNELS)
def test_none_preset_is_identity_at_same_size_and_area_resize_otherwise(channels: int) -> None:
    image = _chip(channels, side=SIZE)
    view_a, view_b = TwoViewTransform("none", SIZE, seed=0)(image, index=0, epoch=0)
    np.testing.assert_allclose(view_a, np.moveaxis(image, -1, 0), atol=1e-6)
    np.testing.assert_array_equal(view_a, view_b)
    halved = TwoViewTransform("none", SIZE // 2, seed=0)(image, index=0, epoch=0)[0]
    block_mean = image.reshape(SIZE // 2, 2, SIZE // 2, 2, channels).mean(axis=(1, 3))
    np.testing.assert_allclose(halved, np.moveaxis(block_mean, -1, 0), atol=1e-5)


@pytest.mark.parametrize("preset", ANY_CHANNEL_PRESETS)
def test_no_rgb_only_colour_transforms(preset: str) -> None:
    names = {type(t).__name__ for t in build_view_transform(preset, SIZE).transforms}
    assert not names & RGB_ONLY


@pytest.mark.parametrize("preset", sorted(RGB_PRESETS))
def test_rgb_preset_refuses_other_channel_counts(preset: str) -> None:
    with pytest.raises(ValueError, match="is for RGB images, got 4 channels"):
        TwoViewTransform(preset, SIZE, seed=0)(_chip(4), index=0, epoch=0)


def test_medical_ct_recipe_has_no_side_swapping_transform() -> None:
    steps = build_view_transform("medical_ct", SIZE).transforms
    assert not {type(t).__name__ for t in steps} & SIDE_SWAPPING
    for step in steps:  # a negative Affine scale would mirror too
        if type(step).__name__ == "Affine":
            assert min(step.scale["x"]) > 0 and min(step.scale["y"]) > 0


def _left_minus_right(preset: str, count: int) -> np.ndarray:
    """Mean(left half) − mean(right half) of ``count`` views of a left-bright image."""
    transform = TwoViewTransform(preset, SIZE, seed=11)
    image = _left_bright()
    views = np.stack([view for index in range(count) for view in transform(image, index=index, epoch=0)])
    return views[..., : SIZE // 2].mean(axis=(1, 2, 3)) - views[..., SIZE // 2 :].mean(axis=(1, 2, 3))


def test_medical_ct_never_flips_left_right() -> None:
    """Every CT view keeps the bright side on the left; the same check catches the flips of D4 below."""
    difference = _left_minus_right("medical_ct", count=60)
    assert (difference > 0).all()
    assert difference.mean() > 0.4


def test_remote_multispectral_uses_all_orientations() -> None:
    difference = _left_minus_right("remote_multispectral", count=60)
    assert (difference < -0.2).mean() > 0.1  # bright side moved right: flipped or rotated 180°
    assert (np.abs(difference) < 0.2).mean() > 0.2  # bright side moved to top or bottom: rotated 90°


def test_band_dropout_skips_one_channel_and_never_drops_every_band() -> None:
    dropout = BandDropout(channel_drop_range=(1, 2), fill=0.0, p=1.0)
    dropout.set_random_seed(0)
    single = np.full((8, 8, 1), 0.5, np.float32)
    np.testing.assert_array_equal(dropout(image=single)["image"], single)
    for channels in (2, 13):
        image = np.full((8, 8, channels), 0.5, np.float32)
        for _ in range(20):
            kept = (dropout(image=image)["image"] > 0).all(axis=(0, 1))
            assert 1 <= channels - kept.sum() <= min(2, channels - 1)


def test_crop_scale_replaces_the_presets_random_resized_crop_scale_only():
    default = build_view_transform("medical_colour", SIZE)
    narrowed = build_view_transform("medical_colour", SIZE, crop_scale=(0.6, 0.9))
    crops = [t for t in narrowed.transforms if type(t).__name__ == "RandomResizedCrop"]
    assert len(crops) == 1 and tuple(crops[0].scale) == (0.6, 0.9)
    assert [type(t).__name__ for t in narrowed.transforms] == [type(t).__name__ for t in default.transforms]
    assert tuple(next(t for t in default.transforms if type(t).__name__ == "RandomResizedCrop").scale) == (0.35, 1.0)
    # a whole-chip crop is the chip itself, resized: views differ only by the other steps
    whole = TwoViewTransform("medical_colour", SIZE, seed=0, crop_scale=(1.0, 1.0))
    assert whole(_chip(3, side=SIZE), index=0, epoch=0)[0].shape == (3, SIZE, SIZE)
