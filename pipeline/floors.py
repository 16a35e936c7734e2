"""The trivial floors every table shows beside the networks (docs/method.md, honest numbers): what a model
that knows the label subset's statistics and nothing about the image scores.

* classification: a linear probe on per-channel intensity statistics (mean, std, 5/50/95th percentiles). If a
  pretrained network cannot beat them it has learned nothing about shape or texture; on EuroSAT this floor
  already rivals ImageNet features;
* segmentation: the per-pixel class prior of the labelled masks;
* detection: the labelled boxes at their own positions, scored by how many labelled boxes agree.

They run the same seeds × label-fractions protocol and the same label subsets as the networks, over
``evaluate.linear_seeds`` (they are cheap), and nothing here imports torch: the floor stage starts in ~1 s.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import EvaluateConfig
from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.stats.resampled_metrics import iou_matrix
from pipeline.transfer.linear import LinearProbes, linear_protocols
from pipeline.transfer.protocol import run_protocols, seed_runs, stratified_subsets, task_result, test_units, \
    transfer_protocols
from pipeline.transfer.scoring import annotated_splits, detection_extra, detection_scoring, labelled_splits, \
    masked_splits, segmentation_scoring, classification_scoring

FLOOR_PERCENTILES = (5, 50, 95)


def image_statistics(chips: ChipSet, indices: np.ndarray) -> np.ndarray:
    """(len(indices), C · 5) features: per-channel mean, std and 5/50/95 percentiles of valid pixels."""
    rows = []
    for index in indices:
        image = np.asarray(chips.images[index], dtype=np.float32)  # (C, S, S)
        valid = np.asarray(chips.valid[index])
        pixels = image[:, valid] if valid.any() else image.reshape(image.shape[0], -1)
        rows.append(np.concatenate([pixels.mean(axis=1), pixels.std(axis=1),
                                    *np.percentile(pixels, FLOOR_PERCENTILES, axis=1)]))
    return np.asarray(rows, dtype=np.float32)


def pixel_prior(masks: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """(S, S) class ids: per pixel position, the class most often seen there in ``masks`` (N, S, S), ignoring
    ``ignore``; positions never labelled take the most frequent class overall. Knows where classes tend to
    be (body vs air in CT, a scene's land cover) and nothing about the image: what any network must beat."""
    counts = np.stack([(masks == k).sum(axis=0) for k in range(num_classes)])  # (K, S, S)
    overall = int(counts.sum(axis=(1, 2)).argmax())
    return np.where(counts.sum(axis=0) > 0, counts.argmax(axis=0), overall).astype(np.uint8)


def box_prior(boxes: list[np.ndarray], max_detections: int, iou: float = 0.5) -> np.ndarray:
    """(K, 6) x0, y0, x1, y1, score, class: the labelled boxes at their own positions, each scored by the number
    of labelled same-class boxes overlapping it at IoU ≥ ``iou`` per labelled chip, duplicates removed by
    per-class NMS (ties kept in the labelled boxes' order). Knows where objects of each size tend to be and
    nothing about the image: what any detector must beat."""
    found = [b for b in boxes if len(b)]
    if not found:
        return np.zeros((0, 6), np.float32)
    every = np.concatenate(found).astype(np.float32)
    same_class = every[:, 4, None] == every[None, :, 4]
    support = (((iou_matrix(every[:, :4], every[:, :4]) >= iou) & same_class).sum(axis=1) / max(1, len(boxes)))
    keep = class_nms(every[:, :4], support.astype(np.float32), every[:, 4], iou)[:max_detections]
    return np.concatenate([every[keep, :4], support[keep, None].astype(np.float32), every[keep, 4:5]], axis=1)


def class_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indexes kept by greedy non-maximum suppression within each class, by decreasing score (stable)."""
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for position, index in enumerate(order):
        if suppressed[index]:
            continue
        keep.append(index)
        rest = order[position + 1:]
        rest = rest[(classes[rest] == classes[index]) & ~suppressed[rest]]
        suppressed[rest[iou_matrix(boxes[index : index + 1], boxes[rest])[0] > iou]] = True
    return np.asarray(keep, dtype=np.int64)


def classification_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """The image-statistics linear probe, with the same label subsets as the backbones' probes."""
    train, test = labelled_splits(chips)
    probes = LinearProbes(chips, train, image_statistics(chips, train), cfg)
    done = linear_protocols(chips, test, probes, image_statistics(chips, test), cfg)
    extra = {"init": "floor", "linear_seeds": cfg.linear_seeds,
             "features": "per-channel mean, std, p5/p50/p95", "confusion": {"linear": done["linear"].total.tolist()}}
    return task_result(classification_scoring(chips, test), cfg, cfg.seeds, test_units(chips, test), done, extra)


def segmentation_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """Every test chip gets the label subset's per-pixel prior."""
    train, test = masked_splits(chips)

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[np.ndarray, None]:
        prior = pixel_prior(np.asarray(chips.masks[subset]), len(chips.mask_classes), MASK_IGNORE)
        return np.broadcast_to(prior, (len(test), *prior.shape)), None

    scoring = segmentation_scoring(chips, test)
    done = run_protocols(transfer_protocols(cfg, "seg"),
                         seed_runs(cfg.linear_seeds, stratified_subsets(chips, train), fit_predict, scoring, label="floor"))
    extra = {"classes": chips.mask_classes, "init": "floor", "architecture": "per-pixel class prior",
             "features": "the most frequent class at each pixel position of the labelled chips"}
    return task_result(scoring, cfg, cfg.linear_seeds, test_units(chips, test, labelled=False), done, extra)


def detection_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """Every test chip gets the label subset's box prior."""
    train, test = annotated_splits(chips)

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[list[np.ndarray], None]:
        return [box_prior([chips.boxes[i] for i in subset], cfg.detection.max_detections)] * len(test), None

    scoring = detection_scoring(chips, test)
    done = run_protocols(transfer_protocols(cfg, "det"),
                         seed_runs(cfg.linear_seeds, stratified_subsets(chips, train), fit_predict, scoring,
                                   describe=lambda subset: {"n_label_boxes": int(sum(len(chips.boxes[i]) for i in subset))},
                                   label="floor"))
    extra = {**detection_extra(chips, test), "init": "floor", "architecture": "box position prior",
             "features": "the labelled chips' boxes where they were, scored by how many labelled boxes agree"}
    return task_result(scoring, cfg, cfg.linear_seeds, test_units(chips, test, labelled=False), done, extra)


FLOORS = {"cls": classification_floor, "seg": segmentation_floor, "det": detection_floor}
