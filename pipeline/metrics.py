"""Classification metrics and the across-seed summary every table reports."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from pipeline.protocols import CLASSIFICATION_METRICS
from pipeline.stats.resampled_metrics import detection_matches, weighted_map



def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and one-vs-rest macro AUROC.

    Args:
        y_true: (N,) class indexes. proba: (N, K) class probabilities (rows sum to 1).
    AUROC is averaged over the classes present in ``y_true`` (a class absent from the test split has no
    defined ROC curve); with a single class present it is NaN.
    """
    y_true = np.asarray(y_true)
    y_pred = proba.argmax(axis=1)
    present = np.unique(y_true)
    labels = np.arange(proba.shape[1])
    result = {
        "acc": float(accuracy_score(y_true, y_pred)),
        "balanced_acc": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
    }
    if len(present) < 2:
        result["auroc"] = float("nan")
    else:
        per_class = [roc_auc_score(y_true == c, proba[:, c]) for c in present if c in labels]
        result["auroc"] = float(np.mean(per_class))
    return result


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t confidence interval over seeds (0 for one seed)."""
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if len(array) == 0:
        return float("nan"), float("nan")
    if len(array) == 1:
        return float(array[0]), 0.0
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return float(array.mean()), float(half)


def segmentation_confusion(truth: np.ndarray, predicted: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """(K, K) pixel counts, rows = true class, columns = predicted; ``ignore`` pixels are not counted."""
    keep = np.asarray(truth) != ignore
    truth, predicted = np.asarray(truth)[keep].astype(np.int64), np.asarray(predicted)[keep].astype(np.int64)
    return np.bincount(truth * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """mIoU and mean Dice over the classes present in truth or prediction, plus Dice per class.

    A class absent from both truth and prediction has no defined IoU / Dice: it is left out of the means
    and its per-class Dice is NaN (so a seed without that class does not count as a perfect score).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    false_positive, false_negative = confusion.sum(axis=0) - true_positive, confusion.sum(axis=1) - true_positive
    union = true_positive + false_positive + false_negative
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        dice = np.where(union > 0, 2 * true_positive / (union + true_positive), np.nan)
    result = {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
              "mdice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")}
    result.update({f"dice_{name}": float(value) for name, value in zip(class_names, dice)})
    return result


DETECTION_METRICS = ("map50", "map")
COCO_IOU_THRESHOLDS = tuple(np.round(np.linspace(0.5, 0.95, 10), 2))  # mAP@0.5:0.95


def detection_map(truth: list[np.ndarray], predicted: list[np.ndarray]) -> dict[str, float]:
    """COCO mAP@0.5 (``map50``) and mAP@0.5:0.95 (``map``) over a set of chips: COCO's greedy matching and
    101-point interpolated precision (:mod:`pipeline.stats.resampled_metrics`; equal to pycocotools' COCOeval
    and torchmetrics' MeanAveragePrecision, tests/stats), in numpy, so the detection floor runs without torch.

    Args:
        truth: per chip (M, 5) x0, y0, x1, y1, class_index (pixels).
        predicted: per chip (K, 6) x0, y0, x1, y1, score, class_index.
    Without any true box the average precision is undefined: both metrics are NaN then.
    """
    per_threshold = [detection_ap_at(truth, predicted, iou) for iou in COCO_IOU_THRESHOLDS]
    defined = [value for value in per_threshold if not math.isnan(value)]
    return {"map50": float(per_threshold[0]), "map": float(np.mean(defined)) if defined else float("nan")}


def detection_ap_at(truth: list[np.ndarray], predicted: list[np.ndarray], iou: float = 0.5) -> float:
    """COCO mAP at one IoU threshold (NaN without a true box): what a detector's validation needs (mAP@0.5),
    without matching at the nine other thresholds of mAP@0.5:0.95."""
    return float(weighted_map(detection_matches(truth, predicted, iou), np.ones((1, len(truth))))[0])


def summarise_runs(runs: list[dict[str, float]], names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Per metric: ``<metric>`` (mean over seeds) and ``<metric>_ci95`` (half-width).

    ``names`` defaults to the classification metrics; other tasks pass their own.
    """
    summary: dict[str, float] = {}
    for name in names or CLASSIFICATION_METRICS:
        mean, half = mean_ci95([run[name] for run in runs])
        summary[name] = round(mean, 6)
        summary[f"{name}_ci95"] = round(half, 6)
    return summary
