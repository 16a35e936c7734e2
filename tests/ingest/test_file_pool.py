"""Reading with the main process and helpers: results in file order; large results through memory-mapped files.

References are plain ``map`` (task order), numpy's own ``np.save`` / ``np.load`` and the one-worker ingest
(which never spawns or spills).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pipeline.ingest.sources import FileChips
from pipeline.data.shards import write_stacked
from pipeline.ingest.file_pool import SPILL_BYTES, read_in_order, restore_spilled, spill_large
from tests.fixtures.geotiff_files import PRESET, config, reflectance, write_raster

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def chips(count: int, size: int = 64, channels: int = 4, seed: int = 0) -> FileChips:
    rng = np.random.default_rng(seed)
    images = [rng.random((channels, size, size), dtype=np.float32) for _ in range(count)]
    valid = [rng.random((size, size)) > 0.1 for _ in range(count)]
    return FileChips("scene.tif", images=images, valid=valid, rows=[{"row": i} for i in range(count)],
                     channel_names=[f"b{c}" for c in range(channels)])


def slow_reader(name: str) -> FileChips:
    """Stands in for a file reader: 30 ms per file, and says which process read it."""
    time.sleep(0.03)
    return FileChips(name, rows=[{"process": os.getpid()}])


def test_main_process_and_helper_both_read_and_results_keep_file_order():
    names = [f"file_{i:03d}" for i in range(80)]  # 2.4 s of reading: the helper starts within it
    results = list(read_in_order(slow_reader, names, workers=2))
    assert [r.relative for r in results] == names
    readers = [r.rows[0]["process"] for r in results]
    assert readers[0] == os.getpid() and readers[-1] != os.getpid()  # main from the front, helper from the back
    switch = readers.index(readers[-1])
    assert set(readers[:switch]) == {os.getpid()} and set(readers[switch:]) == {readers[-1]}


def test_a_small_folder_is_read_before_the_helper_starts_and_never_waits_for_it():
    """Helpers get chunks only once started (~1 s of imports): 3 files × 30 ms are all the main process's."""
    started = time.perf_counter()
    results = list(read_in_order(slow_reader, ["a", "b", "c"], workers=2))
    assert [r.relative for r in results] == ["a", "b", "c"]
    assert {r.rows[0]["process"] for r in results} == {os.getpid()}
    assert time.perf_counter() - started < 0.5  # the helper's import is not waited for


def test_one_worker_reads_in_the_main_process_only():
    assert {r.rows[0]["process"] for r in read_in_order(slow_reader, ["a", "b", "c"], workers=1)} == {os.getpid()}


def test_the_kernel_is_asked_for_the_next_files_up_to_the_read_ahead_budget(tmp_path, monkeypatch):
    import threading
    from types import SimpleNamespace

    import pipeline.ingest.file_pool as file_pool

    paths = []
    for index in range(30):
        paths.append(tmp_path / f"f{index:02d}")
        paths[-1].write_bytes(b"x" * 100)
    asked: list[tuple[int, int]] = []  # (file being handed out, file asked for)
    current = [-1]
    lock = threading.Lock()

    def record(path):
        with lock:
            asked.append((current[0], int(path.name[1:])))

    real_will_need = file_pool.will_need
    monkeypatch.setattr(file_pool, "READ_AHEAD_BYTES", 250)  # the two files after the current one
    monkeypatch.setattr(file_pool, "will_need", record)
    for index, task in enumerate(file_pool._read_ahead([SimpleNamespace(path=path) for path in paths])):
        with lock:
            current[0] = index
        time.sleep(0.002)  # decoding
    assert sorted(k for _, k in asked) == [k for _, k in asked]  # in file order, each once
    # never more than the budget (two files) ahead of the file handed out; one more while the hand-over is recorded
    assert all(k <= max(handed, 0) + 3 for handed, k in asked)
    assert [k for _, k in asked] == list(range(30))
    real_will_need(paths[0])  # the real call: no error for a file, none for a missing one either
    real_will_need(tmp_path / "missing")


def test_write_stacked_reads_back_as_numpy_saved_it(tmp_path):
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4) + i for i in range(5)]
    write_stacked(tmp_path / "mine.npy", arrays)
    np.save(tmp_path / "numpy.npy", np.stack(arrays))
    assert (tmp_path / "mine.npy").read_bytes() == (tmp_path / "numpy.npy").read_bytes()


def test_small_results_stay_in_the_pipe(tmp_path):
    small = chips(3)
    assert spill_large(small, tmp_path, "0") is small and not list(tmp_path.iterdir())


def test_large_results_round_trip_through_files(tmp_path):
    count = SPILL_BYTES // (4 * 64 * 64 * 4) + 1
    original = chips(count)
    spilled = spill_large(original, tmp_path, "7")
    assert spilled.images == [] and spilled.valid == [] and spilled.rows == original.rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.images.npy", "7.valid.npy"]
    restored = restore_spilled(spilled)
    assert not restored.spilled and len(restored.images) == count
    for mine, theirs in zip(restored.images + restored.valid, original.images + original.valid, strict=True):
        assert type(mine) is np.ndarray and mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    restored.images[0][:] = -1.0  # copy-on-write: the caller may modify a chip, the file stays as written
    assert np.array_equal(np.load(tmp_path / "7.images.npy")[0], original.images[0])


def test_two_workers_spill_scenes_and_write_the_same_cache(tmp_path):
    """Scenes big enough to spill (> SPILL_BYTES of chips each) give byte-identical caches with 1 and 2 workers."""
    from pipeline.ingest.folder import ingest_folder

    side = 768  # 4 bands of 768²: 576 chips of 32² = 9 MiB of float32 chips per scene
    assert 4 * side * side * 4 > SPILL_BYTES
    for n in range(2):
        write_raster(tmp_path / "src" / f"scene_{n}.tif", reflectance(n, 4, side), scales=[1e-4] * 4)
    cfg = config()
    reports = []
    for workers in (1, 2):
        out = tmp_path / f"out_{workers}"
        out.mkdir()
        reports.append(ingest_folder(tmp_path / "src", cfg, PRESET, 0, out, workers=workers, domain="remote"))
    assert reports[0] == reports[1] and reports[0]["chips"]["kept"] == 2 * (side // 32) ** 2
    for name in ("chips.npy", "valid_bits.npy", "manifest.csv", "stats.json"):
        assert (tmp_path / "out_1" / name).read_bytes() == (tmp_path / "out_2" / name).read_bytes(), name


def test_scenes_a_reader_spills_as_it_reads_give_the_same_cache_with_any_worker_count(tmp_path, monkeypatch):
    """A scene too large to hold goes to the spill chip by chip, in the main process or in a helper (whose
    spilled chips reach the main process as files); the cache is the bytes of an ingest that held them."""
    from pipeline.ingest import folder, spill
    from pipeline.ingest.folder import ingest_folder
    from pipeline.ingest.sources import FileChips

    spilled_scenes, original = [], FileChips.spill_to
    monkeypatch.setattr(FileChips, "spill_to", lambda self, where: spilled_scenes.append(self.relative)
                        or original(self, where))
    for n in range(3):
        write_raster(tmp_path / "src" / f"scene_{n}.tif", reflectance(n, 4, 256), scales=[1e-4] * 4)
    cfg, caches = config(), {}
    for name, threshold, workers in (("held", 1 << 40, 1), ("spilled", 0, 1), ("spilled_2", 0, 2)):
        monkeypatch.setattr(folder, "LARGE_FILE_BYTES", threshold)
        out = tmp_path / name
        out.mkdir()
        ingest_folder(tmp_path / "src", cfg, PRESET, 0, out, workers=workers, domain="remote")
        assert not (out / ".spill").exists()
        caches[name] = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "ingest_report.json"}
    assert spilled_scenes[:3] == ["scene_0.tif", "scene_1.tif", "scene_2.tif"]  # the 1-worker run spilled all
    assert caches["spilled"] == caches["held"] == caches["spilled_2"]
    assert spill.LARGE_FILE_BYTES == 256 * 2**20  # the module default is untouched
