"""The chip cache stores [0, 1] chips as uint16 and valid masks as bits, and hands them out as float32 and bool,
indexed like the arrays they stand for; caches in the float32 format before it still load."""

from __future__ import annotations

import numpy as np

from pipeline.data.chips import UNIT_SCALE, load_chipset, write_chipset
from pipeline.data.shards import write_stacked
from tests.fixtures.stored import STORED_ATOL


def _chips(n=10, channels=3, size=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (n, channels, size, size)).astype(np.float32)
    images[0, 0, 0, :3] = [0.0, 1.0, 0.5 / UNIT_SCALE]  # the ends of the range and a tie
    valid = rng.uniform(size=(n, size, size)) > 0.2
    rows = [{"chip_id": i, "split": "train", "label": "a"} for i in range(n)]
    stats = {"classes": ["a"], "channel_names": list("rgb"[:channels]), "mean": [0.5] * channels,
             "std": [0.2] * channels, "chip_size": size}
    return images, valid, rows, stats


def test_chips_and_valid_masks_come_back_as_written_within_the_stored_step(tmp_path):
    images, valid, rows, stats = _chips()
    masks = [np.full((12, 12), i % 3, np.uint8) for i in range(9)] + [None]
    write_chipset(tmp_path, list(images), list(valid), rows, stats, masks)
    chips = load_chipset(tmp_path)
    assert chips.images.shape == images.shape and chips.images[3].dtype == np.float32
    np.testing.assert_allclose(chips.images[:], images, rtol=0, atol=STORED_ATOL)
    assert chips.images[0][0, 0, 0] == 0.0 and chips.images[0][0, 0, 1] == 1.0
    np.testing.assert_array_equal(chips.valid[:], valid)
    np.testing.assert_array_equal(chips.valid[np.array([7, 2])], valid[[7, 2]])
    np.testing.assert_array_equal(np.asarray(chips.valid), valid)
    assert chips.images[[4, 1]].shape == (2, 3, 12, 12) and np.asarray(chips.images).dtype == np.float32
    assert (chips.masks[9] == 255).all() and (chips.masks[4] == 1).all()


def test_the_cache_takes_about_half_the_bytes_of_float32_chips_and_bool_masks(tmp_path):
    images, valid, rows, stats = _chips(n=40, channels=4, size=64)
    write_chipset(tmp_path, images, valid, rows, stats)
    stored = (tmp_path / "chips.npy").stat().st_size + (tmp_path / "valid_bits.npy").stat().st_size
    assert stored <= 0.53 * (images.nbytes + valid.nbytes)


def test_a_float32_cache_of_the_earlier_format_still_loads(tmp_path):
    images, valid, rows, stats = _chips()
    write_chipset(tmp_path, images, valid, rows, stats)
    np.save(tmp_path / "chips.npy", images)
    np.save(tmp_path / "valid.npy", valid)
    (tmp_path / "valid_bits.npy").unlink()
    chips = load_chipset(tmp_path)
    assert chips.images[2].tobytes() == images[2].tobytes()
    np.testing.assert_array_equal(chips.valid[:], valid)


def test_a_sharded_cache_loads_as_one(tmp_path):
    images, valid, rows, stats = _chips(n=10)
    write_chipset(tmp_path, images, valid, rows, stats)
    whole = load_chipset(tmp_path).images[:]  # a copy: the file is rewritten below, never while mapped
    stored = np.load(tmp_path / "chips.npy")
    write_stacked(tmp_path / "chips.npy", list(stored), shard_bytes=3 * stored[0].nbytes)  # 4 shards
    assert len(list(tmp_path.glob("chips*.npy"))) == 4
    sharded = load_chipset(tmp_path)
    np.testing.assert_array_equal(sharded.images[:], whole)
    np.testing.assert_array_equal(sharded.images[[9, 2, 3]], whole[[9, 2, 3]])
