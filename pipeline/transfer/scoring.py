"""Each task's test chips and how its predictions are scored: torch-free, shared by the trained
initialisations and the trivial floors (:mod:`pipeline.floors`)."""

from __future__ import annotations

import numpy as np

from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.metrics import DETECTION_METRICS, classification_metrics, detection_map, segmentation_confusion, \
    segmentation_metrics
from pipeline.stats.resampled_metrics import detection_matches, segmentation_counts
from pipeline.transfer.protocol import TaskScoring


def labelled_splits(chips: ChipSet) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) chip indexes with a class label."""
    train, test = chips.indices("train", labelled=True), chips.indices("test", labelled=True)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"classification needs labelled train and test chips; found {len(train)} and {len(test)}")
    return train, test


def masked_split(chips: ChipSet, split: str) -> np.ndarray:
    """Chips of ``split`` with at least one scored pixel."""
    indices = chips.indices(split)
    return indices[[bool((np.asarray(chips.masks[i]) != MASK_IGNORE).any()) for i in indices]]


def masked_splits(chips: ChipSet) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) chips with a scored pixel; raises if the cache has no masks."""
    if chips.masks is None or not chips.mask_classes:
        raise ValueError("segmentation needs masks in the chip cache (masks/ beside the images) and mask_classes")
    return _train_and_test(chips, masked_split, "segmentation needs masked")


def annotated_split(chips: ChipSet, split: str) -> np.ndarray:
    """Chips of ``split`` whose source has box annotations (``None`` = unannotated, left out). Chips without
    any box are kept: they are true negatives, and false positives on them must cost precision."""
    indices = chips.indices(split)
    return indices[[chips.boxes[i] is not None for i in indices]]


def annotated_splits(chips: ChipSet) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) annotated chips; raises if the cache has no boxes."""
    if chips.boxes is None or not chips.box_classes:
        raise ValueError("detection needs boxes in the chip cache (a COCO boxes.json in the source folder)")
    return _train_and_test(chips, annotated_split, "detection needs annotated")


def _train_and_test(chips: ChipSet, split_of, needs: str) -> tuple[np.ndarray, np.ndarray]:
    train, test = split_of(chips, "train"), split_of(chips, "test")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"{needs} train and test chips; found {len(train)} and {len(test)}")
    return train, test


def classification_scoring(chips: ChipSet, test: np.ndarray) -> TaskScoring:
    """Metrics of (N, K) test probabilities; the seeds' confusion matrices summed."""
    truth = chips.labels[test]
    return TaskScoring("cls", lambda proba: classification_metrics(truth, proba), stored_proba,
                       accumulate=lambda proba: confusion_counts(truth, proba))


def segmentation_scoring(chips: ChipSet, test: np.ndarray) -> TaskScoring:
    """mIoU / Dice of (N, S, S) predicted class maps (255 unscored); stored: per-chip pixel counts."""
    classes, truth = chips.mask_classes, np.asarray(chips.masks[test])

    def metrics(predicted: np.ndarray) -> dict:
        return segmentation_metrics(segmentation_confusion(truth, predicted, len(classes), MASK_IGNORE), classes)

    return TaskScoring("seg", metrics,
                       lambda predicted: segmentation_counts(truth, predicted, len(classes), MASK_IGNORE).tolist(),
                       ("miou", "mdice", *(f"dice_{name}" for name in classes)))


def detection_scoring(chips: ChipSet, test: np.ndarray) -> TaskScoring:
    """COCO mAP of per-chip (K, 6) boxes; stored: the COCO matches at IoU 0.5."""
    truth = [chips.boxes[i] for i in test]
    return TaskScoring("det", lambda predicted: detection_map(truth, predicted),
                       lambda predicted: detection_matches(truth, predicted), DETECTION_METRICS)


def stored_proba(proba: np.ndarray) -> list[list[float]]:
    """Test probabilities as the result file keeps them, for the report's paired bootstrap (6 decimals: the AUROC
    recomputed from them matches the reported one to ~1e-6)."""
    return np.round(np.asarray(proba, dtype=np.float64), 6).tolist()


def confusion_counts(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    classes = proba.shape[1]
    return np.bincount(y_true * classes + proba.argmax(axis=1), minlength=classes * classes).reshape(classes, classes)


EXAMPLE_CHIPS = 4  # test chips whose predictions the report draws (the same chips for every init)
EXAMPLE_MIN_SCORE = 0.3  # boxes drawn in the report (the metric uses every scored box)


def detection_extra(chips: ChipSet, test: np.ndarray, first: list[np.ndarray] | None = None) -> dict:
    """What a detection result says about its test set, and (given the first run's predictions) the boxes drawn
    on the first test chips that hold a true box."""
    truth = [chips.boxes[i] for i in test]
    extra = {"classes": chips.box_classes, "n_test_boxes": int(sum(len(t) for t in truth))}
    if first is not None:
        with_boxes = test[[len(chips.boxes[i]) > 0 for i in test]]
        shown = (with_boxes if len(with_boxes) else test)[:EXAMPLE_CHIPS]
        position = {int(index): n for n, index in enumerate(test)}
        kept = [first[position[int(i)]] for i in shown]
        extra["examples"] = {"chips": shown.tolist(),
                             "predicted": [np.round(boxes[boxes[:, 4] >= EXAMPLE_MIN_SCORE], 2).tolist() for boxes in kept]}
    return extra
