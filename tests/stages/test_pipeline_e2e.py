"""Tiny-params `dvc repro` of the whole pipeline in a temporary copy of the repository."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import torch
import yaml
from tests.fixtures.paths import REPO

TINY = {
    "demo": {"medical": {"patients": 10, "slices_per_patient": 3, "image_size": 64},
             "remote": {"scenes": 2, "scene_size": 256}},
    "simclr": {"epochs": 2, "batch_size": 16, "image_size": 32, "knn_every_epochs": 1},
    "evaluate": {"seeds": [0, 1], "label_fraction": 0.5, "label_fractions": [0.5, 1.0],
                 "transfer_sweep": ["finetune", "seg", "det"],
                 "finetune": {"steps": 2, "batch_size": 8}, "segmentation": {"steps": 2, "batch_size": 4},
                 "detection": {"steps": 2, "batch_size": 4}},
}
EXPECTED_INITS = {"simclr": ("linear", "finetune"), "imagenet": ("linear", "finetune"),
                  "random": ("linear", "finetune"), "floor": ("linear",)}
METRICS = ("acc", "balanced_acc", "macro_f1", "auroc")


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) else value
    return base


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file() and not name.startswith(("reports/", "dvc.lock")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = _merge(yaml.safe_load((root / "params.yaml").read_text()), TINY)
    params["data"]["remote"]["chip_size"] = 32
    params["data"]["remote"]["geotiff"]["block_size_px"] = 64
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(cmd, root, env)
    done = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    (root / "repro.log").write_text(done.stdout + done.stderr)  # every stage's log, for the PHI scan
    assert done.returncode == 0, f"dvc repro failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return root, env


@pytest.mark.slow
def test_metrics_file_has_every_key(tiny_repo):
    root, _ = tiny_repo
    metrics = json.loads((root / "reports" / "results.json").read_text())["summaries"]
    headline = json.loads((root / "reports" / "metrics.json").read_text())
    for domain in ("medical", "remote"):
        assert set(headline[domain]) == {"lin", "ft", "seg", "det"}
        for row in headline[domain].values():
            assert set(row) >= {"floor", "random", "imagenet", "simclr", "Δ", "Δ_low", "Δ_high"}
    assert "Holm" in (root / "reports" / "report.md").read_text()
    for domain in ("medical", "remote"):
        for init, protocols in EXPECTED_INITS.items():
            for protocol in protocols:
                for metric in METRICS:
                    value = metrics[domain]["cls"][init][protocol][metric]
                    assert math.isfinite(value), f"{domain}.cls.{init}.{protocol}.{metric} = {value}"
                    assert 0.0 <= value <= 1.0
    report = (root / "reports" / "report.md").read_text()
    assert "medical" in report and "simclr" in report and "±" in report
    assert "data:image/png;base64" in (root / "reports" / "report.html").read_text()
    for domain in ("medical", "remote"):
        for init in ("floor", "simclr", "imagenet", "random"):
            assert 0 <= metrics[domain]["seg"][init]["finetune"]["miou"] <= 1
            map50 = metrics[domain]["det"][init]["finetune"]["map50"]  # NaN only if the tiny test split has no box
            assert math.isnan(map50) or 0 <= map50 <= 1
        for figure in ("label_efficiency", "pretrain", "augmentations", "confusion", "embedding", "segmentation"):
            assert (root / "reports" / "figures" / f"{figure}_{domain}.png").stat().st_size > 5000
        assert metrics[domain]["cls"]["simclr"]["linear_100pct"]["auroc"] >= 0
        for task, protocol in (("cls", "finetune_100pct"), ("seg", "finetune_100pct"), ("det", "finetune_100pct")):
            assert protocol in metrics[domain][task]["simclr"], f"{domain}.{task}: no label-fraction sweep"
        for suffix in ("_finetune", "_seg"):
            assert (root / "reports" / "label_efficiency" / f"{domain}{suffix}.csv").is_file()


def _demo_identifiers(demo: Path) -> set[str]:
    """The raw PatientName, PatientID, PatientBirthDate and AccessionNumber of every demo DICOM file."""
    values = set()
    for path in demo.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(ds.get(key, "")) for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")}
    return {value for value in values if value}


@pytest.mark.slow
def test_no_patient_identifier_in_any_output(tiny_repo):
    """Manifests, reports, metrics, figures, checkpoints, dvc.lock and the stage logs: every byte the pipeline
    wrote is searched for every raw identifier of the demo's patients (the demo DICOMs themselves and DVC's
    cache copies of them excepted)."""
    root, _ = tiny_repo
    identifiers = _demo_identifiers(root / "data" / "demo" / "medical")
    assert len(identifiers) > 10
    inputs = (root / ".git", root / ".dvc" / "cache", root / "data" / "demo")
    outputs = [p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(skip) for skip in inputs)]
    assert any(p.name == "manifest.csv" for p in outputs) and (root / "dvc.lock") in outputs
    leaks = []
    for path in outputs:
        written = path.read_bytes()
        leaks += [f"{path.relative_to(root)}: {value}" for value in identifiers if value.encode() in written]
    assert not leaks, leaks


@pytest.mark.slow
def test_exp_show_exposes_the_columns(tiny_repo):
    root, env = tiny_repo
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root, env))
    metrics = shown[0]["data"]["metrics"]["reports/metrics.json"]["data"]

    def leaves(node):
        return sum(leaves(v) for v in node.values()) if isinstance(node, dict) else 1

    assert set(metrics) == {"medical", "remote"}
    assert {"floor", "random", "imagenet", "simclr", "Δ", "Δ_low", "Δ_high"} <= set(metrics["medical"]["seg"])
    assert leaves(metrics) <= 56  # the headline only: 2 domains x 4 rows x (4 inits + 3 bounds), not ~1,000 columns


@pytest.mark.slow
def test_second_repro_is_a_no_op(tiny_repo):
    root, env = tiny_repo
    output = _run(["dvc", "status"], root, env)
    assert "changed" not in output, output


@pytest.mark.slow
def test_pretrain_stage_runs_unchanged_under_torchrun(tiny_repo):
    root, env = tiny_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"].update(pretrain="data/ddp/pretrain", checkpoints="data/ddp/checkpoints", reports="data/ddp/reports")
    (root / "params_ddp.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "stages.pretrain", "--domain", "remote", "--params", "params_ddp.yaml"], root, env)
    export = root / "data" / "ddp" / "pretrain" / "remote"
    summary = json.loads((export / "summary.json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]
    assert math.isfinite(summary["metrics"]["final_loss"])
    assert (export / "backbone.pth").is_file() and (root / "data/ddp/checkpoints/remote/last.pt").is_file()


def _params_copy(root: Path, name: str, run: str, **simclr) -> str:
    """A params file whose SimCLR outputs go to data/<run>/ (the tiny repo's DVC outputs stay untouched)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["paths"].update(pretrain=f"data/{run}/pretrain", checkpoints=f"data/{run}/checkpoints",
                           reports=f"data/{run}/reports")
    params["simclr"].update(simclr)
    (root / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


@pytest.mark.slow
def test_kill_9_during_pretraining_then_rerun_ends_like_an_uninterrupted_run(tiny_repo):
    root, env = tiny_repo
    options = {"epochs": 3, "batch_size": 8, "checkpoint_every_steps": 1}  # 2 steps per epoch on the tiny split
    stage = [sys.executable, "-m", "stages.pretrain", "--domain", "medical", "--params"]
    _run(stage + [_params_copy(root, "params_whole.yaml", "whole", **options)], root, env)
    crashed = _params_copy(root, "params_crash.yaml", "crash", **options)
    checkpoint = root / "data" / "crash" / "checkpoints" / "medical" / "last.pt"
    process = subprocess.Popen(stage + [crashed], cwd=root, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # kill -9 right after the first (mid-epoch) checkpoint
    process.wait()
    assert not (root / "data" / "crash" / "pretrain" / "medical").exists(), "the run finished before the kill"
    steps_done = torch.load(checkpoint, weights_only=False)["step"]
    assert 0 < steps_done < 6
    done = subprocess.run(stage + [crashed], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming SimCLR" in done.stderr
    whole, resumed = (root / "data" / run / "pretrain" / "medical" for run in ("whole", "crash"))
    assert json.loads((whole / "summary.json").read_text())["history"] == \
        json.loads((resumed / "summary.json").read_text())["history"]
    expected, got = (torch.load(path / "backbone.pth", weights_only=True) for path in (whole, resumed))
    assert expected.keys() == got.keys()
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]), key
