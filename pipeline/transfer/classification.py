"""Classification transfer: a linear head on the backbone's pooled features, fine-tuned end to end (LP-FT by
default: the head starts as the seed's linear probe), beside the linear probe on frozen features."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler
from torch import nn

from pipeline.augment import build_view_transform
from pipeline.config import EvaluateConfig, FinetuneConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser, augment_one_view
from pipeline.data.subsets import epoch_batches, validation_subset
from pipeline.metrics import classification_metrics
from pipeline.models.heads import Classifier
from pipeline.runtime import Compute
from pipeline.stats.resampled_metrics import weighted_auroc
from pipeline.training.features import extract_features
from pipeline.transfer.engine import TransferTask, fine_tune, predict_in_batches
from pipeline.transfer.linear import LinearProbes, linear_protocols, probe_as_linear_layer
from pipeline.transfer.protocol import run_protocols, seed_runs, task_result, test_units, training_budget, \
    transfer_protocols
from pipeline.transfer.scoring import classification_scoring, labelled_splits


class ClassificationTask(TransferTask):
    """Backbone + linear head; cross-entropy on the domain's augmented views; AUROC on validation."""

    def __init__(self, chips: ChipSet, cfg: FinetuneConfig, augment_preset: str, compute: Compute,
                 head_init: tuple[np.ndarray, np.ndarray] | None = None, val_labels: np.ndarray | None = None,
                 seed: int = 0):
        self.chips, self.cfg, self.compute, self.head_init = chips, cfg, compute, head_init
        self.new_lr_multiplier = cfg.head_lr_multiplier
        self.start_is_candidate = head_init is not None
        self.size = cfg.image_size or int(chips.images.shape[-1])
        self.transform = build_view_transform(augment_preset, self.size, spatial_only=cfg.augmentation == "spatial")
        self.rule = GainOverStartRule(np.zeros(0, np.int64) if val_labels is None else val_labels,
                                      cfg.lp_ft_margin_se, seed)

    def build(self, backbone: nn.Module) -> nn.Module:
        model = Classifier(backbone, len(self.chips.classes))
        if self.head_init is not None:
            with torch.no_grad():
                model.head.weight.copy_(torch.from_numpy(self.head_init[0]))
                model.head.bias.copy_(torch.from_numpy(self.head_init[1]))
        return model

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return list(model.backbone.parameters()), list(model.head.parameters())

    def batches(self, train: np.ndarray, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        standardise, labels = ChannelStandardiser(self.chips.mean, self.chips.std), torch.as_tensor(self.chips.labels[train])
        rng = np.random.default_rng([seed, 7])
        for step, batch in enumerate(epoch_batches(rng, len(train), self.cfg.batch_size)):
            views = [augment_one_view(self.transform, self.chips.images[train[i]], [seed, step, int(i)]) for i in batch]
            yield standardise(torch.from_numpy(np.stack(views))), labels[batch]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        views, targets = batch
        with self.compute.autocast():
            logits = model(views.to(self.compute.device))
        return F.cross_entropy(logits.float(), targets.to(self.compute.device))

    def predict(self, model: nn.Module, indices: np.ndarray) -> np.ndarray:
        return predict_proba(model, self.chips, indices, self.compute, self.size)

    def validation_score(self, val: np.ndarray, predicted: np.ndarray) -> float:
        return self.rule.score(predicted)

    def gain_over_start_rule(self) -> Callable[[], bool] | None:
        return self.rule.latest_beats_start if self.cfg.lp_ft_margin_se else None


class GainOverStartRule:
    """Validation scoring that remembers the start (the LP-FT probe) and judges a later gain over it by the
    one-standard-error rule: trusted only when larger than ``margin_se`` bootstrap standard errors of the paired
    difference on the validation chips. A validation split of a few hundred images moves AUROC by a few
    hundredths between two checkpoints of equal quality; without a margin, LP-FT swaps a probe for a checkpoint
    that is only luckier on validation (docs/finetuning.md)."""

    def __init__(self, labels: np.ndarray, margin_se: float, seed: int, resamples: int = 200) -> None:
        self.labels, self.margin_se = labels, margin_se
        rng = np.random.default_rng([seed, 11])
        self.weights = (rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=resamples)
                        if len(labels) else np.zeros((resamples, 0), np.int64))
        self.start: np.ndarray | None = None
        self.latest: np.ndarray | None = None

    def score(self, proba: np.ndarray) -> float:
        self.start = proba if self.start is None else self.start
        self.latest = proba
        return validation_score(self.labels, proba)

    def latest_beats_start(self) -> bool:
        gain = validation_score(self.labels, self.latest) - validation_score(self.labels, self.start)
        resampled = (resampled_validation_scores(self.labels, self.latest, self.weights)
                     - resampled_validation_scores(self.labels, self.start, self.weights))
        return bool(gain > self.margin_se * np.nanstd(resampled, ddof=1))


def resampled_validation_scores(labels: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) :func:`validation_score` of each weighted resample (weights (B, N) unit counts)."""
    if len(np.unique(labels)) > 1:
        return weighted_auroc(labels, proba, weights)
    correct = (proba.argmax(axis=1) == labels).astype(np.float64)
    return (weights * correct).sum(axis=1) / np.maximum(weights.sum(axis=1), 1)


def validation_score(labels: np.ndarray, proba: np.ndarray) -> float:
    """The primary metric that picks the best weights: AUROC (the report's headline), accuracy where AUROC is
    undefined (one class in the validation split)."""
    metrics = classification_metrics(labels, proba)
    return metrics["acc"] if math.isnan(metrics["auroc"]) else metrics["auroc"]


def predict_proba(model: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                  image_size: int | None = None) -> np.ndarray:
    """(len(indices), K) class probabilities; chips are resized to ``image_size`` when given."""
    out = predict_in_batches(model, chips, indices, model, lambda logits: logits.float().softmax(dim=1).cpu(),
                             compute, batch_size=256, image_size=image_size)
    return torch.cat(out).numpy() if out else np.zeros((0, len(chips.classes)), np.float32)


def evaluate_classification(make_backbone: Callable[[], nn.Module], chips: ChipSet, cfg: EvaluateConfig,
                            augment_preset: str, extra: dict, compute: Compute = Compute()) -> dict:
    """Linear probe on frozen features (``cfg.linear_seeds``) + fine-tuning (``cfg.seeds``, LP-FT when
    ``linear_probe_first``) at every protocol's label fraction; ``make_backbone`` returns fresh weights."""
    train, test = labelled_splits(chips)
    backbone = make_backbone()
    size = cfg.finetune.image_size  # the linear probe sees what the fine-tune sees
    train_features = extract_features(backbone, chips, train, compute=compute, image_size=size)
    test_features = extract_features(backbone, chips, test, compute=compute, image_size=size)
    probes = LinearProbes(chips, train, train_features, cfg)
    linear = linear_protocols(chips, test, probes, test_features, cfg)
    val_all, settings = chips.indices("val", labelled=True), cfg.finetune

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[np.ndarray, dict]:
        head = probe_as_linear_layer(probes(fraction, seed)[1], len(chips.classes)) if settings.linear_probe_first \
            else None
        val = validation_subset(val_all, settings.max_validation_chips, seed)
        task = ClassificationTask(chips, settings, augment_preset, compute, head, chips.labels[val], seed)
        model, record = fine_tune(task, make_backbone(), subset, val, settings, seed, compute)
        return task.predict(model, test), record

    scoring = classification_scoring(chips, test)
    finetune = run_protocols(transfer_protocols(cfg, "finetune"),
                             seed_runs(cfg.seeds, probes.subset, fit_predict, scoring,
                                       label=extra.get("init", ""), map_runs=compute.map_runs))
    extra = {"linear_seeds": cfg.linear_seeds, **extra,
             "confusion": {"linear": linear["linear"].total.tolist(), "finetune": finetune["finetune"].total.tolist()},
             "embedding_2d": embedding_2d(test_features, chips.labels[test], cfg.seeds[0]),
             "finetune_budget": training_budget(settings, "evaluate.finetune")}
    return task_result(scoring, cfg, cfg.seeds, test_units(chips, test),
                       {**linear, **finetune}, extra)


def embedding_2d(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """t-SNE map of test features (standardised, PCA to ≤ 50 dims first, as t-SNE practice recommends)."""
    if len(features) < 5:
        return {"x": [], "y": [], "label": []}
    reduced = PCA(n_components=min(50, *features.shape), random_state=seed).fit_transform(
        StandardScaler().fit_transform(features)
    )
    perplexity = float(min(30, (len(features) - 1) / 3))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(reduced)
    return {"x": points[:, 0].round(3).tolist(), "y": points[:, 1].round(3).tolist(), "label": labels.tolist()}
