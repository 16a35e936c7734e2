"""Classification evaluation of one initialisation: linear probe and fine-tuning over seeds.

Every seed draws its own stratified label subset (``label_fraction`` of the labelled train split);
the test split is fixed. Results keep per-seed values so the report can show mean ± 95 % CI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from torch import nn

from pipeline.config import EvaluateConfig
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset
from pipeline.metrics import classification_metrics, summarise_runs
from pipeline.runtime import Compute
from pipeline.tasks.classification import finetune_classifier
from pipeline.tasks.floor import image_statistics
from pipeline.tasks.probe import extract_features, linear_probe_proba

log = logging.getLogger(__name__)


def _labelled_splits(chips: ChipSet) -> tuple[np.ndarray, np.ndarray]:
    train, test = chips.indices("train", labelled=True), chips.indices("test", labelled=True)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"classification needs labelled train and test chips; found {len(train)} and {len(test)}")
    return train, test


def _linear_runs(chips, train, test, train_features, test_features, cfg: EvaluateConfig) -> list[dict]:
    runs = []
    for seed in cfg.seeds:
        subset = label_subset(chips.labels[train], cfg.label_fraction, seed)
        proba = linear_probe_proba(
            train_features[subset], chips.labels[train][subset], test_features, len(chips.classes),
            cfg.linear.inverse_regularisation, cfg.linear.max_iter,
        )
        runs.append({"seed": seed, "n_labels": len(subset), **classification_metrics(chips.labels[test], proba)})
    return runs


def _result(runs_by_protocol: dict[str, list[dict]], cfg: EvaluateConfig, n_test: int, extra: dict) -> dict:
    return {
        "label_fraction": cfg.label_fraction,
        "seeds": list(cfg.seeds),
        "n_test": n_test,
        "per_seed": runs_by_protocol,
        "summary": {protocol: summarise_runs(runs) for protocol, runs in runs_by_protocol.items()},
        **extra,
    }


def evaluate_backbone(
    make_backbone: Callable[[], nn.Module], chips: ChipSet, cfg: EvaluateConfig, augment_preset: str, extra: dict,
    compute: Compute = Compute(),
) -> dict:
    """Linear probe on frozen features + fine-tuning, per seed. ``make_backbone`` returns fresh weights."""
    train, test = _labelled_splits(chips)
    backbone = make_backbone()
    linear = _linear_runs(
        chips, train, test, extract_features(backbone, chips, train, compute=compute),
        extract_features(backbone, chips, test, compute=compute), cfg,
    )
    finetune = []
    for seed in cfg.seeds:
        subset = train[label_subset(chips.labels[train], cfg.label_fraction, seed)]
        proba = finetune_classifier(
            make_backbone(), chips, subset, test, cfg.finetune, augment_preset, seed, compute=compute
        )
        finetune.append({"seed": seed, "n_labels": len(subset), **classification_metrics(chips.labels[test], proba)})
        log.info("fine-tune seed %d: %s", seed, {k: round(v, 3) for k, v in finetune[-1].items()})
    return _result({"linear": linear, "finetune": finetune}, cfg, len(test), extra)


def evaluate_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """The image-statistics floor with the same label subsets and linear probe as the backbones."""
    train, test = _labelled_splits(chips)
    runs = _linear_runs(chips, train, test, image_statistics(chips, train), image_statistics(chips, test), cfg)
    return _result({"linear": runs}, cfg, len(test), {"init": "floor", "features": "per-channel mean, std, p5/p50/p95"})
