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
from pipeline.report.comparisons import compare_all
from pipeline.report.tables import read_results, trained_result
from pipeline.report.build import ReportInputs, build_report
from pipeline.floors import classification_floor
from pipeline.transfer.classification import evaluate_classification

CLASSES = ["water", "forest"]
FIGURES = {  # name → (width, height) in pixels: figsize × 100 dpi
    "label_efficiency_remote.png": (1200, 400),  # raw curves | SimCLR − ImageNet paired difference
    "label_efficiency_remote_finetune.png": (1200, 400),  # the fine-tune sweep (evaluate.transfer_sweep)
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
    write_json(root / "evaluate" / "remote" / "floor.json", classification_floor(chips, cfg))
    for seed, init in enumerate(("random", "imagenet", "simclr")):
        make = lambda seed=seed: create_backbone("tf_efficientnet_lite0", "random", 4, seed=seed)[0]  # noqa: E731
        write_json(root / "evaluate" / "remote" / f"{init}.json",
                   {**evaluate_classification(make, chips, cfg, "remote_multispectral", {"init": init}), "wall_s": 1.5})
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


def _summaries(report_dir):
    return json.loads((report_dir / "results.json").read_text())["summaries"]


def test_results_hold_every_protocol_and_the_curves_agree(report_dir):
    summaries = _summaries(report_dir)
    for init in ("floor", "random", "imagenet", "simclr"):
        for protocol in ("linear", "linear_10pct", "linear_50pct", "linear_100pct"):
            assert 0 <= summaries["remote"]["cls"][init][protocol]["auroc"] <= 1
    assert "wall_s" not in (report_dir / "results.json").read_text()  # timings are provenance, never metrics
    with open(report_dir / "label_efficiency" / "remote.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [float(r["label_fraction"]) for r in rows] == [0.1, 0.5, 1.0]
    assert float(rows[-1]["simclr"]) == pytest.approx(summaries["remote"]["cls"]["simclr"]["linear_100pct"]["auroc"])
    simclr = summaries["remote"]["cls"]["simclr"]
    assert simclr["finetune_50pct"] == simclr["finetune"]  # the headline fraction is one point of the sweep
    with open(report_dir / "label_efficiency" / "remote_finetune.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["label_fraction", "floor", "random", "imagenet", "simclr"]
    assert float(rows[0]["random"]) == pytest.approx(summaries["remote"]["cls"]["random"]["finetune_10pct"]["auroc"])
    # nothing fine-tunes the image-statistics floor: its row is its linear probe, the trivial classifier
    assert float(rows[0]["floor"]) == pytest.approx(summaries["remote"]["cls"]["floor"]["linear_10pct"]["auroc"])


def test_metrics_file_holds_only_the_headline(report_dir):
    """What `dvc exp show` reads: per row the primary metric of each init and SimCLR − ImageNet with its bounds."""
    metrics = json.loads((report_dir / "metrics.json").read_text())
    summaries = _summaries(report_dir)["remote"]["cls"]
    assert set(metrics) == {"remote"} and set(metrics["remote"]) == {"lin", "ft"}
    for row, protocol in (("lin", "linear"), ("ft", "finetune")):
        entry = metrics["remote"][row]
        assert set(entry) == {"floor", "random", "imagenet", "simclr", "Δ", "Δ_low", "Δ_high"}
        assert entry["Δ_low"] <= entry["Δ"] <= entry["Δ_high"]
        assert entry["simclr"] == summaries["simclr"][protocol]["auroc"]
    assert metrics["remote"]["ft"]["floor"] == summaries["floor"]["linear"]["auroc"]  # the floor's probe
    # the paired difference of the means over the same seeds (6-decimal stored probabilities: ~1e-6 apart)
    simclr, imagenet = (summaries[init]["linear"]["auroc"] for init in ("simclr", "imagenet"))
    assert metrics["remote"]["lin"]["Δ"] == pytest.approx(simclr - imagenet, abs=2e-4)


def test_verdict_table_opens_the_report_and_agrees_with_the_comparisons(report_dir):
    markdown = (report_dir / "report.md").read_text()
    comparisons = json.loads((report_dir / "results.json").read_text())["comparisons"]
    assert markdown.index("## Verdict") < markdown.index("## remote: classification") < markdown.index("## Provenance")
    verdict = markdown[markdown.index("## Verdict"):markdown.index("## remote: classification")]
    headline = [c for c in comparisons if c["fraction"] == 0.5]
    assert {(c["protocol"].split("_")[0], c["simclr_vs"]) for c in headline} == {
        (kind, other) for kind in ("linear", "finetune") for other in ("imagenet", "random", "floor")}
    for c in headline:
        cell = f"{c['delta']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] {c['verdict']}"
        assert cell in verdict, cell
        assert c["low"] <= c["delta"] <= c["high"]
        expected = "no detectable difference" if c["holm_p"] >= 0.05 else ("better" if c["delta"] > 0 else "worse")
        assert c["verdict"] == expected
    assert all(c["holm_p"] >= c["p"] for c in comparisons)  # Holm never lowers a p-value
    assert f"over all {len(comparisons)} comparisons" in markdown
    assert "remote, 50% labels:" in verdict  # the plain-words answer per domain


def test_markdown_numbers_come_from_the_results(report_dir):
    summaries = _summaries(report_dir)
    markdown = (report_dir / "report.md").read_text()
    floor = summaries["remote"]["cls"]["floor"]["linear"]
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


def test_html_colours_each_verdict_cell(report_dir):
    page = (report_dir / "report.html").read_text()
    comparisons = json.loads((report_dir / "results.json").read_text())["comparisons"]
    tones = {"better": "better", "worse": "worse", "no detectable difference": "none"}
    for c in (c for c in comparisons if c["fraction"] == 0.5):
        assert f'<td class="{tones[c["verdict"]]}">{c["delta"]:+.3f}' in page


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


def test_comparisons_side_by_side_equal_the_same_comparisons_one_after_another(report_dir):
    root = report_dir.parent
    results = {"remote": {"cls": read_results(root / "evaluate", ["remote"])["remote"]}}
    one_after_another = compare_all(results, seed=0)
    assert len(one_after_another) > 1
    assert repr(compare_all(results, seed=0, workers=2)) == repr(one_after_another)  # repr: nan == nan


def test_the_verdict_says_when_in_domain_pretraining_did_not_improve_on_its_start(tmp_path):
    from pipeline.report.build import pretraining_note
    from pipeline.atomic import write_json

    assert pretraining_note(tmp_path, "medical") == ""  # no pretraining summary: nothing to say
    for domain, (before, after) in {"medical": (0.46, 0.60), "remote": (0.84, 0.84)}.items():
        write_json(tmp_path / domain / "summary.json", {"start": {"init": "imagenet"},
                                                         "metrics": {"knn_acc_before": before, "knn_acc": after}})
    assert pretraining_note(tmp_path, "medical").startswith("medical: in-domain pretraining improved on its ImageNet")
    assert "**in-domain pretraining did not improve on its ImageNet starting weights** (validation kNN accuracy " \
           "0.840 → 0.840)" in pretraining_note(tmp_path, "remote")
    write_json(tmp_path / "remote" / "summary.json", {"start": {"init": "imagenet"}, "exported_epoch": 0,
                                                       "metrics": {"knn_acc_before": 0.84, "knn_acc": 0.84,
                                                                   "knn_acc_last": 0.79}})
    assert "(validation kNN accuracy 0.840 at the start, 0.790 at the end), so the stage exported the starting " \
           "weights" in pretraining_note(tmp_path, "remote")


def test_a_domain_without_classification_still_gets_its_pretraining_section_and_no_classification_rows(tmp_path):
    """grid.cls_domains leaves out a set labelled only by masks (e.g. fetal head ultrasound): no classification
    stages ran, so the report must neither fail on their absence nor print empty classification tables."""
    _write_chip_cache(tmp_path / "ingest" / "medical")
    history = [{"epoch": 0, "knn_acc": float("nan")}, {"epoch": 1, "loss": 4.0, "top1": 0.2, "embedding_std": 0.05,
                                                       "lr": 1e-3, "knn_acc": float("nan")}]
    write_json(tmp_path / "pretrain" / "medical" / "summary.json", {"history": history, "wall_s": 3.0, "metrics": {
        "final_loss": 4.0, "final_top1": 0.2, "final_embedding_std": 0.05, "knn_acc": float("nan"),
        "knn_acc_before": float("nan")}})
    headline = build_report(ReportInputs(
        evaluate_dir=tmp_path / "evaluate", pretrain_dir=tmp_path / "pretrain", ingest_dir=tmp_path / "ingest",
        reports_dir=tmp_path / "reports", domains={"medical": PRESETS["medical_colour"]}, label_fraction=0.5,
        label_fractions=[0.1, 0.5, 1.0], seed=0, image_size=32, projection_dim=128, provenance={"seed": "0"},
    ))
    text = (tmp_path / "reports" / "report.md").read_text()
    assert headline == {}
    assert "No classification for this domain (grid.cls_domains)" in text
    assert "medical: SimCLR pretraining" in text and "medical: classification" not in text
    assert "label efficiency" not in text
    assert "no kNN monitor (no labelled training and validation chips): the last weights are exported" in text
    assert (tmp_path / "reports" / "label_efficiency").is_dir()  # a DVC output of the report stage, even empty
