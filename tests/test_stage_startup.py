"""The data stages (demo, ingest) and the classification / segmentation floors run without importing torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN_STAGE = ("import runpy, sys; sys.argv = ['{stage}', '--domain', 'medical', '--params', '{params}', *{extra}]; "
             "runpy.run_path('stages/{stage}.py', run_name='__main__'); "
             "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")


def _tiny_params(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["paths"].update({key: str(tmp_path / key) for key in ("demo", "ingest", "evaluate", "reports")})
    params["demo"]["medical"] = {"patients": 10, "slices_per_patient": 3, "image_size": 32}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_data_stages_and_floors_run_without_torch(tmp_path):
    params = _tiny_params(tmp_path)
    floor = ["--init", "floor"]
    for stage, extra in (("demo", []), ("ingest", []), ("evaluate", floor), ("segment", floor)):
        done = subprocess.run([sys.executable, "-c", RUN_STAGE.format(stage=stage, params=params, extra=extra)],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]", f"stages.{stage} {extra} imported {done.stdout}"
    assert (tmp_path / "reports" / "ingest" / "medical.json").is_file()
    for name in ("floor", "seg_floor"):
        assert (tmp_path / "evaluate" / "medical" / f"{name}.json").is_file()


def test_seeding_without_torch_seeds_python_and_numpy():
    code = ("import random, sys, numpy as np; from pipeline.seeding import configure_runtime; "
            "configure_runtime(7, uses_torch=False); a = (random.random(), np.random.rand()); "
            "configure_runtime(7, uses_torch=False); b = (random.random(), np.random.rand()); "
            "print(a == b, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]
