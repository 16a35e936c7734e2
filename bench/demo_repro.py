"""Benchmark the demo pipeline: full `dvc repro` wall time, no-op `dvc repro` time, peak RSS.

Run from the repository root with the virtualenv's bin on PATH (``make bench``). It forces a full run
(`dvc repro -f`), so it takes as long as the demo itself. Targets on a 2-core CPU: full ≤ 600 s (the
whole domain × task × init matrix: classification, segmentation, detection), no-op ≤ 10 s, peak RSS ≤ 4 GB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class MemorySampler(threading.Thread):
    """The machine's memory in use (total − available) above its level at the start, sampled every 0.2 s: the
    sum over every process of the run (the warm server and the side-by-side fine-tunes included), which a
    per-process peak RSS does not show."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.baseline, self.peak, self.running = self._in_use(), 0, True

    @staticmethod
    def _in_use() -> int:
        memory = psutil.virtual_memory()
        return memory.total - memory.available

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._in_use() - self.baseline)
            time.sleep(0.2)


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> int:
    warm_log = Path(tempfile.mkdtemp()) / "warm_stages.jsonl"
    os.environ["WARM_STAGES_LOG"] = str(warm_log)  # the training stages run as the warm server's children
    sampler = MemorySampler()
    sampler.start()
    full = timed(["dvc", "repro", "-f"])
    sampler.running = False
    noop = timed(["dvc", "repro"])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux
    runs = [json.loads(line) for line in warm_log.read_text().splitlines()] if warm_log.exists() else []
    peak_gb = max([peak_gb, *(run["max_rss_mb"] / 1024 for run in runs)])
    result = {"full_repro_s": round(full, 1), "noop_repro_s": round(noop, 1), "peak_rss_gb": round(peak_gb, 2),
              "peak_memory_in_use_gb": round(sampler.peak / 1024**3, 2), "warm_stage_runs": len(runs), "warm_stage_wall_s": round(sum(run["wall_s"] for run in runs), 1)}
    print(json.dumps(result, indent=2))
    ok = full <= 600 and noop <= 10 and max(peak_gb, sampler.peak / 1024**3) <= 4
    print("targets met" if ok else "targets NOT met: full ≤ 600 s, no-op ≤ 10 s, peak RSS ≤ 4 GB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
