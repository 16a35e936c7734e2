"""The report stage on a tiny fixture: every file appears, images have the promised size, numbers and
conclusions come from the inputs, and the HTML is self-contained."""

import base64
import csv
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline.atomic import write_json
from pipeline.config import EvaluateConfig, FinetuneConfig
from pipeline.data.chips import load_chipset, write_manifest
from pipeline.models.backbone import create_backbone
from pipeline.presets import PRESETS
from pipeline.report import compare, trained_result
from pipeline.report_build import ReportInputs, build_report
from pipeline.tasks.evaluate import evaluate_backbone, evaluate_floor

CLASSES = ["water", "forest"]
FIGURES = {  # name → (width, height) in pixels: figsize × 100 dpi
    "label_efficiency_remote.png": (600, 400),
    "label_efficiency_remote_finetune.png": (600, 400),  # the fine-tune sweep (evaluate.transfer_sweep)
    "pretrain_remote.png": (1400, 320),
    "augmentations_remote.png": (800, 400),  # 2 classes → 2 rows; chip, false colour, view a, view b
    "confusion_remote.png": (1260, 420),  # random, imagenet, simclr
    "embedding_remote.png": (1350, 420),
}


def _write_chip_cache(folder, n=60, size=32):
    rng = np.random.default_rng(0)
    labels = [CLASSES[i % 2] for i in range(n)]
    images = rng.uniform(0.1, 0.3, (n, 4, size, size)).astype(np.float32)
    for i, label in enumerate(labels):
        if label == "forest":
            images[i, 3, ::4] += 0.5  # NIR stripes: a texture cue
    splits = ["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    folder.mkdir(parents=True)
    np.save(folder / "chips.npy", images)
    np.save(folder / "valid.npy", np.ones((n, size, size), bool))
    write_manifest(folder / "manifest.csv", [{"chip_id": i, "split": s, "label": lab}
                                             for i, (s, lab) in enumerate(zip(splits, labels))])
    write_json(folder / "stats.json", {"channel_names": ["blue", "green", "red", "nir"], "classes": CLASSES,
                                       "mean": [0.2] * 4, "std": [0.1] * 4})


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    _write_chip_cache(root / "ingest" / "remote")
    chips = load_chipset(root / "ingest" / "remote")
    cfg = EvaluateConfig(label_fraction=0.5, label_fractions=[0.1, 0.5, 1.0], seeds=[0, 1],
                         finetune=FinetuneConfig(steps=2, batch_size=8))
    write_json(root / "evaluate" / "remote" / "floor.json", evaluate_floor(chips, cfg))
    for seed, init in enumerate(("random", "imagenet", "simclr")):
        make = lambda seed=seed: create_backbone("tf_efficientnet_lite0", "random", 4, seed=seed)[0]  # noqa: E731
        write_json(root / "evaluate" / "remote" / f"{init}.json",
                   {**evaluate_backbone(make, chips, cfg, "remote_multispectral", {"init": init}), "wall_s": 1.5})
    history = [{"epoch": 0, "knn_acc": 0.5}] + [
        {"epoch": e, "loss": 5 - e, "top1": 0.1 * e, "embedding_std": 0.05, "lr": 1e-3, "knn_acc": 0.6} for e in (1, 2)]
    write_json(root / "pretrain" / "remote" / "summary.json", {"history": history, "wall_s": 12.0, "metrics": {
        "final_loss": 3.0, "final_top1": 0.2, "final_embedding_std": 0.05, "knn_acc": 0.6, "knn_acc_before": 0.5}})
    build_report(ReportInputs(
        evaluate_dir=root / "evaluate", pretrain_dir=root / "pretrain", ingest_dir=root / "ingest",
        reports_dir=root / "reports", domains={"remote": PRESETS["remote_multispectral"]}, label_fraction=0.5,
        label_fractions=[0.1, 0.5, 1.0], seed=0, image_size=32, projection_dim=128, provenance={"seed": "0"},
    ))
    return root / "reports"


def test_every_figure_exists_with_its_size_and_content(report_dir):
    for name, size in FIGURES.items():
        image = Image.open(report_dir / "figures" / name)
        assert image.size == size, name
        assert np.asarray(image.convert("L")).std() > 5, f"{name} is blank"


def test_metrics_hold_headline_and_label_efficiency_protocols(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for init in ("floor", "random", "imagenet", "simclr"):
        for protocol in ("linear", "linear_10pct", "linear_50pct", "linear_100pct"):
            assert 0 <= metrics["remote"]["cls"][init][protocol]["auroc"] <= 1
    assert "wall_s" not in json.dumps(metrics)  # timings are provenance, never metrics
    with open(report_dir / "label_efficiency" / "remote.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [float(r["label_fraction"]) for r in rows] == [0.1, 0.5, 1.0]
    assert float(rows[-1]["simclr"]) == pytest.approx(metrics["remote"]["cls"]["simclr"]["linear_100pct"]["auroc"])
    simclr = metrics["remote"]["cls"]["simclr"]
    assert simclr["finetune_50pct"] == simclr["finetune"]  # the headline fraction is one point of the sweep
    with open(report_dir / "label_efficiency" / "remote_finetune.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["label_fraction", "floor", "random", "imagenet", "simclr"]
    assert float(rows[0]["random"]) == pytest.approx(metrics["remote"]["cls"]["random"]["finetune_10pct"]["auroc"])
    # nothing fine-tunes the image-statistics floor: its row is its linear probe, the trivial classifier
    assert float(rows[0]["floor"]) == pytest.approx(metrics["remote"]["cls"]["floor"]["linear_10pct"]["auroc"])


def test_markdown_numbers_come_from_the_results(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    markdown = (report_dir / "report.md").read_text()
    floor = metrics["remote"]["cls"]["floor"]["linear"]
    assert f"{floor['auroc']:.3f} ± {floor['auroc_ci95']:.3f}" in markdown
    for name in FIGURES:
        assert f"figures/{name}" in markdown
    assert "wall time remote: pretrain 12 s" in markdown


def test_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(FIGURES)
    assert all(Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100 for data in images)


def test_conclusions_follow_the_confidence_intervals():
    def summary(mean, half):
        return {"linear": {"auroc": mean, "auroc_ci95": half}}

    apart = {"simclr": summary(0.80, 0.02), "imagenet": summary(0.70, 0.02), "random": summary(0.50, 0.01)}
    assert "beats imagenet init by 0.100 AUROC (CIs do not overlap)" in compare(apart, "linear")
    close = {"simclr": summary(0.72, 0.05), "imagenet": summary(0.70, 0.05)}
    assert "no significant difference from imagenet init (+0.020 AUROC, CIs overlap)" in compare(close, "linear")
    worse = {"simclr": summary(0.60, 0.01), "imagenet": summary(0.70, 0.01)}
    assert "is worse than imagenet init" in compare(worse, "linear")
    below_floor = {"simclr": summary(0.60, 0.01), "random": summary(0.50, 0.01), "floor": summary(0.75, 0.02)}
    assert "is worse than the trivial floor by 0.150 AUROC (CIs do not overlap)" in compare(below_floor, "linear")
    assert "the trivial floor" not in compare(apart, "linear")  # no floor result, no floor clause
    all_labels = {"simclr": summary(0.80, 0.0), "imagenet": summary(0.79, 0.0)}
    assert "no significance claim" in compare(all_labels, "linear") and "beats" not in compare(all_labels, "linear")


@pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser")), reason="no headless Chromium")
def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", (report_dir / "report.html").as_uri()], check=True, timeout=120)
    assert np.asarray(Image.open(shot).convert("L")).std() > 5


def test_transfer_sections_describe_a_network_not_the_floor():
    floor, simclr = {"architecture": "per-pixel class prior"}, {"architecture": "unet"}
    assert trained_result({"floor": floor, "simclr": simclr}) is simclr  # the floor comes first in INIT_ORDER
    assert trained_result({"floor": floor}) is floor
