"""Segmentation evaluation of one initialisation: fine-tune over seeds at the headline label fraction
(and at every ``evaluate.label_fractions`` when ``seg`` is in ``evaluate.transfer_sweep``).

Every seed draws its own stratified subset of the labelled training chips (the same subsets as
classification), fine-tunes a fresh model and scores the fixed test split. A few test predictions are
kept so the report can draw overlays of every initialisation on the same chips.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from torch import nn

from pipeline.config import EvaluateConfig
from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.data.subsets import label_subset
from pipeline.metrics import segmentation_confusion, segmentation_metrics, summarise_runs
from pipeline.runtime import Compute
from pipeline.tasks.evaluate import run_protocols, transfer_protocols
from pipeline.tasks.segmentation import build_segmenter, finetune_segmenter, predict_masks

log = logging.getLogger(__name__)
OVERLAY_CHIPS = 4


def _masked_split(chips: ChipSet, split: str) -> np.ndarray:
    """Chips of ``split`` with at least one scored pixel."""
    indices = chips.indices(split)
    return indices[[bool((np.asarray(chips.masks[i]) != MASK_IGNORE).any()) for i in indices]]


def evaluate_segmentation(make_backbone: Callable[[], nn.Module], backbone_name: str, chips: ChipSet,
                          cfg: EvaluateConfig, augment_preset: str, extra: dict,
                          compute: Compute = Compute()) -> dict:
    """Per seed: fine-tune on a label subset, then mIoU / Dice on the test split (255 pixels ignored)."""
    if chips.masks is None or not chips.mask_classes:
        raise ValueError("segmentation needs masks in the chip cache (masks/ beside the images) and mask_classes")
    train, test = _masked_split(chips, "train"), _masked_split(chips, "test")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"segmentation needs masked train and test chips; found {len(train)} and {len(test)}")
    classes, truth = chips.mask_classes, np.asarray(chips.masks[test])

    def runs_at(fraction: float) -> tuple[list[dict], dict]:
        runs, overlays = [], {}
        for seed in cfg.seeds:
            subset = train[label_subset(chips.labels[train], fraction, seed)]
            model = build_segmenter(make_backbone(), backbone_name, cfg.segmentation.architecture, chips.in_chans,
                                    len(classes))
            model = finetune_segmenter(model, chips, subset, cfg.segmentation, augment_preset, seed, compute)
            predicted = predict_masks(model, chips, test, compute)
            confusion = segmentation_confusion(truth, predicted, len(classes), MASK_IGNORE)
            runs.append({"seed": seed, "n_labels": len(subset), **segmentation_metrics(confusion, classes)})
            overlays = overlays or {"chips": test[:OVERLAY_CHIPS].tolist(),
                                    "predicted": predicted[:OVERLAY_CHIPS].tolist()}
            log.info("segmentation %g%% labels, seed %d: mIoU %.3f", fraction * 100, seed, runs[-1]["miou"])
        return runs, overlays

    done = run_protocols(transfer_protocols(cfg, "seg"), runs_at)
    names = ("miou", "mdice", *(f"dice_{name}" for name in classes))
    return {"task": "seg", "label_fraction": cfg.label_fraction, "label_fractions": list(cfg.label_fractions),
            "seeds": list(cfg.seeds), "n_test": len(test), "classes": classes,
            "architecture": cfg.segmentation.architecture,
            "per_seed": {protocol: runs for protocol, (runs, _) in done.items()},
            "summary": {protocol: summarise_runs(runs, names) for protocol, (runs, _) in done.items()},
            "overlays": done["finetune"][1], **extra}
