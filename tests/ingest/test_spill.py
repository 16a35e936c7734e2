"""Ingest keeps its chips on disk while it reads a folder: the spilled list behaves as the in-memory list did,
and the cache it writes from it is byte for byte what stacking in memory wrote."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data.chips import channel_statistics
from pipeline.data.shards import write_stacked
from pipeline.ingest.spill import ChainedArrays, SpilledArrays, reopen


def _chips(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, (2, 4, 4)).astype(np.float32) for _ in range(n)]


def test_a_spilled_list_reads_assigns_and_keeps_like_a_list(tmp_path):
    reference = _chips()
    spilled = SpilledArrays(tmp_path / "images.bin", np.float32)
    spilled += reference[:3]
    for chip in reference[3:]:
        spilled.append(chip)
    assert len(spilled) == 7 and all(np.array_equal(a, b) for a, b in zip(spilled, reference))
    spilled[2] = reference[2] * 0 + 0.5
    reference[2] = reference[2] * 0 + 0.5
    keep = [True, False, True, True, False, True, True]
    spilled.keep(keep)
    reference = [chip for chip, kept in zip(reference, keep) if kept]
    assert len(spilled) == 5 and all(np.array_equal(spilled[i], reference[i]) for i in range(5))
    subset = spilled.subset([4, 1])
    assert [np.array_equal(a, b) for a, b in zip(subset, [reference[4], reference[1]])] == [True, True]
    assert list(map(len, [subset, subset])) == [2, 2] and np.array_equal(list(subset)[0], reference[4])  # re-iterable
    chip = spilled[0]
    chip += 1  # a read is the caller's own copy
    assert np.array_equal(spilled[0], reference[0])
    spilled.close()
    assert not (tmp_path / "images.bin").exists()


def test_chained_parts_read_as_one_list_and_assignments_leave_the_parts_as_written(tmp_path):
    reference, layouts = _chips(9), []
    for k, (start, stop) in enumerate(((0, 4), (4, 4), (4, 9))):  # the middle part holds nothing
        part = SpilledArrays(tmp_path / f"part{k}.bin", np.float32)
        part += reference[start:stop]
        part.keep([i != 5 for i in range(start, stop)])  # a part may have dropped chips itself
        layouts.append(part.layout())
        part.detach()
    written = {k: (tmp_path / f"part{k}.bin").read_bytes() for k in range(3)}
    chained = ChainedArrays([reopen(tmp_path, layout) for layout in layouts], tmp_path / "overlay.bin")
    expected = [chip for i, chip in enumerate(reference) if i != 5]
    assert len(chained) == 8 and all(np.array_equal(a, b) for a, b in zip(chained, expected))
    chained[6] = expected[6] * 0 + 0.25
    expected[6] = expected[6] * 0 + 0.25
    chained.keep([i != 0 for i in range(8)])
    assert all(np.array_equal(a, b) for a, b in zip(chained, expected[1:]))
    with pytest.raises(TypeError, match="take no new items"):
        chained.append(reference[0])
    chained.close()
    assert {k: (tmp_path / f"part{k}.bin").read_bytes() for k in range(3)} == written
    assert not (tmp_path / "overlay.bin").exists()


def test_an_adopted_list_is_read_in_place_not_copied(tmp_path):
    """A reader's spilled scene joins ingest's list by a rename: same items, no second write of its bytes."""
    reference = _chips(12, seed=3)
    main = SpilledArrays(tmp_path / "images.bin", np.float32)
    main += reference[:2]
    scene_dir = tmp_path / "files" / "scene"
    scene_dir.mkdir(parents=True)
    scene = SpilledArrays(scene_dir / "images.bin", np.float32)
    scene += reference[2:8]
    scene.keep([i != 4 for i in range(2, 8)])  # the reader dropped a constant chip
    inode = (scene_dir / "images.bin").stat().st_ino
    main.adopt(scene)
    main += reference[8:10]  # later files go on after it
    empty = SpilledArrays(tmp_path / "empty.bin", np.float32)
    main.adopt(empty)  # nothing to adopt: nothing changes
    empty.close()
    main.append(reference[10])
    expected = [chip for i, chip in enumerate(reference[:11]) if i != 4]
    assert len(main) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(main, expected))  # block reads across the files
    assert all(np.array_equal(main[i], expected[i]) for i in range(len(expected)))
    assert (tmp_path / "images.1.bin").stat().st_ino == inode and not (scene_dir / "images.bin").exists()
    assert (tmp_path / "images.bin").stat().st_size == 5 * expected[0].nbytes  # only its own items
    assert len(scene) == 0
    main[3] = expected[3] * 0 + 0.75  # an assignment lands in the adopted file
    expected[3] = expected[3] * 0 + 0.75
    main.keep([i != 0 for i in range(len(expected))])
    layout = main.layout()
    main.detach()
    again = reopen(tmp_path, layout)  # an ingest part's list, reopened by the merge
    assert all(np.array_equal(a, b) for a, b in zip(again, expected[1:]))
    chained = ChainedArrays([again], tmp_path / "overlay.bin")
    assert all(np.array_equal(chained[i], expected[1 + i]) for i in range(len(chained)))
    chained.close()
    again.close()
    assert not list(tmp_path.glob("images*.bin"))


def test_whole_numbers_are_stored_narrow_until_an_item_needs_float32(tmp_path):
    """uint16 storage while every item is whole and in range; the first that is not converts what is stored."""
    rng = np.random.default_rng(5)
    digital = [rng.integers(0, 65536, (2, 4, 4)).astype(np.float32) for _ in range(5)]
    spilled = SpilledArrays(tmp_path / "images.bin", np.float32, narrow_to=np.uint16)
    spilled += digital[:3]
    scene = SpilledArrays(tmp_path / "scene.bin", np.float32, narrow_to=np.uint16)
    scene += digital[3:]
    spilled.adopt(scene)  # both narrow: adopted as it is
    assert spilled.stored == np.uint16 and (tmp_path / "images.bin").stat().st_size == 3 * 2 * 16 * 2
    assert all(a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(spilled, digital))
    negative_zero = SpilledArrays(tmp_path / "zero.bin", np.float32, narrow_to=np.uint16)
    negative_zero.append(np.full((2, 4, 4), -0.0, np.float32))  # equal to 0, not the same bits: kept as float32
    assert negative_zero.stored == np.float32 and np.signbit(negative_zero[0]).all()
    negative_zero.close()
    decibels = [np.full((2, 4, 4), -12.5, np.float32), np.full((2, 4, 4), 70000.0, np.float32)]
    spilled.append(decibels[0])  # not a uint16 value: everything is widened to float32
    spilled.append(decibels[1])
    expected = digital + decibels
    assert spilled.stored == np.float32 and (tmp_path / "images.bin").stat().st_size == 5 * 2 * 16 * 4
    assert all(np.array_equal(a, b) for a, b in zip(spilled, expected))
    assert all(np.array_equal(spilled[i], expected[i]) for i in range(len(expected)))
    spilled.close()


@pytest.mark.parametrize("held", ["nothing", "whole", "fractional"])
@pytest.mark.parametrize("joining", ["whole", "fractional"])
def test_a_list_stored_otherwise_is_still_adopted_in_place(tmp_path, held, joining):
    """A scene spilled as float32 (scaled reflectances) joins a uint16 list, or the other way round: the narrow
    side is widened once and the scene's file is renamed, not copied item by item."""
    values = {"whole": [np.full((2, 4, 4), 9.0 * k, np.float32) for k in range(3)],
              "fractional": [np.full((2, 4, 4), 0.5 + k, np.float32) for k in range(3)], "nothing": []}
    main = SpilledArrays(tmp_path / "images.bin", np.float32, narrow_to=np.uint16)
    main += values[held]
    (tmp_path / "scene").mkdir()
    scene = SpilledArrays(tmp_path / "scene" / "images.bin", np.float32, narrow_to=np.uint16)
    scene += values[joining]
    inode = (tmp_path / "scene" / "images.bin").stat().st_ino
    main.adopt(scene)
    assert main.stored == (np.uint16 if {held, joining} <= {"nothing", "whole"} else np.float32)
    adopted = tmp_path / "images.1.bin"
    assert (adopted.stat().st_ino == inode) == (joining == "fractional" or held != "fractional")  # else widened
    assert adopted.stat().st_size == 3 * 2 * 16 * main.stored.itemsize
    assert (tmp_path / "images.bin").stat().st_size == len(values[held]) * 2 * 16 * main.stored.itemsize
    expected = values[held] + values[joining]
    assert all(np.array_equal(a, b) for a, b in zip(main, expected)) and len(main) == len(expected)
    main.close()


def test_chained_parts_stored_narrow_and_wide_read_as_one_list(tmp_path):
    whole = [np.full((2, 4, 4), 7.0 * k, np.float32) for k in range(3)]
    fractional = [np.full((2, 4, 4), 0.25 * k, np.float32) for k in range(1, 3)]
    layouts = []
    for k, items in enumerate((whole, fractional)):
        part = SpilledArrays(tmp_path / f"part{k}.bin", np.float32, narrow_to=np.uint16)
        part += items
        layouts.append(part.layout())
        part.detach()
    parts = [reopen(tmp_path, layout) for layout in layouts]
    assert [part.stored for part in parts] == [np.uint16, np.float32]
    chained = ChainedArrays(parts, tmp_path / "overlay.bin")
    assert all(np.array_equal(a, b) for a, b in zip(chained, whole + fractional))
    chained[1] = np.full((2, 4, 4), 0.5, np.float32)  # a merge's assignment goes to its own float32 file
    assert np.array_equal(chained[1], np.full((2, 4, 4), 0.5, np.float32))
    assert all(np.array_equal(a, b) for a, b in zip(reopen(tmp_path, layouts[0]), whole))  # part unchanged
    chained.close()


def test_block_reads_stop_at_gaps_and_missing_items(tmp_path, monkeypatch):
    import pipeline.ingest.spill as spill

    monkeypatch.setattr(spill, "READ_BLOCK_BYTES", 3 * 2 * 4 * 4 * 4)  # runs of at most three chips
    masks = SpilledArrays(tmp_path / "masks.bin", np.uint8, fill=255)
    items = [None if i % 4 == 1 else np.full((4, 4), i, np.uint8) for i in range(13)]
    masks += items
    order = [12, 0, 2, 3, 4, 5, 1, 7, 8, 9, 10, 6]
    got = list(masks.iter_items(order))
    assert [None if g is None else int(g[0, 0]) for g in got] == \
        [None if items[i] is None else i for i in order]


def test_missing_masks_read_back_as_none_and_are_stored_as_ignore(tmp_path):
    masks = SpilledArrays(tmp_path / "masks.bin", np.uint8, fill=255)
    masks += [None, None]
    assert not masks.any_present()
    masks.append(np.ones((3, 3), np.uint8))
    masks.append(None)
    assert masks.any_present() and masks[0] is None and masks[3] is None and masks[2].sum() == 9
    stored = np.fromfile(tmp_path / "masks.bin", np.uint8).reshape(4, 3, 3)
    assert (stored[[0, 1, 3]] == 255).all()
    with pytest.raises(ValueError, match="shape"):
        masks.append(np.ones((2, 2), np.uint8))


def test_written_chip_files_equal_numpy_save_of_the_stack(tmp_path):
    chips = _chips(11)
    write_stacked(tmp_path / "mine.npy", iter(chips), np.float32, count=11, shape=(2, 4, 4), chunk=3)
    np.save(tmp_path / "numpy.npy", np.stack(chips))
    assert (tmp_path / "mine.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()
    with pytest.raises(ValueError, match="10 arrays written, 11 announced"):
        write_stacked(tmp_path / "short.npy", iter(chips[:10]), np.float32, count=11, shape=(2, 4, 4))


@pytest.mark.parametrize("max_pixels", [10**9, 37, 50])
def test_streamed_channel_statistics_equal_the_stacked_formula(max_pixels):
    rng = np.random.default_rng(1)
    images = rng.normal(0.5, 0.2, (9, 3, 5, 5)).astype(np.float32)
    valid = rng.uniform(size=(9, 5, 5)) > 0.3
    per_channel = np.moveaxis(images, 1, 0)[:, valid]  # the formula before streaming, written out
    if per_channel.shape[1] > max_pixels:
        per_channel = per_channel[:, :: per_channel.shape[1] // max_pixels + 1]
    low, high = np.percentile(per_channel, [2, 98], axis=1)
    clipped = np.clip(per_channel, low[:, None], high[:, None]).astype(np.float64)
    mean, std = channel_statistics(list(images), list(valid), max_pixels=max_pixels)
    np.testing.assert_allclose(mean, clipped.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, np.maximum(clipped.std(axis=1), 1e-3), rtol=1e-12)
    assert mean == channel_statistics(np.array(images[::-1])[::-1], valid, max_pixels=max_pixels)[0]  # any buffer


def test_channel_statistics_are_exactly_rounded_sums_so_no_buffer_alignment_changes_them():
    """numpy's SIMD sums round differently with a buffer's alignment; every stage standardises by these numbers."""
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (6, 2, 16, 16)).astype(np.float32)
    valid = np.ones((6, 16, 16), bool)
    mean, std = channel_statistics(images, valid)
    for channel in range(2):
        pixels = [float(v) for v in images[:, channel].ravel()]
        low, high = np.percentile(np.array(pixels, np.float32), [2, 98])
        clipped = [min(max(v, float(low)), float(high)) for v in pixels]
        reference_mean = math.fsum(clipped) / len(clipped)
        assert mean[channel] == reference_mean
        assert std[channel] == math.sqrt(math.fsum((v - reference_mean) ** 2 for v in clipped) / len(clipped))
