"""Plain image folders (CIFAR / STL-10 style): 8/16-bit PNG, JPEG, alpha; checked against Pillow's own reads."""

import numpy as np
import pytest
from PIL import Image

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import ingest_folder
from pipeline.presets import PRESETS
from tests.fixtures.params import repo_params as _params
from tests.fixtures.paths import REPO

CLASSES = ("airplane", "cat")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    source = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (source / "train" / name).mkdir(parents=True)
        for i in range(6):
            rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            rgb[..., c] = 255  # a colour cue per class
            Image.fromarray(rgb).save(source / "train" / name / f"{i}.png")
        grey16 = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
        Image.fromarray(grey16).save(source / "train" / name / "grey16.png")
        rgba = np.dstack([rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), np.full((32, 32), 255, np.uint8)])
        rgba[:8, :, 3] = 0  # a transparent strip → invalid pixels
        Image.fromarray(rgba, "RGBA").save(source / "train" / name / "alpha.png")
    (source / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return source


@pytest.fixture(scope="module")
def ingested(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("images_out")
    cfg = DomainDataConfig(preset="natural_rgb", source=str(image_folder), chip_size=32)
    report = ingest_folder(image_folder, cfg, PRESETS["natural_rgb"], 0, out, workers=2)
    return load_chipset(out), report


def test_chips_match_pillow(image_folder, ingested):
    chips, _ = ingested
    for row in chips.manifest:
        pil = Image.open(image_folder / row["source"])
        if pil.mode == "I;16" or pil.mode == "I":
            grey = np.asarray(pil, dtype=np.float32) / 65535
            expected = np.stack([grey] * 3)
        else:
            expected = np.moveaxis(np.asarray(pil.convert("RGB"), dtype=np.float32) / 255, -1, 0)
        np.testing.assert_allclose(chips.images[int(row["chip_id"])], expected, atol=1e-6, err_msg=row["source"])


def test_labels_from_folders_alpha_mask_and_rejection(ingested):
    chips, report = ingested
    assert chips.classes == list(CLASSES) and chips.channel_names == ["red", "green", "blue"]
    assert {row["label"] for row in chips.manifest} == set(CLASSES)
    alpha = [int(r["chip_id"]) for r in chips.manifest if r["source"].endswith("alpha.png")]
    assert all(not chips.valid[i][:8].any() and chips.valid[i][8:].all() for i in alpha)
    assert [r["path"] for r in report["rejected"]] == ["train/cat/broken.png"]
    assert report["rejected"][0]["reason"].startswith("train/cat/broken.png:")


def test_natural_preset_needs_a_folder():
    raw = _params()
    raw["data"]["photos"] = {"preset": "natural_rgb"}
    with pytest.raises(ConfigError, match=r"data\.photos\.source: preset 'natural_rgb' has no embedded demo"):
        parse_config(raw)
    assert load_config(REPO / "params.yaml")  # the repository's own params stay valid


def test_grey_images_are_one_channel_with_a_recipe_of_their_own(image_folder, tmp_path):
    from pipeline.augment import TwoViewTransform

    cfg = DomainDataConfig(preset="grey_images", source=str(image_folder), chip_size=32)
    ingest_folder(image_folder, cfg, PRESETS["grey_images"], 0, tmp_path)
    chips = load_chipset(tmp_path)
    assert chips.in_chans == 1 and len(chips.channel_names) == 1
    for row in chips.manifest[:4]:  # colour files averaged to grey (BT.601), checked against Pillow's "L"-free formula
        rgb = np.asarray(Image.open(image_folder / row["source"]).convert("RGB"), np.float32) / 255
        if row["source"].endswith(("alpha.png", "grey16.png")):
            continue
        grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        np.testing.assert_allclose(np.asarray(chips.images[int(row["chip_id"])])[0], grey, atol=1e-4)
    views = TwoViewTransform("grey_images", 24, seed=0)(np.asarray(chips.images[0]).transpose(1, 2, 0).copy(),
                                                          index=0, epoch=1)
    assert [view.shape for view in views] == [(1, 24, 24)] * 2 and not np.array_equal(*views)


def test_a_channel_count_the_preset_s_recipe_cannot_take_names_the_preset_to_use(image_folder):
    raw = _params()
    raw["data"]["photos"] = {"preset": "natural_rgb", "source": str(image_folder), "image": {"channels": 1}}
    with pytest.raises(ConfigError, match=r"data\.photos\.image\.channels: 1 does not fit preset 'natural_rgb', "
                                          r"whose augmentation is for 3 channel\(s\); use preset 'grey_images' for 1"):
        parse_config(raw)
    raw["data"]["photos"]["preset"] = "grey_images"
    assert parse_config(raw).data["photos"].image.channels == 1
