"""Classification evaluation of one initialisation: linear probe and fine-tuning over seeds.

Every seed draws its own stratified label subset (``label_fraction`` of the labelled train split);
the test split is fixed. Results keep per-seed values so the report can show mean ± 95 % CI.

torch and timm are imported by :func:`evaluate_backbone` only: the floor stages (classification and
segmentation) use this module without them (~7 s less start-up each on a 2-core CPU).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from pipeline.config import EvaluateConfig, TransferTraining
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset, validation_subset
from pipeline.metrics import classification_metrics, summarise_runs
from pipeline.protocols import fraction_key
from pipeline.tasks.floor import image_statistics
from pipeline.tasks.linear_probe import fit_linear_probe, probe_as_linear_layer, probe_proba

if TYPE_CHECKING:
    from torch import nn

    from pipeline.runtime import Compute

log = logging.getLogger(__name__)


def _labelled_splits(chips: ChipSet) -> tuple[np.ndarray, np.ndarray]:
    train, test = chips.indices("train", labelled=True), chips.indices("test", labelled=True)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"classification needs labelled train and test chips; found {len(train)} and {len(test)}")
    return train, test


def transfer_protocols(cfg: EvaluateConfig, task: str) -> dict[str, float]:
    """Protocol → label fraction a transfer task runs: ``finetune`` (the headline) and, when ``task`` is in
    ``evaluate.transfer_sweep``, ``finetune_<p>pct`` per ``evaluate.label_fractions``."""
    protocols = {"finetune": cfg.label_fraction}
    if task in cfg.transfer_sweep:
        protocols.update({fraction_key("finetune", fraction): fraction for fraction in cfg.label_fractions})
    return protocols


def run_protocols(protocols: dict[str, float], run_fraction: Callable[[float], object]) -> dict[str, object]:
    """``run_fraction`` once per distinct fraction (runs are deterministic, so the headline is not re-run)."""
    done: dict[float, object] = {}
    for fraction in protocols.values():
        if fraction not in done:
            done[fraction] = run_fraction(fraction)
    return {protocol: done[fraction] for protocol, fraction in protocols.items()}


class LinearProbes:
    """The linear probe of each (label fraction, seed) subset, fitted once: the linear protocol scores it and
    LP-FT starts its head from it."""

    def __init__(self, chips: ChipSet, train: np.ndarray, train_features: np.ndarray, cfg: EvaluateConfig):
        self.labels, self.features, self.cfg = chips.labels[train], train_features, cfg
        self.fitted: dict[tuple[float, int], tuple[np.ndarray, object]] = {}

    def __call__(self, fraction: float, seed: int) -> tuple[np.ndarray, object]:
        """(positions of the subset in the train split, the fitted probe)."""
        if (fraction, seed) not in self.fitted:
            positions = label_subset(self.labels, fraction, seed)
            self.fitted[fraction, seed] = positions, fit_linear_probe(
                self.features[positions], self.labels[positions], self.cfg.linear.inverse_regularisation,
                self.cfg.linear.max_iter)
        return self.fitted[fraction, seed]


def _linear_runs(chips, test, probes: LinearProbes, test_features, cfg: EvaluateConfig, fraction: float):
    """Linear probe per seed (``cfg.linear_seeds``: features are extracted once, so seeds are cheap) at one label
    fraction; also returns the seeds' summed confusion matrix and each run's test probabilities."""
    runs, outputs, confusion = [], [], np.zeros((len(chips.classes),) * 2, dtype=np.int64)
    for seed in cfg.linear_seeds:
        positions, probe = probes(fraction, seed)
        proba = probe_proba(probe, test_features, len(chips.classes))
        runs.append({"seed": seed, "n_labels": len(positions), **classification_metrics(chips.labels[test], proba)})
        outputs.append(stored_proba(proba))
        confusion += confusion_counts(chips.labels[test], proba)
    return runs, confusion, outputs


def stored_proba(proba: np.ndarray) -> list[list[float]]:
    """Test probabilities as the result file keeps them, for the report's paired bootstrap (6 decimals: the AUROC
    recomputed from them matches the reported one to ~1e-6)."""
    return np.round(np.asarray(proba, dtype=np.float64), 6).tolist()


def test_units(chips: ChipSet, test: np.ndarray, labelled: bool = True) -> dict:
    """Who the test units are, for a bootstrap that resamples them by group (patient / spatial block); a chip
    without a group (a cache written by hand) is its own group."""
    return {"groups": [chips.manifest[int(i)].get("group") or f"chip{int(i)}" for i in test],
            **({"labels": chips.labels[test].tolist()} if labelled else {})}


def _linear_protocols(chips, test, probes: LinearProbes, test_features, cfg: EvaluateConfig):
    """The headline linear probe plus one run per ``evaluate.label_fractions`` (features extracted once)."""
    protocols = {"linear": cfg.label_fraction,
                 **{fraction_key("linear", fraction): fraction for fraction in cfg.label_fractions}}
    done = run_protocols(protocols, lambda fraction: _linear_runs(chips, test, probes, test_features, cfg, fraction))
    return ({protocol: runs for protocol, (runs, _, _) in done.items()}, done["linear"][1],
            {protocol: outputs for protocol, (_, _, outputs) in done.items()})


def confusion_counts(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    classes = proba.shape[1]
    return np.bincount(y_true * classes + proba.argmax(axis=1), minlength=classes * classes).reshape(classes, classes)


def _result(runs_by_protocol: dict[str, list[dict]], cfg: EvaluateConfig, units: dict, outputs: dict[str, list],
            extra: dict) -> dict:
    """The result file: per-seed runs, their summaries and, aligned with ``per_seed``, each run's test outputs."""
    return {
        "label_fraction": cfg.label_fraction,
        "label_fractions": list(cfg.label_fractions),
        "seeds": list(cfg.seeds),
        "linear_seeds": cfg.linear_seeds,
        "n_test": len(units["groups"]),
        "per_seed": runs_by_protocol,
        "summary": {protocol: summarise_runs(runs) for protocol, runs in runs_by_protocol.items()},
        "test_units": units,
        "test_outputs": outputs,
        **extra,
    }


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


def evaluate_backbone(
    make_backbone: Callable[[], nn.Module], chips: ChipSet, cfg: EvaluateConfig, augment_preset: str, extra: dict,
    compute: Compute | None = None,
) -> dict:
    """Linear probe on frozen features + fine-tuning, per seed. ``make_backbone`` returns fresh weights;
    ``compute`` defaults to fp32 on the CPU."""
    from pipeline.runtime import Compute  # torch: see the module docstring
    from pipeline.training.features import extract_features

    compute = compute or Compute()
    train, test = _labelled_splits(chips)
    backbone = make_backbone()
    train_features = extract_features(backbone, chips, train, compute=compute)
    test_features = extract_features(backbone, chips, test, compute=compute)
    probes = LinearProbes(chips, train, train_features, cfg)
    runs, linear_confusion, outputs = _linear_protocols(chips, test, probes, test_features, cfg)
    splits = {"train": train, "val": chips.indices("val", labelled=True), "test": test}
    finetune = run_protocols(transfer_protocols(cfg, "finetune"), lambda fraction: _finetune_runs(
        make_backbone, chips, splits, probes, cfg, augment_preset, fraction, compute))
    finetune_confusion = finetune["finetune"][1]
    outputs.update({protocol: proba for protocol, (_, _, proba) in finetune.items()})
    extra = {**extra, "confusion": {"linear": linear_confusion.tolist(), "finetune": finetune_confusion.tolist()},
             "embedding_2d": embedding_2d(test_features, chips.labels[test], cfg.seeds[0]),
             "finetune_budget": training_budget(cfg.finetune, "evaluate.finetune")}
    return _result({**runs, **{protocol: seeds for protocol, (seeds, _, _) in finetune.items()}}, cfg,
                   test_units(chips, test), outputs, extra)


def training_budget(cfg: TransferTraining, key: str) -> dict:
    """What the report states about a transfer task's training: its schedule settings and their params key."""
    fields = ("epochs", "min_steps", "steps", "batch_size", "image_size", "lr", "patience")
    return {"key": key, **{name: getattr(cfg, name) for name in fields}}


def _finetune_runs(make_backbone, chips, splits: dict[str, np.ndarray], probes: LinearProbes, cfg: EvaluateConfig,
                   augment_preset: str, fraction: float, compute: Compute) -> tuple[list[dict], np.ndarray, list]:
    """Fine-tune per seed on that seed's label subset (the head started from its linear probe when
    ``linear_probe_first``), stopping on the validation split; score the test split once with the best weights.
    Also returns the seeds' summed test confusion matrix and each run's test probabilities."""
    from pipeline.tasks.classification import finetune_classifier, predict_proba  # timm: see the module docstring

    train, test, settings = splits["train"], splits["test"], cfg.finetune
    runs, outputs, confusion = [], [], np.zeros((len(chips.classes),) * 2, dtype=np.int64)
    for seed in cfg.seeds:
        positions, probe = probes(fraction, seed)
        head = probe_as_linear_layer(probe, len(chips.classes)) if settings.linear_probe_first else None
        model, record = finetune_classifier(make_backbone(), chips, train[positions],
                                            validation_subset(splits["val"], settings.max_validation_chips, seed), settings,
                                            augment_preset, seed, compute=compute, head_init=head)
        proba = predict_proba(model, chips, test, compute=compute, image_size=settings.image_size)
        runs.append({"seed": seed, "n_labels": len(positions), **classification_metrics(chips.labels[test], proba),
                     "training": record})
        outputs.append(stored_proba(proba))
        confusion += confusion_counts(chips.labels[test], proba)
        log.info("fine-tune %g%% labels, seed %d: auroc %.3f acc %.3f after %d of %d steps (best at %d)",
                 fraction * 100, seed, runs[-1]["auroc"], runs[-1]["acc"], record["steps_run"],
                 record["steps_planned"], record["best_step"])
    return runs, confusion, outputs


def evaluate_floor(chips: ChipSet, cfg: EvaluateConfig) -> dict:
    """The image-statistics floor with the same label subsets and linear probe as the backbones."""
    train, test = _labelled_splits(chips)
    probes = LinearProbes(chips, train, image_statistics(chips, train), cfg)
    runs, confusion, outputs = _linear_protocols(chips, test, probes, image_statistics(chips, test), cfg)
    extra = {"init": "floor", "features": "per-channel mean, std, p5/p50/p95", "confusion": {"linear": confusion.tolist()}}
    return _result(runs, cfg, test_units(chips, test), outputs, extra)
