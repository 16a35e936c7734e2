"""The vectorised resampled metrics against the references the tasks report with (scikit-learn, the project's
segmentation metrics, torchmetrics' COCO mAP): all-ones weights give the reported metric, integer weights give
the metric of the test set with those units repeated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.metrics import classification_metrics, detection_ap_at, detection_map, segmentation_confusion, segmentation_metrics
from pipeline.stats.resampled_metrics import (
    detection_matches, segmentation_counts, weighted_auroc, weighted_map, weighted_miou,
)


def _classification(rng, n=60, classes=3):
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, np.round(proba, 2)  # rounding makes ties, which AUROC counts as one half


@pytest.mark.parametrize("classes", [2, 4])
def test_auroc_with_unit_weights_is_the_reported_auroc(classes):
    labels, proba = _classification(np.random.default_rng(classes), classes=classes)
    got = weighted_auroc(labels, proba, np.ones((1, len(labels))))[0]
    assert got == pytest.approx(classification_metrics(labels, proba)["auroc"], abs=1e-12)


def test_auroc_with_integer_weights_is_the_auroc_of_the_repeated_set():
    rng = np.random.default_rng(0)
    labels, proba = _classification(rng, classes=2)
    weights = rng.integers(0, 3, size=(5, len(labels))).astype(float)
    got = weighted_auroc(labels, proba, weights)
    for row, value in zip(weights.astype(int), got):
        keep = np.repeat(np.arange(len(labels)), row)
        assert value == pytest.approx(roc_auc_score(labels[keep] == 1, proba[keep, 1]), abs=1e-12)


def test_auroc_of_a_resample_with_one_class_is_nan():
    labels = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    assert np.isnan(weighted_auroc(labels, proba, np.array([[1.0, 2.0, 0.0, 0.0]]))[0])


def _masks(rng, n=12, size=16, classes=3):
    truth = rng.integers(0, classes, size=(n, size, size)).astype(np.uint8)
    truth[:, :2] = 255
    predicted = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, classes, truth.shape)).astype(np.uint8)
    predicted[predicted == 255] = 0
    return truth, predicted


def test_miou_with_unit_and_integer_weights_matches_the_segmentation_metric():
    rng = np.random.default_rng(1)
    truth, predicted = _masks(rng)
    counts = segmentation_counts(truth, predicted, 3, 255)
    reported = segmentation_metrics(segmentation_confusion(truth, predicted, 3), ["a", "b", "c"])["miou"]
    assert weighted_miou(counts, np.ones((1, len(truth))))[0] == pytest.approx(reported, abs=1e-12)
    weights = rng.integers(0, 3, size=(4, len(truth))).astype(float)
    for row, value in zip(weights.astype(int), weighted_miou(counts, weights)):
        keep = np.repeat(np.arange(len(truth)), row)
        expected = segmentation_metrics(segmentation_confusion(truth[keep], predicted[keep], 3), ["a", "b", "c"])
        assert value == pytest.approx(expected["miou"], abs=1e-12)


def _detections(rng, chips=10, classes=2):
    truth, predicted = [], []
    for _ in range(chips):
        boxes = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 80, 2)
            boxes.append([x, y, x + rng.uniform(8, 30), y + rng.uniform(8, 30), rng.integers(0, classes)])
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
        guesses = [np.r_[b[:4] + rng.normal(0, 4, 4), rng.uniform(0.2, 1.0), b[4] if rng.random() < 0.8 else
                         (b[4] + 1) % classes] for b in boxes if rng.random() < 0.8]
        for _ in range(rng.integers(0, 4)):  # false positives
            x, y = rng.uniform(0, 80, 2)
            guesses.append([x, y, x + 15, y + 15, rng.uniform(0.0, 0.9), rng.integers(0, classes)])
        truth.append(boxes)
        predicted.append(np.asarray(guesses, dtype=np.float32).reshape(-1, 6))
    return truth, predicted


def _torchmetrics_map(truth, predicted) -> dict[str, float]:
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    metric.update([{"boxes": torch.as_tensor(p[:, :4]).reshape(-1, 4), "scores": torch.as_tensor(p[:, 4]),
                    "labels": torch.as_tensor(p[:, 5]).long()} for p in predicted],
                  [{"boxes": torch.as_tensor(t[:, :4]).reshape(-1, 4), "labels": torch.as_tensor(t[:, 4]).long()}
                   for t in truth])
    scores = metric.compute()
    return {"map50": float(scores["map_50"]), "map": float(scores["map"])}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_with_unit_weights_matches_torchmetrics(seed):
    truth, predicted = _detections(np.random.default_rng(seed))
    matches = detection_matches(truth, predicted)
    assert json.loads(json.dumps(matches)) == matches  # stored in the result file as it is
    reference = _torchmetrics_map(truth, predicted)
    assert weighted_map(matches, np.ones((1, len(truth))))[0] == pytest.approx(reference["map50"], abs=1e-6)
    assert detection_map(truth, predicted) == pytest.approx(reference, abs=1e-6)  # mAP@0.5:0.95 too
    assert detection_ap_at(truth, predicted, 0.5) == pytest.approx(reference["map50"], abs=1e-6)  # validation's


def test_map_without_any_true_box_is_nan():
    empty = [np.zeros((0, 5), np.float32)] * 2
    found = [np.array([[1, 1, 5, 5, 0.9, 0]], np.float32)] * 2
    assert all(np.isnan(value) for value in detection_map(empty, found).values())


def _pycocotools_map50(truth, predicted, classes=2):
    """mAP@0.5 straight from pycocotools' COCOeval (torchmetrics' wrapper merges repeated images oddly)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = [], []
    for image, boxes in enumerate(truth):
        images.append({"id": image})
        annotations += [{"id": len(annotations) + n + 1, "image_id": image, "category_id": int(b[4]), "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "area": float((b[2] - b[0]) * (b[3] - b[1]))} for n, b in enumerate(boxes)]
    ground = COCO()
    ground.dataset = {"images": images, "annotations": annotations, "categories": [{"id": k} for k in range(classes)]}
    ground.createIndex()
    found = ground.loadRes([{"image_id": image, "category_id": int(b[5]), "score": float(b[4]),
                             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                            for image, boxes in enumerate(predicted) for b in boxes])
    evaluation = COCOeval(ground, found, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, recall thresholds, classes, all areas, 100
    return float(precision[:, (precision > -1).all(axis=0)].mean())


def test_map50_with_integer_weights_matches_pycocotools_on_the_repeated_chips():
    rng = np.random.default_rng(3)
    truth, predicted = _detections(rng)
    matches = detection_matches(truth, predicted)
    weights = rng.integers(0, 3, size=(3, len(truth))).astype(float)
    for row, value in zip(weights.astype(int), weighted_map(matches, weights)):
        keep = np.repeat(np.arange(len(truth)), row)
        assert value == pytest.approx(_pycocotools_map50([truth[i] for i in keep], [predicted[i] for i in keep]),
                                      abs=1e-9)
