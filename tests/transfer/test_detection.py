"""Detection transfer: box cache, box geometry per chip kind, mAP hand cases, exact weight transfer, the
identity input transform, a tiny fine-tune + evaluation, and config errors naming the key."""

import json

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import ConfigError, DetectionConfig, EvaluateConfig, parse_config
from pipeline.data.chips import ChipSet, load_chipset, read_box_cache, write_chipset
from pipeline.ingest.boxes import boxes_for_chips, chip_boxes
from pipeline.metrics import detection_map
from pipeline.models.backbone import create_backbone, export_backbone
from pipeline.runtime import Compute
from pipeline.augment_boxes import BOX_AUGMENT_PRESETS, augment_with_boxes, build_box_transform
from pipeline.floors import box_prior, detection_floor
from pipeline.transfer.detection import ARCHITECTURES, DetectionTask, build_detector, evaluate_detection
from pipeline.transfer.engine import fine_tune

NAME = "tf_efficientnet_lite0"


def _coco(images: list[tuple[str, int, int]], boxes: list[tuple[int, list[float], int]]) -> dict:
    """COCO dict: images (file_name, width, height) with ids 1.., annotations (image id, xywh, category id)."""
    return {"images": [{"id": i + 1, "file_name": f, "width": w, "height": h} for i, (f, w, h) in enumerate(images)],
            "annotations": [{"id": n + 1, "image_id": i, "bbox": b, "category_id": c, "iscrowd": 0, "area": 1}
                            for n, (i, b, c) in enumerate(boxes)],
            "categories": [{"id": 7, "name": "cyst"}, {"id": 9, "name": "tumour"}]}


def test_box_cache_round_trip_keeps_annotated_negatives_and_unannotated_chips_apart(tmp_path):
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir(), out.mkdir()
    coco = _coco([("a.dcm", 64, 64), ("empty.dcm", 64, 64)], [(1, [10, 20, 8, 6], 9), (1, [0, 0, 4, 4], 7)])
    (source / "boxes.json").write_text(json.dumps(coco))
    rows = [{"source": "a.dcm", "frame": 0}, {"source": "empty.dcm", "frame": 0}, {"source": "other.dcm", "frame": 0},
            {"source": "a.dcm", "frame": 1}]
    assert boxes_for_chips(rows, out, 64) is None  # no COCO file in the source: no boxes
    stats = {"channel_names": ["c"], "classes": [], "mean": [0.5], "std": [0.2]}
    write_chipset(out, np.zeros((4, 1, 8, 8), np.float32), np.ones((4, 8, 8), bool), rows, stats,
                  boxes=boxes_for_chips(rows, source, 64))
    chips = load_chipset(out)
    boxes, classes = chips.boxes, chips.box_classes
    assert classes == ["cyst", "tumour"]
    np.testing.assert_array_equal(boxes[0], [[10, 20, 18, 26, 1], [0, 0, 4, 4, 0]])
    assert boxes[1].shape == (0, 5)  # annotated, no object: a true negative
    assert boxes[2] is None and boxes[3] is None  # not in the COCO file / not the first frame: unannotated
    assert read_box_cache(tmp_path) == (None, [])


def test_resized_chip_scales_boxes_by_chip_size_over_image_size():
    boxes = np.array([[32, 64, 96, 128, 0]], np.float32)  # in a 256 (w) × 512 (h) image
    np.testing.assert_allclose(chip_boxes(boxes, {"source": "s", "frame": 0}, (256, 512), 64), [[8, 8, 24, 16, 0]])


def test_window_chip_shifts_clips_and_drops_slivers():
    boxes = np.array([[100, 70, 110, 80, 0],  # inside the window at row 64, col 96
                      [150, 60, 160, 70, 0],  # 6 of 10 rows inside the window's top edge: clipped, kept
                      [90, 64, 98, 74, 0]], np.float32)  # 2 of 8 columns inside: dropped
    found = chip_boxes(boxes, {"row": 64, "col": 96}, (768, 768), 64)
    np.testing.assert_allclose(found, [[4, 6, 14, 16, 0], [54, 0, 64, 6, 0]])
    assert chip_boxes(boxes, {"row": "64", "col": "96"}, (768, 768), 64).shape == (2, 5)  # manifest strings


def test_map_hand_cases():
    truth = [np.array([[0, 0, 10, 10, 0], [20, 20, 30, 36, 1]], np.float32), np.zeros((0, 5), np.float32)]
    perfect = [np.c_[truth[0][:, :4], np.ones(2), truth[0][:, 4]], np.zeros((0, 6), np.float32)]
    assert detection_map(truth, perfect) == {"map50": 1.0, "map": 1.0}
    disjoint = [np.array([[40, 40, 50, 50, 0.9, 0]], np.float32), np.array([[0, 0, 9, 9, 0.9, 1]], np.float32)]
    assert detection_map(truth, disjoint) == {"map50": 0.0, "map": 0.0}
    wrong_class = [np.c_[truth[0][:, :4], np.ones(2), 1 - truth[0][:, 4]], np.zeros((0, 6), np.float32)]
    assert detection_map(truth, wrong_class)["map50"] == 0.0
    # IoU 0.6: a hit at 0.5, a miss from 0.65 on → mAP@0.5:0.95 = 3 thresholds of 10 (0.5, 0.55, 0.6)
    shifted = [np.array([[0, 0, 10, 10, 1, 0], [20, 20, 30, 30, 1, 1]], np.float32), np.zeros((0, 6), np.float32)]
    scores = detection_map(truth, shifted)
    assert scores["map50"] == pytest.approx(1.0) and scores["map"] == pytest.approx((1.0 + 0.3) / 2, abs=0.01)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_simclr_export_reaches_every_body_tensor_exactly(tmp_path, architecture):
    pretrained, _ = create_backbone(NAME, "random", 4, seed=3)
    export_backbone(pretrained, tmp_path, {"backbone": NAME, "in_chans": 4})
    loaded, _ = create_backbone(NAME, "simclr", 4, simclr_export=tmp_path)
    model = build_detector(loaded, NAME, 4, 2, 64, DetectionConfig(architecture=architecture))
    exported = torch.load(tmp_path / "backbone.pth")
    body = model.backbone.body.state_dict()
    assert body.keys() <= exported.keys()
    for key, tensor in body.items():
        assert torch.equal(tensor, exported[key]), key
    assert {k.split(".")[0] for k in exported.keys() - body.keys()} == {"conv_head", "bn2"}


def test_input_transform_is_the_identity_not_torchvision_imagenet_defaults():
    backbone, _ = create_backbone(NAME, "random", 4)
    model = build_detector(backbone, NAME, 4, 1, 64, DetectionConfig()).eval()
    assert model.transform.image_mean == [0.0] * 4 and model.transform.image_std == [1.0] * 4
    images = [torch.randn(4, 64, 64), torch.randn(4, 64, 64)]
    batch, _ = model.transform(images)
    assert batch.image_sizes == [(64, 64), (64, 64)]
    assert torch.equal(batch.tensors, torch.stack(images))  # no resize, no renormalisation


def _chips_with_boxes(n=24, size=32):
    """Dark chips with one bright square each (class 0) in train/val/test; a few annotated negatives."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.2, (n, 4, size, size)).astype(np.float32)
    boxes = []
    for i in range(n):
        if i % 6 == 5:
            boxes.append(np.zeros((0, 5), np.float32))
            continue
        x, y = rng.integers(0, size - 12, 2)
        images[i, :, y : y + 10, x : x + 10] += 0.7
        boxes.append(np.array([[x, y, x + 10, y + 10, 0]], np.float32))
    boxes[-1] = None  # unannotated chip: left out of detection
    manifest = [{"split": s, "label": "x"} for s in ["train"] * 12 + ["val"] * 4 + ["test"] * 8]
    return ChipSet(images=images, valid=np.ones((n, size, size), bool), manifest=manifest, classes=["x"],
                   channel_names=list("abcd"), mean=np.full(4, 0.2, np.float32), std=np.full(4, 0.3, np.float32),
                   boxes=boxes, box_classes=["square"])


@pytest.mark.parametrize("architecture", ["fasterrcnn", "fcos"])
def test_tiny_finetune_is_deterministic_and_scored(architecture):
    chips = _chips_with_boxes()
    cfg = EvaluateConfig(label_fraction=1.0, label_fractions=[1.0], transfer_sweep=["det"], seeds=[0, 1],
                         detection=DetectionConfig(architecture=architecture, steps=2, batch_size=4,
                                                   anchor_sizes=[[8], [16], [32], [64]]))

    def make_backbone():
        return create_backbone(NAME, "random", 4, seed=0)[0]

    first = evaluate_detection(make_backbone, NAME, chips, cfg, "remote_multispectral", {"init": "random"})
    again = evaluate_detection(make_backbone, NAME, chips, cfg, "remote_multispectral", {"init": "random"})
    assert first["per_seed"] == again["per_seed"]
    assert first["n_test"] == 7 and first["n_test_boxes"] == 6 and first["classes"] == ["square"]
    assert [run["n_labels"] for run in first["per_seed"]["finetune"]] == [12, 12]
    assert first["per_seed"]["finetune_100pct"] == first["per_seed"]["finetune"]  # sweep point = headline, not re-run
    summary = first["summary"]["finetune"]
    assert 0 <= summary["map50"] <= 1 and 0 <= summary["map"] <= summary["map50"] and "map50_ci95" in summary
    assert first["examples"]["chips"] == [16, 18, 19, 20]  # test chips with a box (17 has none), fixed for every init
    assert all(np.asarray(p).reshape(-1, 6)[:, 4].min(initial=1) >= 0.3 for p in first["examples"]["predicted"])


def test_detection_needs_boxes():
    chips = _chips_with_boxes()
    chips.boxes = None
    with pytest.raises(ValueError, match="COCO boxes.json"):
        evaluate_detection(lambda: None, NAME, chips, EvaluateConfig(), "none", {})


@pytest.mark.parametrize(("edit", "key"), [
    (lambda raw: raw["evaluate"]["detection"].update(architecture="yolo"), "evaluate.detection.architecture"),
    (lambda raw: raw["evaluate"]["detection"].update(anchor_sizes=[[8], [16]]), "evaluate.detection.anchor_sizes"),
    (lambda raw: raw["evaluate"]["detection"].update(steps=0), "evaluate.detection.steps"),
    (lambda raw: raw["evaluate"]["detection"].update(anchors=[8]), "evaluate.detection.anchors"),
    (lambda raw: raw["grid"].update(det_domains=["ultrasound"]), "grid.det_domains"),
])
def test_config_errors_name_the_key(edit, key):
    with open("params.yaml") as stream:
        raw = yaml.safe_load(stream)
    edit(raw)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(raw)


def test_params_yaml_turns_detection_on_for_both_demo_domains():
    with open("params.yaml") as stream:
        config = parse_config(yaml.safe_load(stream))
    assert config.grid.det_domains == ["medical", "remote"] and config.evaluate.detection.architecture == "fcos"


def test_ingested_demo_boxes_cover_the_lesion_masks(tmp_path):
    """End to end through ingest: 96-px slices resized to 64-px chips; each cached box must enclose lesion pixels
    of the (independently resized) mask, and every lesion pixel must lie in some box."""
    from pipeline.config import load_config
    from pipeline.data.chips import load_chipset
    from pipeline.demo.medical import LESION, MedicalDemoSpec, write_medical_demo
    from pipeline.ingest.folder import ingest_folder
    from pipeline.presets import PRESETS

    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir(), out.mkdir()
    write_medical_demo(source, MedicalDemoSpec(patients=4, slices_per_patient=3, image_size=96), seed=2)
    ingest_folder(source, load_config("params.yaml").data["medical"], PRESETS["medical_ct"], 0, out)
    chips = load_chipset(out)
    assert chips.box_classes == ["cyst", "tumour"] and all(b is not None for b in chips.boxes)
    assert sum(len(b) for b in chips.boxes) > 0
    for mask, boxes, label in zip(chips.masks, chips.boxes, chips.labels):
        lesion = np.asarray(mask) == LESION
        covered = np.zeros_like(lesion)
        for x0, y0, x1, y1, cls in boxes:
            assert chips.box_classes[int(cls)] == chips.classes[label]  # a slice's lesions are of its class
            inside = lesion[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))]
            assert inside.any()
            covered[max(int(y0) - 1, 0) : int(np.ceil(y1)) + 1, max(int(x0) - 1, 0) : int(np.ceil(x1)) + 1] = True
        assert not (lesion & ~covered).any()


def test_report_metrics_carry_detection_and_tolerate_its_absence(tmp_path):
    from pipeline.report.tables import collect_metrics, detection_table
    from pipeline.report.detection import detection_section
    from pipeline.report.document import Document

    summary = {"finetune": {"map50": 0.4, "map50_ci95": 0.1, "map": 0.2, "map_ci95": 0.05}}
    cls = {"medical": {"simclr": {"summary": {"linear": {}}}}}
    metrics = collect_metrics(cls, tmp_path, None, {"medical": {"simclr": {"summary": summary},
                                                                "random": {"summary": summary}}})
    assert metrics["medical"]["det"]["simclr"]["finetune"]["map50"] == 0.4
    table = detection_table(metrics["medical"]["det"])
    assert table.header == ["init", "mAP@0.5", "mAP@0.5:0.95"] and [r[0] for r in table.rows] == ["random", "simclr"]
    without = collect_metrics(cls, tmp_path, None, {"medical": {}})
    assert "det" not in without["medical"]
    document = Document("t")
    detection_section(document, tmp_path, tmp_path, "medical", None, {}, without["medical"], [])
    assert document == Document("t")


def test_box_prior_scores_each_box_by_how_many_labelled_chips_agree():
    square, other = [2, 2, 12, 12], [20, 20, 30, 30]
    boxes = [np.array([[*square, 0]], np.float32), np.array([[2, 3, 12, 13, 0], [*other, 0]], np.float32),
             np.array([[*square, 1]], np.float32), np.zeros((0, 5), np.float32)]
    prior = box_prior(boxes, max_detections=10)
    # class 0: the square twice (IoU 0.82, merged by NMS, support 2 of 4 chips) and the other box once; class 1: once
    assert prior.shape == (3, 6)
    by_class = {(int(row[5]), round(float(row[4]), 2)) for row in prior}
    assert by_class == {(0, 0.5), (0, 0.25), (1, 0.25)}
    assert box_prior(boxes, max_detections=1).shape == (1, 6)
    assert box_prior([np.zeros((0, 5), np.float32)], 10).shape == (0, 6)


def test_floor_scores_the_box_prior_on_the_same_label_subsets():
    chips = _chips_with_boxes()
    cfg = EvaluateConfig(label_fraction=1.0, label_fractions=[1.0], transfer_sweep=["det"], seeds=[0, 1])
    floor = detection_floor(chips, cfg)
    assert floor["init"] == "floor" and floor["n_test"] == 7 and floor["n_test_boxes"] == 6
    assert floor["seeds"] == cfg.linear_seeds and len(floor["per_seed"]["finetune"]) == len(cfg.linear_seeds)
    assert 0 <= floor["summary"]["finetune"]["map50"] < 0.5  # random square positions: a position prior is weak
    fixed = _chips_with_boxes()
    fixed.boxes = [None if b is None else np.array([[4, 4, 14, 14, 0]], np.float32) for b in fixed.boxes]
    assert detection_floor(fixed, cfg)["summary"]["finetune"]["map50"] == pytest.approx(1.0)


def _bright_box(image: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(image[0] > 0.5)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("preset", sorted(BOX_AUGMENT_PRESETS))
def test_box_recipes_move_boxes_with_the_image(preset):
    transform = build_box_transform(preset)
    image = np.zeros((3, 64, 64), np.float32)
    image[:, 12:22, 24:44] = 1.0  # a bright object with its true box
    boxes = np.array([[24, 12, 44, 22, 0], [2, 2, 3, 3, 0]], np.float32)  # a second box, too small to matter
    kept = 0
    for seed in range(20):
        moved_image, moved = augment_with_boxes(transform, image, boxes, [seed])
        assert moved_image.shape == image.shape and moved.shape[1] == 5
        big = moved[(moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1]) > 20]
        if len(big):
            kept += 1
            np.testing.assert_allclose(big[0, :4], _bright_box(moved_image), atol=1.5)
    assert kept >= 15  # boxes under half visible are dropped, not all of them


def test_medical_box_recipe_never_mirrors_anatomy():
    transform = build_box_transform("medical_ct")
    image = np.zeros((3, 64, 64), np.float32)
    image[:, 28:36, 4:14] = 1.0  # on the image's left: the patient's right
    for seed in range(40):
        _, moved = augment_with_boxes(transform, image, np.array([[4, 28, 14, 36, 0]], np.float32), [seed])
        assert len(moved) == 0 or (moved[0, 0] + moved[0, 2]) / 2 < 24
    with pytest.raises(ValueError, match="known"):
        build_box_transform("sar_vv_vh")


def test_augment_false_trains_on_the_chips_as_they_are():
    chips = _chips_with_boxes()
    on = DetectionConfig(architecture="fcos", steps=2, batch_size=4, anchor_sizes=[[8], [16], [32], [64]])
    off = on.model_copy(update={"augment": False})

    def trained(cfg: DetectionConfig, preset: str) -> list[torch.Tensor]:
        task = DetectionTask(chips, cfg, NAME, preset, Compute())
        model, _ = fine_tune(task, create_backbone(NAME, "random", 4, seed=0)[0], np.arange(12), np.zeros(0, np.int64),
                             cfg, 0)
        return [p.detach() for p in model.parameters()]

    plain = trained(on, "none")
    assert all(torch.equal(a, b) for a, b in zip(trained(off, "remote_multispectral"), plain))
    assert not all(torch.equal(a, b) for a, b in zip(trained(on, "remote_multispectral"), plain))
