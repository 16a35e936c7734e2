"""A large array is stored as .npy shards of bounded size and read back as if it were one array."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.shards import Shards, load_stacked, shard_paths, write_stacked


def _items(n=23, seed=0):
    return np.random.default_rng(seed).integers(0, 65535, (n, 2, 3, 3)).astype(np.uint16)


def test_shards_hold_at_most_their_size_and_read_back_as_the_whole_array(tmp_path):
    items = _items()
    write_stacked(tmp_path / "chips.npy", iter(items), np.uint16, count=23, shape=(2, 3, 3), chunk=4,
                  shard_bytes=7 * items[0].nbytes)
    paths = shard_paths(tmp_path / "chips.npy")
    assert [p.name for p in paths] == ["chips.npy", "chips-1.npy", "chips-2.npy", "chips-3.npy"]
    assert [len(np.load(p)) for p in paths] == [7, 7, 7, 2]
    stored = load_stacked(tmp_path / "chips.npy")
    assert isinstance(stored, Shards) and stored.shape == items.shape and len(stored) == 23
    np.testing.assert_array_equal(stored[:], items)
    np.testing.assert_array_equal(stored[6], items[6])
    np.testing.assert_array_equal(stored[-1], items[-1])
    across = np.array([22, 0, 7, 6, 13, 14])  # every shard boundary, out of order
    np.testing.assert_array_equal(stored[across], items[across])
    np.testing.assert_array_equal(stored[5:16:3], items[5:16:3])
    np.testing.assert_array_equal(stored[items[:, 0, 0, 0] > 30000], items[items[:, 0, 0, 0] > 30000])
    with pytest.raises(IndexError):
        stored[23]


def test_an_array_within_one_shard_is_the_plain_npy_numpy_writes(tmp_path):
    items = _items()
    write_stacked(tmp_path / "chips.npy", list(items), chunk=5)
    np.save(tmp_path / "numpy.npy", items)
    assert (tmp_path / "chips.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()
    assert shard_paths(tmp_path / "chips.npy") == [tmp_path / "chips.npy"]
    assert isinstance(load_stacked(tmp_path / "chips.npy"), np.memmap)


def test_a_count_that_does_not_match_the_items_is_an_error(tmp_path):
    items = _items(5)
    with pytest.raises(ValueError, match="4 arrays written, 5 announced"):
        write_stacked(tmp_path / "a.npy", iter(items[:4]), count=5, shape=(2, 3, 3), shard_bytes=2 * items[0].nbytes)
    with pytest.raises(ValueError, match="more than 4 arrays written, 4 announced"):
        write_stacked(tmp_path / "b.npy", iter(items), count=4, shape=(2, 3, 3))
