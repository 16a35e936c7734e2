"""Segmentation transfer: metrics on hand-made cases, exact encoder weight transfer, a tiny fine-tune."""

import numpy as np
import pytest
import torch

from pipeline.config import EvaluateConfig, SegmentationConfig
from pipeline.data.chips import ChipSet
from pipeline.metrics import segmentation_confusion, segmentation_metrics
from pipeline.models.backbone import create_backbone, export_backbone
from pipeline.floors import pixel_prior, segmentation_floor
from pipeline.models.backbone import transfer_encoder_weights
from pipeline.transfer.segmentation import ARCHITECTURES, build_segmenter, evaluate_segmentation

NAME = "tf_efficientnet_lite0"


def _metrics(truth, predicted, classes=("a", "b", "c")):
    return segmentation_metrics(segmentation_confusion(np.asarray(truth), np.asarray(predicted), len(classes)),
                                list(classes))


def test_perfect_prediction_scores_one_and_disjoint_scores_zero():
    truth = np.array([[0, 0, 1], [1, 2, 2]])
    perfect = _metrics(truth, truth)
    assert perfect["miou"] == perfect["mdice"] == 1.0 and perfect["dice_c"] == 1.0
    disjoint = _metrics(np.zeros((2, 2), int), np.ones((2, 2), int), ("a", "b"))
    assert disjoint["miou"] == 0.0 and disjoint["dice_a"] == 0.0 and disjoint["dice_b"] == 0.0


def test_ignored_pixels_and_absent_classes_do_not_count():
    truth = np.array([[0, 0, 255, 255]])
    predicted = np.array([[0, 0, 1, 1]])  # wrong only where the truth says "ignore"
    scores = _metrics(truth, predicted)
    assert scores["miou"] == 1.0 and np.isnan(scores["dice_b"]) and np.isnan(scores["dice_c"])
    half = _metrics(np.array([[0, 1]]), np.array([[0, 0]]), ("a", "b"))  # IoU a = 1/2, b = 0
    assert half["miou"] == pytest.approx(0.25) and half["dice_a"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_simclr_export_reaches_every_encoder_tensor_exactly(tmp_path, architecture):
    pretrained, _ = create_backbone(NAME, "random", 4, seed=3)
    export_backbone(pretrained, tmp_path, {"backbone": NAME, "in_chans": 4})
    loaded, _ = create_backbone(NAME, "simclr", 4, simclr_export=tmp_path)
    model = build_segmenter(loaded, NAME, architecture, 4, num_classes=5)
    exported = torch.load(tmp_path / "backbone.pth")
    encoder = model.encoder.model.state_dict()
    assert encoder.keys() <= exported.keys()
    for key, tensor in encoder.items():
        assert torch.equal(tensor, exported[key]), key
    assert {k.split(".")[0] for k in exported.keys() - encoder.keys()} == {"conv_head", "bn2"}


def test_transfer_refuses_a_backbone_that_does_not_cover_the_encoder():
    backbone, _ = create_backbone(NAME, "random", 3)
    model = build_segmenter(backbone, NAME, "unet", 3, 2)
    state = backbone.state_dict()
    del state["conv_stem.weight"]
    truncated = torch.nn.Module()
    truncated.state_dict = lambda: state  # a backbone missing its stem
    with pytest.raises(ValueError, match="missing \\['conv_stem.weight'\\]"):
        transfer_encoder_weights(truncated, model.encoder.model)


def _chips_with_masks(n=24, size=32):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.2, (n, 4, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    masks[:, size // 2 :] = 1
    images[:, :, size // 2 :] += 0.6  # class 1 is the bright half
    masks[:, :2] = 255  # a nodata strip
    split = ["train"] * 12 + ["val"] * 4 + ["test"] * 8
    manifest = [{"split": s, "label": "x"} for s in split]
    return ChipSet(images=images, valid=masks != 255, manifest=manifest, classes=["x"], channel_names=list("abcd"),
                   mean=np.full(4, 0.4, np.float32), std=np.full(4, 0.3, np.float32), masks=masks,
                   mask_classes=["dark", "bright"])


def test_tiny_finetune_is_deterministic_and_scored():
    chips = _chips_with_masks()
    cfg = EvaluateConfig(label_fraction=1.0, label_fractions=[0.5, 1.0], seeds=[0, 1], transfer_sweep=["seg"],
                         segmentation=SegmentationConfig(steps=3, batch_size=4))
    make = lambda: create_backbone(NAME, "random", 4, seed=0)[0]  # noqa: E731
    first = evaluate_segmentation(make, NAME, chips, cfg, "remote_multispectral", {"init": "random"})
    second = evaluate_segmentation(make, NAME, chips, cfg, "remote_multispectral", {"init": "random"})
    assert first["per_seed"] == second["per_seed"]
    assert set(first["summary"]) == {"finetune", "finetune_50pct", "finetune_100pct"}  # the label-fraction sweep
    assert first["per_seed"]["finetune_100pct"] == first["per_seed"]["finetune"]  # the headline, not re-run
    assert all(run["n_labels"] < full["n_labels"] for run, full in
               zip(first["per_seed"]["finetune_50pct"], first["per_seed"]["finetune"]))
    summary = first["summary"]["finetune"]
    assert 0 <= summary["miou"] <= 1 and {"dice_dark", "dice_bright", "miou_ci95"} <= summary.keys()
    assert len(first["overlays"]["predicted"]) == 4 and np.asarray(first["overlays"]["predicted"]).shape[1:] == (32, 32)


def test_pixel_prior_is_the_most_frequent_class_at_each_position():
    masks = np.array([[[0, 1], [2, 255]], [[0, 1], [1, 255]], [[1, 1], [2, 255]]], np.uint8)
    # (0,0): 0,0,1 → 0; (0,1): 1 ×3 → 1; (1,0): 2,1,2 → 2; (1,1) never labelled → the most frequent class overall (1)
    assert pixel_prior(masks, 3, 255).tolist() == [[0, 1], [2, 1]]


def test_floor_scores_the_prior_on_the_same_label_subsets():
    chips = _chips_with_masks()  # every chip: top half dark, bottom half bright, a nodata strip: the prior is exact
    cfg = EvaluateConfig(label_fraction=0.5, label_fractions=[0.5, 1.0], seeds=[0, 1], transfer_sweep=["seg"])
    floor = segmentation_floor(chips, cfg)
    assert floor["init"] == "floor" and set(floor["summary"]) == {"finetune", "finetune_50pct", "finetune_100pct"}
    assert floor["summary"]["finetune"]["miou"] == pytest.approx(1.0)
    flipped = _chips_with_masks()
    flipped.masks[12:16] = np.where(flipped.masks[12:16] == 255, 255, 1 - flipped.masks[12:16])  # val only
    flipped.masks[16:] = np.where(flipped.masks[16:] == 255, 255, 1 - flipped.masks[16:])  # test: halves swapped
    assert segmentation_floor(flipped, cfg)["summary"]["finetune"]["miou"] == pytest.approx(0.0)
    assert [r["n_labels"] for r in floor["per_seed"]["finetune"]] == [
        r["n_labels"] for r in floor["per_seed"]["finetune_50pct"]]
