"""Detection evaluation of one initialisation: fine-tune over seeds at the headline label fraction
(and at every ``evaluate.label_fractions`` when ``det`` is in ``evaluate.transfer_sweep``), and the trivial
floor (a box position prior) on the same label subsets.

Like segmentation, every seed draws its own stratified subset of the annotated training chips (the same
:func:`label_subset` draw over the chip labels), fine-tunes a fresh detector and scores COCO mAP on the fixed
test split. Chips without any box are kept in both splits: they are true negatives and false positives on
them must cost precision. A few test predictions are kept so the report can draw every initialisation's
boxes on the same chips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, box_iou

from pipeline.config import EvaluateConfig
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset, validation_subset
from pipeline.metrics import DETECTION_METRICS, detection_map, summarise_runs
from pipeline.runtime import Compute
from pipeline.stats.resampled_metrics import detection_matches
from pipeline.tasks.evaluate import run_protocols, test_units, training_budget, transfer_protocols
from pipeline.tasks.detection import build_detector, finetune_detector, predict_boxes

log = logging.getLogger(__name__)
EXAMPLE_CHIPS = 4
EXAMPLE_MIN_SCORE = 0.3  # boxes drawn in the report (the metric uses every scored box)


def annotated_split(chips: ChipSet, split: str) -> np.ndarray:
    """Chips of ``split`` whose source has box annotations (``None`` = unannotated, left out)."""
    indices = chips.indices(split)
    return indices[[chips.boxes[i] is not None for i in indices]]


def _example_chips(chips: ChipSet, test: np.ndarray) -> np.ndarray:
    """The first test chips with at least one true box (else the first test chips): fixed for every init."""
    with_boxes = test[[len(chips.boxes[i]) > 0 for i in test]]
    return (with_boxes if len(with_boxes) else test)[:EXAMPLE_CHIPS]


def evaluate_detection(make_backbone: Callable[[], nn.Module], backbone_name: str, chips: ChipSet,
                       cfg: EvaluateConfig, extra: dict, compute: Compute = Compute(),
                       augment_preset: str = "none") -> dict:
    """Per seed: fine-tune on a label subset (``augment_preset``: a key of
    :data:`pipeline.augment_boxes.BOX_AUGMENT_PRESETS`), then mAP@0.5 and mAP@0.5:0.95 on the test split."""

    settings = cfg.detection

    def fit_predict(subset: np.ndarray, seed: int, test: np.ndarray) -> tuple[list[np.ndarray], dict]:
        model = build_detector(make_backbone(), backbone_name, chips.in_chans, len(chips.box_classes or []),
                               int(chips.images.shape[-1]), settings)
        val = validation_subset(annotated_split(chips, "val"), settings.max_validation_chips, seed)
        model, record = finetune_detector(model, chips, subset, val, settings, seed, compute, augment_preset)
        return predict_boxes(model, chips, test, compute), record

    extra = {"architecture": settings.architecture, "finetune_budget": training_budget(settings, "evaluate.detection"),
             **extra}
    return _evaluate(chips, cfg, cfg.seeds, fit_predict, extra, examples=True)


def evaluate_detection_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """The trivial floor on the same label subsets: every test chip gets the subset's box prior (cheap, so over
    ``cfg.linear_seeds``)."""

    def fit_predict(subset: np.ndarray, seed: int, test: np.ndarray) -> tuple[list[np.ndarray], None]:
        prior = box_prior([chips.boxes[i] for i in subset], cfg.detection.max_detections)
        return [prior] * len(test), None

    extra = {"init": "floor", "architecture": "box position prior",
             "features": "the labelled chips' boxes where they were, scored by how many labelled boxes agree"}
    return _evaluate(chips, cfg, cfg.linear_seeds, fit_predict, extra, examples=False)


def box_prior(boxes: list[np.ndarray], max_detections: int, iou: float = 0.5) -> np.ndarray:
    """(K, 6) x0, y0, x1, y1, score, class: the labelled boxes at their own positions, each scored by the number
    of labelled same-class boxes overlapping it at IoU ≥ ``iou`` per labelled chip, duplicates removed by NMS.
    Knows where objects of each size tend to be and nothing about the image: what any detector must beat."""
    found = [b for b in boxes if len(b)]
    if not found:
        return np.zeros((0, 6), np.float32)
    every = torch.as_tensor(np.concatenate(found), dtype=torch.float32)
    same_class = every[:, 4, None] == every[None, :, 4]
    support = ((box_iou(every[:, :4], every[:, :4]) >= iou) & same_class).sum(dim=1) / max(1, len(boxes))
    keep = batched_nms(every[:, :4], support.float(), every[:, 4].long(), iou)[:max_detections]
    return torch.cat([every[keep, :4], support[keep, None].float(), every[keep, 4:5]], dim=1).numpy()


def _evaluate(chips: ChipSet, cfg: EvaluateConfig, seeds: list[int],
              fit_predict: Callable[[np.ndarray, int, np.ndarray], tuple[list[np.ndarray], dict | None]],
              extra: dict, examples: bool) -> dict:
    """Seeds × ``transfer_protocols(cfg, "det")``: each seed's label subset → ``fit_predict`` (test predictions
    and the training record, None for the floor) → test mAP, and per run the COCO matches at IoU 0.5 the
    report's bootstrap resamples."""
    if chips.boxes is None or not chips.box_classes:
        raise ValueError("detection needs boxes in the chip cache (a COCO boxes.json in the source folder)")
    train, test = annotated_split(chips, "train"), annotated_split(chips, "test")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"detection needs annotated train and test chips; found {len(train)} and {len(test)}")
    truth = [chips.boxes[i] for i in test]
    shown = _example_chips(chips, test)
    position = {int(index): n for n, index in enumerate(test)}

    def runs_at(fraction: float) -> tuple[list[dict], dict]:
        runs, matches, drawn = [], [], {}
        for seed in seeds:
            subset = train[label_subset(chips.labels[train], fraction, seed)]
            predicted, record = fit_predict(subset, seed, test)
            runs.append({"seed": seed, "n_labels": len(subset),
                         "n_label_boxes": int(sum(len(chips.boxes[i]) for i in subset)),
                         **detection_map(truth, predicted), **({"training": record} if record else {})})
            matches.append(detection_matches(truth, predicted))
            if examples and not drawn:
                drawn = {"chips": shown.tolist(), "predicted": [
                    np.round(predicted[position[int(i)]][predicted[position[int(i)]][:, 4] >= EXAMPLE_MIN_SCORE],
                             2).tolist() for i in shown]}
            log.info("detection %s %g%% labels, seed %d: mAP@0.5 %.3f, mAP@0.5:0.95 %.3f", extra.get("init", ""),
                     fraction * 100, seed, runs[-1]["map50"], runs[-1]["map"])
        return runs, matches, drawn

    done = run_protocols(transfer_protocols(cfg, "det"), runs_at)
    return {"task": "det", "label_fraction": cfg.label_fraction, "label_fractions": list(cfg.label_fractions),
            "seeds": list(seeds), "n_test": len(test),
            "n_test_boxes": int(sum(len(t) for t in truth)), "classes": chips.box_classes,
            "per_seed": {protocol: runs for protocol, (runs, _, _) in done.items()},
            "summary": {protocol: summarise_runs(runs, DETECTION_METRICS) for protocol, (runs, _, _) in done.items()},
            "test_units": test_units(chips, test, labelled=False),
            "test_outputs": {protocol: found for protocol, (_, found, _) in done.items()},
            "examples": done["finetune"][2], **extra}
