"""Near-duplicate chips across splits: the fingerprint's similarity against a naive formula, counts per split pair,
and ``drop`` removing exactly the val / test chips with a copy in train."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipeline.config_data import DomainDataConfig
from pipeline.data.chips import load_chipset
from pipeline.ingest.folder import DuplicatePolicy, ingest_folder
from pipeline.ingest.near_duplicates import find_near_duplicates, fingerprint, near_duplicate_sets
from pipeline.presets import PRESETS
from pipeline.report.build import near_duplicate_line


def test_fingerprints_correlate_thumbnails_and_ignore_brightness_and_contrast():
    rng = np.random.default_rng(0)
    image = rng.random((3, 64, 64), dtype=np.float32)
    valid = np.ones((64, 64), bool)
    brighter = np.clip(image * 0.8 + 0.1, 0, 1)  # a re-export with other contrast and brightness
    other = rng.random((3, 64, 64), dtype=np.float32)
    def thumb(x):  # 32 x 32 area thumbnail of the channel mean, minus its Gaussian blur (sigma 2)
        small = cv2.resize(x.mean(axis=0), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
        return (small - cv2.GaussianBlur(small, (0, 0), 2.0)).ravel()

    expected = np.corrcoef(thumb(image), thumb(other))[0, 1]  # Pearson correlation of the band-passed thumbnails
    assert float(fingerprint(image, valid) @ fingerprint(other, valid)) == pytest.approx(expected, abs=1e-5)
    assert float(fingerprint(image, valid) @ fingerprint(brighter, valid)) > 0.999
    assert not fingerprint(np.full((3, 64, 64), 0.5, np.float32), valid).any()  # a flat chip matches nothing


def test_counts_per_split_pair_and_same_label():
    prints = np.eye(6, 256, dtype=np.float32)
    prints[3] = prints[0]  # val chip 3 copies train chip 0 (same label)
    prints[4] = prints[1]  # test chip 4 copies train chip 1 (other label)
    prints[5] = prints[3]  # test chip 5 copies val chip 3 and train chip 0
    near = find_near_duplicates(prints, ["train", "train", "train", "val", "test", "test"],
                                ["a", "b", "c", "a", "a", "a"], 0.95)
    assert near.counts == {"train-val": {"chips": 1, "same_label": 1, "of_val": 1},
                           "train-test": {"chips": 2, "same_label": 1, "of_test": 2},
                           "val-test": {"chips": 1, "same_label": 1, "of_test": 2}}
    assert near.in_train.tolist() == [False, False, False, True, True, True]


@pytest.mark.parametrize("screen_dims", [32, 1024])  # screened in 32 principal directions of 64; not screened
def test_block_by_block_matches_equal_the_whole_similarity_matrix(monkeypatch, screen_dims):
    """Blocks of a few rows (as a large archive gets), the low-dimensional screen and label codes give the
    naive full-matrix answer, pair sets included."""
    import pipeline.ingest.near_duplicates as near_duplicates
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(1)
    prints = rng.normal(size=(300, 64)).astype(np.float32)
    copies = rng.choice(300, size=(60, 2), replace=False)
    prints[copies[:, 1]] = prints[copies[:, 0]] + rng.normal(scale=0.05, size=(60, 64)).astype(np.float32)
    prints /= np.linalg.norm(prints, axis=1, keepdims=True)
    splits = rng.choice(["train", "val", "test"], size=300, p=[0.6, 0.2, 0.2])
    labels = rng.choice(["", "a", "b"], size=300)
    monkeypatch.setattr(near_duplicates, "BLOCK_VALUES", 700)  # a few rows per block
    monkeypatch.setattr(near_duplicates, "SCREEN_DIMS", screen_dims)
    monkeypatch.setattr(near_duplicates, "SCREEN_FROM_PAIRS", 1000)  # 300 chips: screened as a large archive is
    near = find_near_duplicates(prints, splits.tolist(), labels.tolist(), 0.95)
    close = prints @ prints.T >= 0.95
    _, component = connected_components(close, directed=False)
    smallest = {c: int(np.flatnonzero(component == c).min()) for c in set(component)}
    assert near_duplicate_sets(prints, 0.95).tolist() == [smallest[c] for c in component]
    screen = near_duplicates.PairScreen(prints, 0.95, pairs=300 * 299 // 2)
    assert (screen.basis is not None) == (screen_dims < 64)
    assert near_duplicates.PairScreen(prints, 0.95, pairs=999).basis is None  # too few pairs to be worth it
    if screen.basis is not None:  # the screen passes few pairs, so its exact path is the one taken
        left = prints @ screen.basis
        distance = ((left[:, None, :] - left[None, :, :]) ** 2).sum(-1)
        assert (distance <= 0.1 + 1e-3).sum() < prints.shape[0] ** 2 / 16
    for first, second in near_duplicates.PAIRS:
        a, b = splits == first, splits == second
        hit = close[b][:, a].any(axis=1)
        same = ((close & (labels[:, None] == labels[None, :]))[b][:, a].any(axis=1)) & (labels[b] != "")
        assert near.counts[f"{first}-{second}"] == {"chips": int(hit.sum()), "same_label": int(same.sum()),
                                                     f"of_{second}": int(b.sum())}
    assert near.counts["train-test"]["same_label"] > 0 and near.in_train.sum() > 0


def test_ingest_reports_copies_under_other_names_and_drop_removes_them_from_val_and_test(tmp_path):
    rng = np.random.default_rng(1)
    source = tmp_path / "src"
    source.mkdir()
    rows = ["path,label,split"]
    for k in range(12):
        image = cv2.GaussianBlur(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(source / f"img_{k}.png"), image)
        rows.append(f"img_{k}.png,{'ab'[k % 2]},{'train' if k < 8 else 'test'}")
        if k < 3:  # re-exported copies, slightly brighter, under new names in the test split
            cv2.imwrite(str(source / f"copy_{k}.png"), cv2.convertScaleAbs(image, alpha=0.9, beta=12))
            rows.append(f"copy_{k}.png,{'ab'[k % 2]},test")
    (source / "labels.csv").write_text("\n".join(rows) + "\n")
    cfg = DomainDataConfig(preset="natural_rgb", source=str(source), chip_size=32)
    (tmp_path / "report").mkdir()
    report = ingest_folder(source, cfg, PRESETS["natural_rgb"], 0, tmp_path / "report")
    assert report["near_duplicates"]["train-test"] == {"chips": 3, "same_label": 3, "of_test": 7}
    assert "test chips with a train near-duplicate 3 of 7 (same label 3)" in near_duplicate_line(report["near_duplicates"])
    (tmp_path / "drop").mkdir()
    dropped = ingest_folder(source, cfg, PRESETS["natural_rgb"], 0, tmp_path / "drop",
                            duplicates=DuplicatePolicy("drop", 0.95))
    manifest = load_chipset(tmp_path / "drop").manifest
    assert dropped["near_duplicates"]["dropped"] == 3 and dropped["chips"]["kept"] == 12
    assert not any(row["source"].startswith("copy_") for row in manifest)
    assert [int(row["chip_id"]) for row in manifest] == list(range(12))
    assert json.loads((tmp_path / "drop" / "ingest_report.json").read_text())["near_duplicates"]["dropped"] == 3
    (tmp_path / "off").mkdir()
    assert "near_duplicates" not in ingest_folder(source, cfg, PRESETS["natural_rgb"], 0, tmp_path / "off",
                                                  duplicates=DuplicatePolicy("off"))


def test_near_duplicate_sets_join_transitively_and_leave_the_rest_alone():
    prints = np.eye(7, 64, dtype=np.float32)
    prints[3] = prints[0]
    prints[5] = 0.6 * prints[0] + 0.8 * prints[1]  # cosine 0.6 to 0 and 0.8 to 1: below 0.95, joins nothing
    prints[6] = prints[2]
    prints[4] = 0.0  # a flat chip matches nothing, not even another flat one
    from pipeline.ingest.near_duplicates import near_duplicate_sets

    assert near_duplicate_sets(prints, 0.95).tolist() == [0, 1, 2, 0, 4, 5, 2]
    assert near_duplicate_sets(prints, 0.5).tolist() == [0, 0, 2, 0, 4, 0, 2]  # 0~5~1 joins 0, 1, 3 and 5
    assert near_duplicate_sets(np.zeros((0, 64), np.float32), 0.95).tolist() == []


def _folder_with_copies(source, labelled_split: bool = False):
    rng = np.random.default_rng(2)
    source.mkdir()
    rows = ["path,label" + (",split" if labelled_split else "")]
    for k in range(30):
        image = cv2.GaussianBlur(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(source / f"img_{k:02d}.png"), image)
        rows.append(f"img_{k:02d}.png,{'ab'[k % 2]}" + (",train" if labelled_split else ""))
        if k < 10:  # re-exported copies under new names: other files, other groups
            cv2.imwrite(str(source / f"copy_{k:02d}.png"), cv2.convertScaleAbs(image, alpha=0.9, beta=12))
            rows.append(f"copy_{k:02d}.png,{'ab'[k % 2]}" + (",test" if labelled_split else ""))
    (source / "labels.csv").write_text("\n".join(rows) + "\n")


def test_group_keeps_each_picture_and_its_copies_in_one_split(tmp_path):
    source = tmp_path / "src"
    _folder_with_copies(source)
    cfg = DomainDataConfig(preset="natural_rgb", source=str(source), chip_size=32)
    outs = {}
    for mode in ("report", "group"):
        (tmp_path / mode).mkdir()
        report = ingest_folder(source, cfg, PRESETS["natural_rgb"], 0, tmp_path / mode,
                               duplicates=DuplicatePolicy(mode, 0.95))
        split = {row["source"]: row["split"] for row in load_chipset(tmp_path / mode).manifest}
        outs[mode] = report, split
    report, split = outs["report"]
    crossing = sum(split[f"copy_{k:02d}.png"] != split[f"img_{k:02d}.png"] for k in range(10))
    assert crossing > 0  # the automatic split by file separates some copies from their pictures
    report, split = outs["group"]
    assert all(split[f"copy_{k:02d}.png"] == split[f"img_{k:02d}.png"] for k in range(10))
    assert report["chips"]["kept"] == 40  # nothing dropped
    assert report["near_duplicates"]["grouped"] == {"sets": 10, "chips": 20}
    assert all(report["near_duplicates"][pair]["chips"] == 0 for pair in ("train-val", "train-test", "val-test"))
    assert "; grouped 20 chips in 10 sets into one split each (cosine" in near_duplicate_line(report["near_duplicates"])


def test_group_with_a_user_split_reports_and_says_it_could_not_regroup(tmp_path):
    source = tmp_path / "src"
    _folder_with_copies(source, labelled_split=True)
    cfg = DomainDataConfig(preset="natural_rgb", source=str(source), chip_size=32)
    (tmp_path / "out").mkdir()
    report = ingest_folder(source, cfg, PRESETS["natural_rgb"], 0, tmp_path / "out",
                           duplicates=DuplicatePolicy("group", 0.95))
    assert report["near_duplicates"]["train-test"]["chips"] == 10
    assert report["near_duplicates"]["grouped"] == "not applied: the split comes from labels.csv"
    assert "; not grouped (the split comes from labels.csv) (cosine" in near_duplicate_line(report["near_duplicates"])


def test_fingerprints_taken_while_value_ranges_map_the_chips_count_what_a_pass_of_their_own_counts(tmp_path,
                                                                                                   monkeypatch):
    """Scenes in a train-split value-range group, some re-exported darker at another place (so in other spatial
    blocks, other splits): the fingerprints the mapping pass takes give the report and cache of a separate pass."""
    from affine import Affine

    import pipeline.ingest.folder as folder
    from pipeline.ingest.ingested import IngestedChips
    from tests.fixtures.geotiff_files import GRID, config, ingest, write_raster

    rng = np.random.default_rng(7)
    source = tmp_path / "src"
    for k in range(6):
        data = np.stack([cv2.GaussianBlur(rng.integers(200, 4000, (64, 64)).astype(np.float32), (0, 0), 1.5)
                         for _ in range(2)]).astype(np.uint16)
        write_raster(source / f"scene_{k}.tif", data, transform=GRID @ Affine.translation(0, 640 * k))
        write_raster(source / f"copy_{k}.tif", (data * 0.9).astype(np.uint16),
                     transform=GRID @ Affine.translation(640 * (k + 8), 0))
    taking, counting = IngestedChips.map_pending_ranges, folder.find_near_duplicates
    outputs, prints = {}, {}
    for taken in (True, False):
        monkeypatch.setattr(IngestedChips, "map_pending_ranges", lambda self, splits, cfg, with_fingerprints=False,
                            taken=taken: taking(self, splits, cfg, with_fingerprints and taken))
        monkeypatch.setattr(folder, "find_near_duplicates", lambda found, *args, taken=taken: (
            prints.__setitem__(taken, np.stack(list(found))), counting(found, *args))[1])
        report = ingest(source, tmp_path / f"out_{taken}", config(block_size_px=32))
        outputs[taken] = report, {path.name: path.read_bytes() for path in (tmp_path / f"out_{taken}").iterdir()}
    assert prints[True].shape == (report["chips"]["kept"], 32 * 32) and np.array_equal(prints[True], prints[False])
    report = outputs[True][0]
    assert set(report["value_range"]["groups"]) == {"uint16"}
    assert report["near_duplicates"] == outputs[False][0]["near_duplicates"]
    assert sum(report["near_duplicates"][pair]["chips"] for pair in ("train-val", "train-test", "val-test")) > 0
    assert outputs[True][1] == outputs[False][1]
