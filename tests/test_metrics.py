"""Metric functions on hand-made cases and against independent formulas."""


import numpy as np
import pytest
from scipy import stats

from pipeline.data.subsets import label_subset
from pipeline.metrics import classification_metrics, mean_ci95, summarise_runs
from pipeline.training.features import knn_predict_proba


def test_perfect_prediction_scores_one():
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.eye(3)[y] * 0.9 + 0.1 / 3
    assert classification_metrics(y, proba) == {"acc": 1.0, "balanced_acc": 1.0, "macro_f1": 1.0, "auroc": 1.0}


def test_inverted_prediction_scores_zero():
    y = np.array([0, 1, 0, 1])
    proba = np.eye(2)[1 - y]
    result = classification_metrics(y, proba)
    assert result["acc"] == 0.0 and result["auroc"] == 0.0 and result["macro_f1"] == 0.0


def test_balanced_accuracy_by_hand():
    y = np.array([0, 0, 0, 0, 1])
    proba = np.eye(2)[[0, 0, 0, 0, 0]]
    result = classification_metrics(y, proba)
    assert result["acc"] == pytest.approx(0.8)
    assert result["balanced_acc"] == pytest.approx(0.5)  # (4/4 + 0/1) / 2


def test_mean_ci95_matches_student_t():
    values = [0.7, 0.8, 0.75, 0.9]
    mean, half = mean_ci95(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((high - low) / 2)
    assert mean_ci95([0.5]) == (0.5, 0.0)


def test_summary_keys():
    runs = [{"acc": 1.0, "balanced_acc": 1.0, "macro_f1": 1.0, "auroc": 1.0}] * 3
    summary = summarise_runs(runs)
    assert summary["acc"] == 1.0 and summary["acc_ci95"] == 0.0 and "auroc_ci95" in summary


def test_label_subsets_are_stratified_and_nested():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    small, large = label_subset(labels, 0.1, seed=3), label_subset(labels, 0.5, seed=3)
    assert set(small) <= set(large)
    assert [int((labels[small] == c).sum()) for c in range(3)] == [5, 3, 2]
    assert not np.array_equal(label_subset(labels, 0.1, seed=4), small)
    assert len(label_subset(np.array([0, 0, 1]), 0.01, seed=0)) == 2  # at least one per class


def test_knn_votes_for_nearest_class():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    proba = knn_predict_proba(train, np.array([0, 0, 1, 1]), np.array([[1.0, 0.05], [0.05, 1.0]]), 2, k=2)
    assert proba.argmax(axis=1).tolist() == [0, 1]
    assert np.allclose(proba.sum(axis=1), 1.0)
