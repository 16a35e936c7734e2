"""Detection evaluation of one initialisation: fine-tune over seeds at the headline label fraction
(and at every ``evaluate.label_fractions`` when ``det`` is in ``evaluate.transfer_sweep``).

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
from torch import nn

from pipeline.config import EvaluateConfig
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset
from pipeline.metrics import DETECTION_METRICS, detection_map, summarise_runs
from pipeline.runtime import Compute
from pipeline.tasks.evaluate import run_protocols, transfer_protocols
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
                       cfg: EvaluateConfig, extra: dict, compute: Compute = Compute()) -> dict:
    """Per seed: fine-tune on a label subset, then mAP@0.5 and mAP@0.5:0.95 on the test split."""
    if chips.boxes is None or not chips.box_classes:
        raise ValueError("detection needs boxes in the chip cache (a COCO boxes.json in the source folder)")
    train, test = annotated_split(chips, "train"), annotated_split(chips, "test")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"detection needs annotated train and test chips; found {len(train)} and {len(test)}")
    truth = [chips.boxes[i] for i in test]
    shown = _example_chips(chips, test)
    position = {int(index): n for n, index in enumerate(test)}

    def runs_at(fraction: float) -> tuple[list[dict], dict]:
        runs, examples = [], {}
        for seed in cfg.seeds:
            subset = train[label_subset(chips.labels[train], fraction, seed)]
            model = build_detector(make_backbone(), backbone_name, chips.in_chans, len(chips.box_classes),
                                   int(chips.images.shape[-1]), cfg.detection)
            model = finetune_detector(model, chips, subset, cfg.detection, seed, compute)
            predicted = predict_boxes(model, chips, test, compute)
            runs.append({"seed": seed, "n_labels": len(subset),
                         "n_label_boxes": int(sum(len(chips.boxes[i]) for i in subset)),
                         **detection_map(truth, predicted)})
            examples = examples or {"chips": shown.tolist(), "predicted": [
                np.round(predicted[position[int(i)]][predicted[position[int(i)]][:, 4] >= EXAMPLE_MIN_SCORE], 2).tolist()
                for i in shown]}
            log.info("detection %g%% labels, seed %d: mAP@0.5 %.3f, mAP@0.5:0.95 %.3f", fraction * 100, seed,
                     runs[-1]["map50"], runs[-1]["map"])
        return runs, examples

    done = run_protocols(transfer_protocols(cfg, "det"), runs_at)
    return {"task": "det", "label_fraction": cfg.label_fraction, "label_fractions": list(cfg.label_fractions),
            "seeds": list(cfg.seeds), "n_test": len(test),
            "n_test_boxes": int(sum(len(t) for t in truth)), "classes": chips.box_classes,
            "architecture": cfg.detection.architecture,
            "per_seed": {protocol: runs for protocol, (runs, _) in done.items()},
            "summary": {protocol: summarise_runs(runs, DETECTION_METRICS) for protocol, (runs, _) in done.items()},
            "examples": done["finetune"][1], **extra}
