"""The linear probe (docs/background.md §2.1): logistic regression on frozen features, and the linear protocol
(cheap once features are extracted, so over ``evaluate.linear_seed_count`` seeds).

scikit-learn only, no torch: the classification floor runs the same probe on image statistics.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config import EvaluateConfig
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import label_subset
from pipeline.transfer.protocol import FractionRuns, run_protocols, seed_runs, transfer_protocols
from pipeline.transfer.scoring import classification_scoring

ABSENT_CLASS_MARGIN = 10.0  # logits below the lowest present class's bias: probability ~e^-10 before fine-tuning


def fit_linear_probe(train_features: np.ndarray, train_labels: np.ndarray, inverse_regularisation: float = 1.0,
                     max_iter: int = 2000) -> Pipeline:
    """Logistic regression on standardised frozen features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=inverse_regularisation, max_iter=max_iter))
    return model.fit(train_features, train_labels)


def probe_proba(probe: Pipeline, query_features: np.ndarray, num_classes: int) -> np.ndarray:
    """(Q, num_classes) probabilities. Classes absent from the (small) labelled subset get probability 0, so
    every protocol reports probabilities over the same class list."""
    proba = np.zeros((len(query_features), num_classes))
    proba[:, probe.classes_] = probe.predict_proba(query_features)
    return proba


def probe_as_linear_layer(probe: Pipeline, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight (K, F), bias (K,)) of one linear layer on raw features whose softmax equals the probe's
    probabilities: the standardisation is folded in, a binary probe's single logit is split ± half over its two
    classes, and classes absent from the subset get zero weight and a bias far below the others. This is the
    head LP-FT starts fine-tuning from."""
    scaler, logistic = probe.named_steps["standardscaler"], probe.named_steps["logisticregression"]
    coef, intercept = logistic.coef_, logistic.intercept_
    if len(logistic.classes_) == 2 and coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight = coef / scaler.scale_
    bias = intercept - weight @ scaler.mean_
    full_weight = np.zeros((num_classes, weight.shape[1]))
    full_bias = np.full(num_classes, bias.min() - ABSENT_CLASS_MARGIN)
    full_weight[logistic.classes_], full_bias[logistic.classes_] = weight, bias
    return full_weight.astype(np.float32), full_bias.astype(np.float32)


class LinearProbes:
    """The linear probe of each (label fraction, seed) subset, fitted once (and once per distinct subset): the
    linear protocol scores it and LP-FT starts its head from it."""

    def __init__(self, chips: ChipSet, train: np.ndarray, train_features: np.ndarray, cfg: EvaluateConfig):
        self.train, self.labels, self.features, self.cfg = train, chips.labels[train], train_features, cfg
        self.fitted: dict[tuple[float, int], tuple[np.ndarray, Pipeline]] = {}
        self.by_subset: dict[bytes, Pipeline] = {}  # the fit is deterministic: one subset, one fit

    def __call__(self, fraction: float, seed: int) -> tuple[np.ndarray, Pipeline]:
        """(chip indexes of the subset, the fitted probe)."""
        if (fraction, seed) not in self.fitted:
            positions = label_subset(self.labels, fraction, seed)
            same = self.by_subset.get(positions.tobytes())  # e.g. 100 %: every seed draws every chip
            self.fitted[fraction, seed] = self.train[positions], same if same is not None else fit_linear_probe(
                self.features[positions], self.labels[positions], self.cfg.linear.inverse_regularisation,
                self.cfg.linear.max_iter)
            self.by_subset[positions.tobytes()] = self.fitted[fraction, seed][1]
        return self.fitted[fraction, seed]

    def subset(self, fraction: float, seed: int) -> np.ndarray:
        return self(fraction, seed)[0]


def linear_protocols(chips: ChipSet, test: np.ndarray, probes: LinearProbes, test_features: np.ndarray,
                     cfg: EvaluateConfig) -> dict[str, FractionRuns]:
    """The headline linear probe plus one run per ``evaluate.label_fractions`` (features extracted once)."""
    num_classes = len(chips.classes)

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[np.ndarray, None]:
        return probe_proba(probes(fraction, seed)[1], test_features, num_classes), None

    return run_protocols(transfer_protocols(cfg, "cls", "linear"),
                         seed_runs(cfg.linear_seeds, probes.subset, fit_predict, classification_scoring(chips, test),
                                   label="linear"))
