"""The data stages (demo, ingest) and the trivial floors of every task run without importing torch."""

from __future__ import annotations

import subprocess
import sys


from tests.fixtures.paths import REPO
ROOT = REPO
RUN_STAGE = ("import runpy, sys; sys.argv = ['{stage}', '--domain', 'medical', '--params', '{params}', *{extra}]; "
             "runpy.run_path('stages/{stage}.py', run_name='__main__'); "
             "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")


def test_data_stages_and_floors_run_without_torch(tmp_path, tiny_params):
    params = tiny_params
    for stage, extra in (("demo", []), ("ingest", []), *(("floor", ["--task", task]) for task in ("cls", "seg", "det"))):
        done = subprocess.run([sys.executable, "-c", RUN_STAGE.format(stage=stage, params=params, extra=extra)],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]", f"stages.{stage} {extra} imported {done.stdout}"
    assert (tmp_path / "reports" / "ingest" / "medical.json").is_file()
    for name in ("floor", "seg_floor", "det_floor"):
        assert (tmp_path / "evaluate" / "medical" / f"{name}.json").is_file()


def test_seeding_without_torch_seeds_python_and_numpy():
    code = ("import random, sys, numpy as np; from pipeline.seeding import configure_runtime; "
            "configure_runtime(7, uses_torch=False); a = (random.random(), np.random.rand()); "
            "configure_runtime(7, uses_torch=False); b = (random.random(), np.random.rand()); "
            "print(a == b, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]
