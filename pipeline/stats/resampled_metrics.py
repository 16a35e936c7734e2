"""Each task's primary metric recomputed on many weighted copies of one test set at once.

A bootstrap that resamples test *groups* (patients, spatial blocks) gives each test unit a weight: how often its
group was drawn. These functions take the stored per-unit outputs of one run and a (B, N) weight matrix and return
the B metric values in one vectorised pass, so thousands of resamples cost a few array operations instead of
thousands of scikit-learn / pycocotools calls. With all weights 1 each reproduces the metric the task reported:
tests hold them to scikit-learn's ``roc_auc_score``, :func:`pipeline.metrics.segmentation_metrics` and
torchmetrics' COCO mAP@0.5.

numpy only: the report imports this without torch.
"""

from __future__ import annotations

import numpy as np

COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def weighted_auroc(labels: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) one-vs-rest macro AUROC per weight row, over the classes present in ``labels`` (as
    :func:`pipeline.metrics.classification_metrics`); a class absent from a resample is left out of its mean.

    Args:
        labels: (N,) class indexes. proba: (N, K) scores. weights: (B, N) non-negative unit weights.
    """
    present = np.unique(labels)
    if len(present) < 2:
        return np.full(len(weights), np.nan)
    return mean_of_defined(np.stack([_binary_auroc(proba[:, c], labels == c, weights) for c in present], axis=1))


def mean_of_defined(values: np.ndarray) -> np.ndarray:
    """(B,) row means over the finite entries of (B, K); NaN for a row with none (no warning)."""
    defined = np.isfinite(values)
    count = defined.sum(axis=1)
    total = np.where(defined, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _binary_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann–Whitney statistic: Σ w_pos·(W_neg below + ½ W_neg tied) / (W_pos·W_neg)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # first unit of each tie block
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def segmentation_counts(truth: np.ndarray, predicted: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """(N, K, 3) per chip and class: true-positive, false-positive and false-negative pixels (``ignore`` unscored)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    scored = truth != ignore
    counts = np.zeros((len(truth), num_classes, 3), dtype=np.int64)
    for k in range(num_classes):
        is_true, is_predicted = (truth == k) & scored, (predicted == k) & scored
        counts[:, k, 0] = (is_true & is_predicted).reshape(len(truth), -1).sum(axis=1)
        counts[:, k, 1] = (~is_true & is_predicted).reshape(len(truth), -1).sum(axis=1)
        counts[:, k, 2] = (is_true & ~is_predicted).reshape(len(truth), -1).sum(axis=1)
    return counts


def weighted_miou(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) mIoU over the classes present in truth or prediction of each weighted resample.

    Args:
        counts: (N, K, 3) from :func:`segmentation_counts`. weights: (B, N).
    """
    totals = np.einsum("bn,nkc->bkc", weights, np.asarray(counts, dtype=np.float64))
    union = totals.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, totals[..., 0] / union, np.nan)
    return mean_of_defined(iou)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes, in the boxes' dtype."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(inter > 0, inter / (area_a[:, None] + area_b[None, :] - inter), 0.0)


def detection_matches(truth: list[np.ndarray], predicted: list[np.ndarray], iou: float = 0.5,
                      max_detections: int = 100) -> dict[str, list]:
    """COCO's greedy per-image, per-class matching at one IoU threshold, kept per detection so mAP@``iou``
    can be recomputed on any resample of the images (matches never cross images).

    Args:
        truth: per chip (M, 5) x0, y0, x1, y1, class. predicted: per chip (K, 6) x0, y0, x1, y1, score, class.
    Returns:
        ``unit`` / ``score`` / ``label`` / ``matched`` per detection (chip order, each chip's top
        ``max_detections`` by score) and ``truth_labels``: per chip, the class of each true box.
    """
    unit, score, label, matched = [], [], [], []
    for n, (true_boxes, boxes) in enumerate(zip(truth, predicted)):
        true_boxes = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 5)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
        boxes = boxes[np.argsort(-boxes[:, 4], kind="mergesort")[:max_detections]]
        for k in np.unique(boxes[:, 5]):
            mine, theirs = boxes[boxes[:, 5] == k], true_boxes[true_boxes[:, 4] == k]
            overlaps = iou_matrix(mine[:, :4], theirs[:, :4]) if len(theirs) else np.zeros((len(mine), 0))
            taken = np.zeros(len(theirs), dtype=bool)
            for d in range(len(mine)):
                candidates = np.where(~taken & (overlaps[d] >= iou), overlaps[d], -1.0)
                hit = bool(len(candidates) and candidates.max() >= 0)
                if hit:
                    taken[int(candidates.argmax())] = True
                unit.append(n), score.append(float(mine[d, 4])), label.append(int(k)), matched.append(hit)
    return {"unit": unit, "score": score, "label": label, "matched": matched,
            "truth_labels": [np.asarray(t).reshape(-1, 5)[:, 4].astype(int).tolist() for t in truth]}


def weighted_map(matches: dict[str, list], weights: np.ndarray) -> np.ndarray:
    """(B,) COCO mean average precision (101-point interpolation) at the matching's IoU per weighted resample,
    over the classes with a true box in that resample."""
    unit, score = np.asarray(matches["unit"], dtype=np.int64), np.asarray(matches["score"], dtype=np.float64)
    label, matched = np.asarray(matches["label"], dtype=np.int64), np.asarray(matches["matched"], dtype=bool)
    truth_units = np.asarray([n for n, labels in enumerate(matches["truth_labels"]) for _ in labels], dtype=np.int64)
    truth_labels = np.asarray([k for labels in matches["truth_labels"] for k in labels], dtype=np.int64)
    per_class = []
    for k in np.unique(np.r_[label, truth_labels]):
        positives = weights[:, truth_units[truth_labels == k]].sum(axis=1)
        mine = np.flatnonzero(label == k)
        mine = mine[np.argsort(-score[mine], kind="mergesort")]
        w = weights[:, unit[mine]]
        per_class.append(np.where(positives > 0, _interpolated_ap(np.cumsum(w * matched[mine], axis=1),
                                                                  np.cumsum(w * ~matched[mine], axis=1), positives),
                                  np.nan))
    if not per_class:
        return np.full(len(weights), np.nan)
    return mean_of_defined(np.stack(per_class, axis=1))


def _interpolated_ap(true_positives: np.ndarray, false_positives: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """(B,) COCO AP from cumulative weighted TP / FP counts (B, D) in score order and positive counts (B,)."""
    if true_positives.shape[1] == 0:
        return np.zeros(len(positives))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = true_positives / positives[:, None]
        precision = np.nan_to_num(true_positives / (true_positives + false_positives))
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # the precision envelope
    ap = np.empty(len(positives))
    for b in range(len(positives)):
        at = np.searchsorted(recall[b], COCO_RECALL_THRESHOLDS, side="left")
        ap[b] = np.where(at < recall.shape[1], precision[b, np.minimum(at, recall.shape[1] - 1)], 0.0).mean()
    return ap
