"""Benchmark the demo pipeline: full `dvc repro` wall time, no-op `dvc repro` time, peak RSS.

Run from the repository root with the virtualenv's bin on PATH (``make bench``). It forces a full run
(`dvc repro -f`), so it takes as long as the demo itself. Targets on a 2-core CPU: full ≤ 900 s (the
whole domain × task × init matrix: classification, segmentation, detection), no-op ≤ 10 s, peak RSS ≤ 4 GB.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main() -> int:
    full = timed(["dvc", "repro", "-f"])
    noop = timed(["dvc", "repro"])
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux
    result = {"full_repro_s": round(full, 1), "noop_repro_s": round(noop, 1), "peak_rss_gb": round(peak_gb, 2)}
    print(json.dumps(result, indent=2))
    ok = full <= 900 and noop <= 10 and peak_gb <= 4
    print("targets met" if ok else "targets NOT met: full ≤ 900 s, no-op ≤ 10 s, peak RSS ≤ 4 GB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
