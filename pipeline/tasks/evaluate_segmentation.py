"""Segmentation evaluation of one initialisation: fine-tune over seeds at the headline label fraction
(and at every ``evaluate.label_fractions`` when ``seg`` is in ``evaluate.transfer_sweep``), and the trivial
floor (a per-pixel class prior) on the same label subsets.

Every seed draws its own stratified subset of the labelled training chips (the same subsets as
classification), fine-tunes a fresh model and scores the fixed test split. A few test predictions are
kept so the report can draw overlays of every initialisation on the same chips.

torch and segmentation-models-pytorch are imported by :func:`evaluate_segmentation` only, so the floor's stage
starts without them (as in :mod:`pipeline.tasks.evaluate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import EvaluateConfig
from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.data.subsets import label_subset, validation_subset
from pipeline.metrics import segmentation_confusion, segmentation_metrics, summarise_runs
from pipeline.stats.resampled_metrics import segmentation_counts
from pipeline.tasks.evaluate import run_protocols, test_units, training_budget, transfer_protocols

if TYPE_CHECKING:
    from torch import nn

    from pipeline.runtime import Compute

log = logging.getLogger(__name__)
OVERLAY_CHIPS = 4


def _masked_split(chips: ChipSet, split: str) -> np.ndarray:
    """Chips of ``split`` with at least one scored pixel."""
    indices = chips.indices(split)
    return indices[[bool((np.asarray(chips.masks[i]) != MASK_IGNORE).any()) for i in indices]]


def evaluate_segmentation(make_backbone: Callable[[], nn.Module], backbone_name: str, chips: ChipSet,
                          cfg: EvaluateConfig, augment_preset: str, extra: dict,
                          compute: Compute | None = None) -> dict:
    """Per seed: fine-tune on a label subset, then mIoU / Dice on the test split (255 pixels ignored);
    ``compute`` defaults to fp32 on the CPU."""
    from pipeline.runtime import Compute  # torch: see the module docstring
    from pipeline.tasks.segmentation import build_segmenter, finetune_segmenter, predict_masks

    compute = compute or Compute()
    classes = chips.mask_classes or []

    settings = cfg.segmentation

    def fit_predict(subset: np.ndarray, seed: int, test: np.ndarray) -> tuple[np.ndarray, dict]:
        model = build_segmenter(make_backbone(), backbone_name, settings.architecture, chips.in_chans, len(classes))
        val = validation_subset(_masked_split(chips, "val"), settings.max_validation_chips, seed)
        model, record = finetune_segmenter(model, chips, subset, val, settings, augment_preset, seed, compute)
        return predict_masks(model, chips, test, compute, image_size=settings.image_size), record

    extra = {"architecture": settings.architecture, "finetune_budget": training_budget(settings,
                                                                                       "evaluate.segmentation"),
             **extra}
    return _evaluate(chips, cfg, cfg.seeds, fit_predict, extra, overlays=True)


def evaluate_segmentation_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """The trivial floor on the same label subsets: every test chip gets the subset's per-pixel prior (cheap, so
    over ``cfg.linear_seeds``)."""

    def fit_predict(subset: np.ndarray, seed: int, test: np.ndarray) -> tuple[np.ndarray, None]:
        prior = pixel_prior(np.asarray(chips.masks[subset]), len(chips.mask_classes), MASK_IGNORE)
        return np.broadcast_to(prior, (len(test), *prior.shape)), None

    extra = {"init": "floor", "architecture": "per-pixel class prior",
             "features": "the most frequent class at each pixel position of the labelled chips"}
    return _evaluate(chips, cfg, cfg.linear_seeds, fit_predict, extra, overlays=False)


def pixel_prior(masks: np.ndarray, num_classes: int, ignore: int) -> np.ndarray:
    """(S, S) class ids: per pixel position, the class most often seen there in ``masks`` (N, S, S), ignoring
    ``ignore``; positions never labelled take the most frequent class overall. Knows where classes tend to
    be (body vs air in CT, a scene's land cover) and nothing about the image: what any network must beat."""
    counts = np.stack([(masks == k).sum(axis=0) for k in range(num_classes)])  # (K, S, S)
    overall = int(counts.sum(axis=(1, 2)).argmax())
    return np.where(counts.sum(axis=0) > 0, counts.argmax(axis=0), overall).astype(np.uint8)


def _evaluate(chips: ChipSet, cfg: EvaluateConfig, seeds: list[int],
              fit_predict: Callable[[np.ndarray, int, np.ndarray], tuple[np.ndarray, dict | None]], extra: dict,
              overlays: bool) -> dict:
    """Seeds × ``transfer_protocols(cfg, "seg")``: each seed's label subset → ``fit_predict`` (test predictions
    and the training record, None for the floor) → test metrics, and per run the per-chip pixel counts
    (true / false positives, false negatives per class) the report's bootstrap resamples."""
    if chips.masks is None or not chips.mask_classes:
        raise ValueError("segmentation needs masks in the chip cache (masks/ beside the images) and mask_classes")
    train, test = _masked_split(chips, "train"), _masked_split(chips, "test")
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"segmentation needs masked train and test chips; found {len(train)} and {len(test)}")
    classes, truth = chips.mask_classes, np.asarray(chips.masks[test])

    def runs_at(fraction: float) -> tuple[list[dict], dict]:
        runs, counts, shown = [], [], {}
        for seed in seeds:
            subset = train[label_subset(chips.labels[train], fraction, seed)]
            predicted, record = fit_predict(subset, seed, test)
            confusion = segmentation_confusion(truth, predicted, len(classes), MASK_IGNORE)
            runs.append({"seed": seed, "n_labels": len(subset), **segmentation_metrics(confusion, classes),
                         **({"training": record} if record else {})})
            counts.append(segmentation_counts(truth, predicted, len(classes), MASK_IGNORE).tolist())
            if overlays and not shown:
                shown = {"chips": test[:OVERLAY_CHIPS].tolist(), "predicted": predicted[:OVERLAY_CHIPS].tolist()}
            log.info("segmentation %s %g%% labels, seed %d: mIoU %.3f", extra.get("init", ""), fraction * 100, seed,
                     runs[-1]["miou"])
        return runs, counts, shown

    done = run_protocols(transfer_protocols(cfg, "seg"), runs_at)
    names = ("miou", "mdice", *(f"dice_{name}" for name in classes))
    return {"task": "seg", "label_fraction": cfg.label_fraction, "label_fractions": list(cfg.label_fractions),
            "seeds": list(seeds), "n_test": len(test), "classes": classes,
            "per_seed": {protocol: runs for protocol, (runs, _, _) in done.items()},
            "summary": {protocol: summarise_runs(runs, names) for protocol, (runs, _, _) in done.items()},
            "test_units": test_units(chips, test, labelled=False),
            "test_outputs": {protocol: counts for protocol, (_, counts, _) in done.items()},
            "overlays": done["finetune"][2], **extra}
