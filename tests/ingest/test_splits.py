"""Split functions checked with independent set / raster computations, not with the code under test."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from pipeline.ingest.splits import SPLITS, check_no_leakage, group_split, spatial_block_split


def splits_per_group(groups, splits) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for group, split in zip(groups, splits, strict=True):
        found[group].add(str(split))
    return found


def patients(n_groups: int, seed: int = 0) -> list[str]:
    """Items of ``n_groups`` patients, 1–5 images each, in shuffled order."""
    rng = np.random.default_rng(seed)
    items = [f"patient{g:03d}" for g in range(n_groups) for _ in range(rng.integers(1, 6))]
    return [items[i] for i in rng.permutation(len(items))]


def test_every_group_in_exactly_one_split():
    groups = patients(120)
    splits = group_split(groups, (0.6, 0.2, 0.2), seed=3)
    assert len(splits) == len(groups) and set(splits) <= set(SPLITS)
    assert all(len(found) == 1 for found in splits_per_group(groups, splits).values())
    check_no_leakage(groups, splits)


@pytest.mark.parametrize("fractions", [(0.6, 0.2, 0.2), (0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.5, 0.0)])
def test_fractions_respected_in_groups(fractions):
    groups = patients(200)
    found = splits_per_group(groups, group_split(groups, fractions, seed=0))
    per_split = Counter(next(iter(s)) for s in found.values())
    for name, fraction in zip(SPLITS, fractions, strict=True):
        assert abs(per_split[name] - fraction * 200) <= 2, per_split


def test_deterministic_and_independent_of_item_order():
    groups = patients(50)
    first = group_split(groups, (0.6, 0.2, 0.2), seed=7)
    np.testing.assert_array_equal(first, group_split(groups, (0.6, 0.2, 0.2), seed=7))
    order = np.random.default_rng(1).permutation(len(groups))
    reordered = group_split([groups[i] for i in order], (0.6, 0.2, 0.2), seed=7)
    by_group = dict(zip(groups, first, strict=True))
    assert dict(zip([groups[i] for i in order], reordered, strict=True)) == by_group
    others = [group_split(groups, (0.6, 0.2, 0.2), seed=s) for s in range(8, 12)]
    assert any((other != first).any() for other in others)


def test_every_split_gets_a_group_with_three_groups():
    for seed in range(20):
        splits = group_split(["a", "a", "b", "c", "c"], (0.98, 0.01, 0.01), seed=seed)
        assert set(splits) == set(SPLITS)
    assert set(group_split(["a", "b"], (0.6, 0.2, 0.2), seed=0)) <= set(SPLITS)
    assert len(group_split([], (0.6, 0.2, 0.2), seed=0)) == 0


def test_stratification_keeps_every_class_in_train():
    rng = np.random.default_rng(5)
    group_labels = {f"p{g}": "common" if g < 60 else ("rare" if g < 62 else f"single{g}") for g in range(65)}
    groups = [g for g in group_labels for _ in range(rng.integers(1, 4))]
    labels = [group_labels[g] for g in groups]
    for seed in range(10):
        splits = group_split(groups, (0.6, 0.2, 0.2), seed=seed, labels=labels)
        assert all(len(found) == 1 for found in splits_per_group(groups, splits).values())
        train_classes = {label for label, split in zip(labels, splits, strict=True) if split == "train"}
        assert train_classes == set(group_labels.values())
        assert set(splits) == set(SPLITS)


def test_stratification_balances_classes_across_splits():
    group_labels = {f"p{g}": ["a", "b", "c"][g % 3] for g in range(300)}
    groups = list(group_labels)
    labels = [group_labels[g] for g in groups]
    splits = group_split(groups, (0.6, 0.2, 0.2), seed=0, labels=labels)
    table = Counter(zip(labels, splits, strict=True))
    for label in "abc":
        assert table[(label, "train")] == 60 and table[(label, "val")] == 20 and table[(label, "test")] == 20


@pytest.mark.parametrize("fractions", [(0.5, 0.2, 0.2), (0.7, 0.4, -0.1), (0.5, 0.5), (np.nan, 0.5, 0.5)])
def test_bad_fractions_raise(fractions):
    with pytest.raises(ValueError, match="fractions"):
        group_split(["a", "b", "c"], fractions, seed=0)
    with pytest.raises(ValueError, match="fractions"):
        spatial_block_split(["s"], [0], [0], 64, fractions, seed=0)


def test_labels_must_match_groups():
    with pytest.raises(ValueError, match="length"):
        group_split(["a", "b"], (0.6, 0.2, 0.2), seed=0, labels=["x"])


def chip_grid(scenes: int, size_px: int, chip: int):
    ids, rows, cols = [], [], []
    for s in range(scenes):
        for r in range(0, size_px, chip):
            for c in range(0, size_px, chip):
                ids.append(f"scene{s}")
                rows.append(r)
                cols.append(c)
    return ids, rows, cols


def test_blocks_are_assigned_whole_and_deterministically():
    ids, rows, cols = chip_grid(scenes=2, size_px=1024, chip=32)
    splits = spatial_block_split(ids, rows, cols, 256, (0.6, 0.2, 0.2), seed=1)
    blocks = [(s, r // 256, c // 256) for s, r, c in zip(ids, rows, cols, strict=True)]
    assert all(len(found) == 1 for found in splits_per_group(blocks, splits).values())
    block_split = {b: s for b, s in zip(blocks, splits, strict=True)}
    per_split = Counter(block_split.values())  # 2 scenes × 4 × 4 = 32 blocks
    assert len(block_split) == 32
    for name, fraction in zip(SPLITS, (0.6, 0.2, 0.2), strict=True):
        assert abs(per_split[name] - fraction * 32) <= 1, per_split
    np.testing.assert_array_equal(splits, spatial_block_split(ids, rows, cols, 256, (0.6, 0.2, 0.2), seed=1))
    check_no_leakage([f"{b}" for b in blocks], splits)


@pytest.mark.parametrize("buffer_px", [1, 32, 70])
def test_buffer_separates_train_from_other_splits(buffer_px):
    chip, size = 32, 768
    ids, rows, cols = chip_grid(scenes=2, size_px=size, chip=chip)
    splits = spatial_block_split(ids, rows, cols, 128, (0.6, 0.2, 0.2), seed=2, buffer_px=buffer_px)
    assert (splits == "buffer").any()
    for scene in set(ids):
        held_out = np.zeros((size, size), dtype=bool)
        train = np.zeros((size, size), dtype=bool)
        for s, r, c, split in zip(ids, rows, cols, splits, strict=True):
            if s == scene and split in ("val", "test"):
                held_out[r:r + chip, c:c + chip] = True
        near = maximum_filter(held_out, size=2 * buffer_px + 1, mode="constant")  # Chebyshev dilation
        for s, r, c, split in zip(ids, rows, cols, splits, strict=True):
            if s != scene:
                continue
            touches = near[r:r + chip, c:c + chip].any()
            if split == "train":
                train[r:r + chip, c:c + chip] = True
                assert not touches, (r, c)  # every kept train pixel is ≥ buffer_px from held-out pixels
            elif split == "buffer":
                assert touches, (r, c)  # nothing is buffered without need
        assert train.any()
    check_no_leakage([f"{s}/{r // 128}/{c // 128}" for s, r, c in zip(ids, rows, cols, strict=True)], splits)


def test_buffer_with_explicit_chip_size_matches_inferred():
    ids, rows, cols = chip_grid(scenes=1, size_px=512, chip=64)
    inferred = spatial_block_split(ids, rows, cols, 128, (0.6, 0.2, 0.2), seed=0, buffer_px=10)
    explicit = spatial_block_split(ids, rows, cols, 128, (0.6, 0.2, 0.2), seed=0, buffer_px=10,
                                   chip_size_px=64)
    np.testing.assert_array_equal(inferred, explicit)
    no_buffer = spatial_block_split(ids, rows, cols, 128, (0.6, 0.2, 0.2), seed=0)
    assert "buffer" not in set(no_buffer)
    np.testing.assert_array_equal(no_buffer[inferred != "buffer"], inferred[inferred != "buffer"])


def test_check_no_leakage():
    check_no_leakage(["a", "a", "b", "c"], ["train", "train", "val", "test"])
    check_no_leakage(["a", "a", "b"], ["train", "buffer", "val"])
    with pytest.raises(ValueError, match="'b'"):
        check_no_leakage(["a", "b", "b"], ["train", "val", "test"])
    with pytest.raises(ValueError, match="unknown split"):
        check_no_leakage(["a"], ["holdout"])
    with pytest.raises(ValueError, match="length"):
        check_no_leakage(["a"], [])


def test_every_block_of_a_scene_that_overlaps_another_file_at_one_place_joins_it():
    from pipeline.ingest.splits import join_blocks_across_files

    # scene a has two blocks whose chips fall in cell X, where scene b's one block lies; cell Y is a's alone
    blocks = ["a#0/0", "a#0/1", "b#0/0", "a#1/1", "c#0/0"]
    scenes = ["a", "a", "b", "a", "c"]
    cells = ["X", "X", "X", "Y", ""]
    joined = join_blocks_across_files(blocks, scenes, cells)
    assert joined[0] == joined[1] == joined[2] == "a#0/0"  # both of a's blocks overlap b's: one group
    assert joined[3] == "a#1/1" and joined[4] == "c#0/0"  # a cell of one scene, or no CRS, joins nothing


def test_linked_chips_join_their_spatial_blocks_and_patient_groups():
    from pipeline.ingest.splits import join_units

    assert join_units(["p1", "p2", "p3", "p4"], [0, 1, 0, 3]) == ["p1", "p2", "p1", "p4"]
    assert join_units(["p2", "p1", "p3"], [0, 1, 1]) == ["p2", "p1", "p1"]  # named by the smallest
    # 40 scenes of one block each; scene k's chip is linked to scene k + 20's (a copy of the same picture)
    scenes = [f"scene{k:02d}" for k in range(40)]
    links = [k % 20 for k in range(40)]
    splits = spatial_block_split(scenes, [0] * 40, [0] * 40, 256, (0.6, 0.2, 0.2), seed=0, links=links)
    assert all(splits[k] == splits[k + 20] for k in range(20))
    unlinked = spatial_block_split(scenes, [0] * 40, [0] * 40, 256, (0.6, 0.2, 0.2), seed=0)
    assert any(unlinked[k] != unlinked[k + 20] for k in range(20))
