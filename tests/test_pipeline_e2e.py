"""Tiny-params `dvc repro` of the whole pipeline in a temporary copy of the repository."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "demo": {"medical": {"patients": 10, "slices_per_patient": 3, "image_size": 64},
             "remote": {"scenes": 2, "scene_size": 256}},
    "simclr": {"epochs": 2, "batch_size": 16, "image_size": 32, "knn_every_epochs": 1},
    "evaluate": {"seeds": [0, 1], "label_fraction": 0.5, "label_fractions": [0.5, 1.0],
                 "finetune": {"steps": 2, "batch_size": 8}, "segmentation": {"steps": 2, "batch_size": 4}},
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
    _run(["dvc", "repro", "--quiet"], root, env)
    return root, env


@pytest.mark.slow
def test_metrics_file_has_every_key(tiny_repo):
    root, _ = tiny_repo
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
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
        for init in ("simclr", "imagenet", "random"):
            assert 0 <= metrics[domain]["seg"][init]["finetune"]["miou"] <= 1
        for figure in ("label_efficiency", "pretrain", "augmentations", "confusion", "embedding", "segmentation"):
            assert (root / "reports" / "figures" / f"{figure}_{domain}.png").stat().st_size > 5000
        assert metrics[domain]["cls"]["simclr"]["linear_100pct"]["auroc"] >= 0


@pytest.mark.slow
def test_exp_show_exposes_the_columns(tiny_repo):
    root, env = tiny_repo
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], root, env))
    text = json.dumps(shown)
    for column in ("medical", "remote", "simclr", "imagenet", "floor", "auroc"):
        assert column in text


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
