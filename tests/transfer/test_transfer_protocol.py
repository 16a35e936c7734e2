"""The shared transfer protocol: data-sized schedules, best-of-validation weights, early stopping, LP-FT heads,
the test split scored once, and the report's budget statement and under-training flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from pipeline.config import ConfigError, EvaluateConfig, FinetuneConfig, load_config, parse_config
from pipeline.data.chips import ChipSet
from pipeline.data.subsets import epoch_batches, validation_subset
from pipeline.models.backbone import create_backbone
from pipeline.models.heads import Classifier
from pipeline.report.training import below_floor_flags, budget_sentence, finetune_flags
from pipeline.training.features import extract_features
from pipeline.transfer import classification
from pipeline.transfer.classification import evaluate_classification
from pipeline.transfer.linear import fit_linear_probe, probe_as_linear_layer, probe_proba
from pipeline.transfer.loop import learning_rate_at, plan_schedule, pretrained_batchnorms, train_with_validation


def test_schedule_is_sized_by_the_labelled_subset():
    cfg = FinetuneConfig(epochs=10, min_steps=50, batch_size=32, max_validations=20)
    big, tiny = plan_schedule(3200, cfg), plan_schedule(20, cfg)
    assert (big.steps_per_epoch, big.steps, big.validate_every) == (100, 1000, 100)  # once per epoch
    assert (tiny.steps_per_epoch, tiny.steps) == (1, 50)  # the floor for tiny subsets
    assert tiny.validate_every == 3  # 50 one-step epochs: validation spread to at most 20 times
    assert plan_schedule(3200, cfg.model_copy(update={"steps": 7})).steps == 7  # the explicit override
    assert plan_schedule(3200, cfg).warmup_steps == 100


def test_learning_rate_warms_up_then_decays_to_zero():
    schedule = plan_schedule(100, FinetuneConfig(steps=100, batch_size=10, warmup_fraction=0.1))
    factors = [learning_rate_at(step, schedule) for step in range(100)]
    assert factors[0] < factors[5] < factors[9] <= 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[10] == 1.0 and factors[-1] < 0.01


def _scripted_run(scores: list[float], steps: int = 10, patience: int = 0, every: int = 1, start: bool = True,
                  trusted=None):
    """A linear model trained by SGD; validation returns ``scores`` in turn and remembers the weights it saw."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = FinetuneConfig(steps=steps, batch_size=1, patience=patience, warmup_fraction=0.0,
                         validate_every_epochs=every, max_validations=1000)
    seen, queue = [], iter(scores)

    def validate() -> float:
        seen.append(model.weight.detach().clone())
        return next(queue)

    batches = iter(lambda: torch.ones(2, 3), None)
    record = train_with_validation(model, optimizer, plan_schedule(1, cfg), batches, lambda b: model(b).sum(), validate,
                                   validate_start=start, gain_over_start_trusted=trusted)
    return model, record, seen


def test_the_best_validation_weights_are_restored():
    model, record, seen = _scripted_run([0.1, 0.2, 0.9, 0.3, float("nan"), 0.4, 0.2, 0.1, 0.1, 0.1, 0.1])
    assert record["best_step"] == 2 and record["val_score"] == 0.9 and not record["stopped_early"]
    assert torch.equal(model.weight, seen[2]) and not torch.equal(model.weight, seen[-1])
    assert [step for step, _ in record["val_curve"]] == list(range(11))  # step 0 (the start) is a candidate too


def test_a_fine_tune_that_only_degrades_its_start_ends_where_it_started():
    model, record, seen = _scripted_run([0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert record["best_step"] == 0 and torch.equal(model.weight, seen[0])
    _, random_start, _ = _scripted_run([0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], start=False)
    assert random_start["best_step"] == 1 and random_start["val_curve"][0][0] == 1  # a random head is no candidate


def test_the_start_is_kept_unless_the_best_checkpoints_gain_over_it_is_trusted():
    scores = [0.80, 0.81, 0.82, 0.95, 0.90, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    asked = []

    def trusted_above_0_9() -> bool:  # stands in for the bootstrap rule: only the 0.95 checkpoint is trusted
        asked.append(len(asked))
        return len(asked) == 3

    model, record, seen = _scripted_run(scores, trusted=trusted_above_0_9)
    assert record["best_step"] == 3 and torch.equal(model.weight, seen[3]) and "start_kept_within_noise" not in record
    assert len(asked) == 3  # asked at each new best above the start: 0.81, 0.82, 0.95
    model, record, seen = _scripted_run(scores, trusted=lambda: False)
    assert record["best_step"] == 0 and torch.equal(model.weight, seen[0]) and record["start_kept_within_noise"]
    assert record["val_score"] == 0.8
    rising = [0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86]
    _, patient, _ = _scripted_run(rising + [0.1] * 4, patience=2, trusted=lambda: False)
    # untrusted gains are still progress: it stops 2 validations after the last one (step 8), not after step 2
    assert patient["stopped_early"] and patient["steps_run"] == 8 and patient["best_step"] == 0


def test_the_lp_ft_margin_is_the_bootstrap_standard_error_of_the_paired_validation_difference():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 150)
    start = np.clip(labels * 0.3 + rng.random(150) * 0.7, 0, 1)
    rule = classification.GainOverStartRule(labels, margin_se=1.0, seed=5)
    assert rule.score(np.stack([1 - start, start], axis=1)) == pytest.approx(roc_auc_score(labels, start))
    for shift, trusted in ((0.0, False), (0.6, True)):  # noise only; a much better checkpoint
        latest = np.clip(start + shift * labels * rng.random(150) + rng.normal(0, 0.02, 150), 0, 1)
        rule.score(np.stack([1 - latest, latest], axis=1))
        naive = []  # the same resamples drawn as index lists and scored by scikit-learn
        for row in rule.weights:
            index = np.repeat(np.arange(150), row)
            naive.append(roc_auc_score(labels[index], latest[index]) - roc_auc_score(labels[index], start[index]))
        gain = roc_auc_score(labels, latest) - roc_auc_score(labels, start)
        assert rule.latest_beats_start() == trusted == (gain > np.std(naive, ddof=1))


def test_a_single_validation_of_the_last_weights_is_skipped():
    _, record, seen = _scripted_run([0.5] * 20, every=100, start=False)
    assert seen == [] and record["val_curve"] == [] and record["steps_run"] == 10 and record["best_step"] == 10
    _, with_start, _ = _scripted_run([0.5] * 20, every=100, start=True)
    assert [step for step, _ in with_start["val_curve"]] == [0, 10]  # LP-FT: start vs end is a real choice


def test_training_stops_after_patience_validations_without_gain():
    _, record, _ = _scripted_run([0.5, 0.6, 0.6, 0.55, 0.4] + [0.9] * 10, steps=20, patience=3)
    assert record["stopped_early"] and record["steps_run"] == 4 and record["best_step"] == 1
    _, never, _ = _scripted_run([0.5, 0.6, 0.6, 0.55, 0.4] + [0.9] * 20, steps=20, patience=0)
    assert not never["stopped_early"] and never["best_step"] == 5  # patience 0: the whole schedule runs


def test_without_a_validation_split_the_whole_schedule_runs_and_the_last_weights_stay():
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    record = train_with_validation(model, optimizer, plan_schedule(1, FinetuneConfig(steps=6, batch_size=1)),
                                   iter(lambda: torch.ones(2, 3), None), lambda b: model(b).sum(), None)
    assert record["steps_run"] == 6 and record["val_score"] is None and record["val_curve"] == []


def test_epoch_batches_visit_every_item_once_per_epoch_and_never_alone():
    batches = epoch_batches(np.random.default_rng(0), 10, 5)
    first_epoch = np.concatenate([next(batches), next(batches)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert next(epoch_batches(np.random.default_rng(0), 1, 8)).tolist() == [0, 0]
    assert len(next(epoch_batches(np.random.default_rng(0), 3, 8))) == 3
    with pytest.raises(ValueError, match="empty"):
        next(epoch_batches(np.random.default_rng(0), 0, 8))


def test_validation_subset_is_capped_and_fixed_per_seed():
    indices = np.arange(100, 300)
    assert validation_subset(indices, 500, 0) is indices
    capped = validation_subset(indices, 50, 3)
    assert len(capped) == 50 and set(capped) <= set(indices) and np.array_equal(capped, validation_subset(indices, 50, 3))


@pytest.mark.parametrize("classes, present", [(2, 2), (4, 3)])  # binary; a class absent from the subset
def test_the_lp_ft_head_reproduces_the_linear_probe(classes, present):
    rng = np.random.default_rng(classes)
    features = rng.normal(3.0, 2.0, (80, 6))
    labels = np.arange(80) % present
    features[:, 0] += labels * 2.0
    probe = fit_linear_probe(features, labels)
    weight, bias = probe_as_linear_layer(probe, classes)
    query = rng.normal(3.0, 2.0, (20, 6))
    logits = torch.from_numpy(query.astype(np.float32)) @ torch.from_numpy(weight).T + torch.from_numpy(bias)
    np.testing.assert_allclose(logits.softmax(dim=1).numpy(), probe_proba(probe, query, classes), atol=1e-4)
    reference = LogisticRegression(max_iter=2000).fit((features - features.mean(0)) / features.std(0), labels)
    np.testing.assert_allclose(probe_proba(probe, query, classes)[:, :present],
                               reference.predict_proba((query - features.mean(0)) / features.std(0)), atol=1e-4)


def _chips(n: int = 36, size: int = 32) -> ChipSet:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (n, 3, size, size)).astype(np.float32)
    labels = ["a", "b"] * (n // 2)
    for i, label in enumerate(labels):
        images[i, :, : size // 2] *= 0.3 if label == "a" else 1.0
    splits = ["train"] * (n // 2) + ["val"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    return ChipSet(images=images, valid=np.ones((n, size, size), bool),
                   manifest=[{"split": s, "label": lab} for s, lab in zip(splits, labels)], classes=["a", "b"],
                   channel_names=["r", "g", "b"], mean=np.full(3, 0.4, np.float32), std=np.full(3, 0.3, np.float32))


def test_a_classifier_started_from_the_probe_predicts_what_the_probe_predicts():
    chips = _chips()
    backbone = create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)[0]
    train, test = chips.indices("train"), chips.indices("test")
    probe = fit_linear_probe(extract_features(backbone, chips, train), chips.labels[train])
    model = Classifier(backbone, 2)
    weight, bias = probe_as_linear_layer(probe, 2)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight))
        model.head.bias.copy_(torch.from_numpy(bias))
    np.testing.assert_allclose(classification.predict_proba(model, chips, test),
                               probe_proba(probe, extract_features(backbone, chips, test), 2), atol=1e-4)


def test_training_scores_only_validation_chips_and_the_test_split_once(monkeypatch):
    chips = _chips()
    scored = []
    original = classification.predict_proba

    def recording(model, chips_, indices, *args, **kwargs):
        scored.append(set(np.asarray(indices).tolist()))
        return original(model, chips_, indices, *args, **kwargs)

    monkeypatch.setattr(classification, "predict_proba", recording)
    cfg = EvaluateConfig(label_fraction=1.0, label_fractions=[1.0], transfer_sweep=[], seeds=[0],
                         finetune=FinetuneConfig(steps=4, batch_size=8, max_validations=2, linear_probe_first=True))
    result = evaluate_classification(lambda: create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)[0], chips, cfg,
                               "remote_multispectral", {})
    val, test = set(chips.indices("val").tolist()), set(chips.indices("test").tolist())
    assert scored[-1] == test and all(chips_ <= val for chips_ in scored[:-1]) and len(scored) == 4  # 3 + test
    training = result["per_seed"]["finetune"][0]["training"]
    assert training["steps_planned"] == 4 and [step for step, _ in training["val_curve"]] == [0, 3, 4]
    assert result["finetune_budget"]["key"] == "evaluate.finetune"


def test_budget_and_under_training_are_stated_in_the_report():
    run = {"training": {"steps_run": 40, "steps_planned": 60, "stopped_early": True, "best_step": 0,
                        "val_curve": [[0, 0.9], [20, 0.8], [40, 0.8]]}}
    results = {"imagenet": {"finetune_budget": {"key": "evaluate.finetune", "epochs": 30, "min_steps": 200,
                                                "steps": None, "batch_size": 32, "lr": 1e-4, "patience": 5},
                            "per_seed": {"finetune": [run, run]}}}
    sentence = budget_sentence(results, "Fine-tuning")
    assert "30 epochs" in sentence and "at least 200 steps" in sentence and "2 of 2 stopped early" in sentence
    assert "In 2 of 2 the starting point" in sentence and "best validation score kept" in sentence
    unvalidated = {"training": {**run["training"], "val_curve": [], "best_step": 60, "stopped_early": False}}
    assert "the last weights scored" in budget_sentence(
        {"imagenet": {**results["imagenet"], "per_seed": {"finetune": [unvalidated]}}}, "Segmentation")
    cls = {"imagenet": {"linear_10pct": {"auroc": 0.9}, "finetune_10pct": {"auroc": 0.8},
                        "linear_100pct": {"auroc": 0.9}, "finetune_100pct": {"auroc": 0.95}},
           "floor": {"linear_10pct": {"auroc": 0.99}}}
    flags = finetune_flags(cls, 0.1, [0.1, 1.0])
    assert len(flags) == 1 and "imagenet, 10% labels" in flags[0] and "raise evaluate.finetune.epochs" in flags[0]
    seg = {"floor": {"finetune": {"miou": 0.5}}, "random": {"finetune": {"miou": 0.4}},
           "imagenet": {"finetune": {"miou": 0.6}}}
    assert [f.split(":")[0] for f in below_floor_flags(seg, "finetune", "miou", "evaluate.segmentation")] == ["random"]


@pytest.mark.parametrize("key, value", [("warmup_fraction", 1.0), ("epochs", 0), ("min_steps", 0), ("steps", 0),
                                        ("patience", -1), ("image_size", 0)])
def test_bad_schedule_values_name_their_key(key, value):
    raw = load_config().model_dump(mode="json")
    raw["evaluate"]["segmentation"][key] = value
    with pytest.raises(ConfigError, match=f"evaluate.segmentation.{key}"):
        parse_config(raw)


def test_the_demo_keeps_its_budget_in_params_not_in_library_defaults():
    demo, library = load_config().evaluate.finetune, FinetuneConfig()
    assert library.steps is None and library.epochs >= 10 and not math.isclose(demo.epochs, library.epochs)


def test_chips_without_a_class_label_still_get_label_subsets():
    from pipeline.data.subsets import label_subset

    labels = np.array([-1] * 30 + [0] * 10)  # masks-only images (HC18) beside a labelled class
    subset = label_subset(labels, 0.1, seed=0)
    assert (labels[subset] == -1).sum() == 3 and (labels[subset] == 0).sum() == 1
    assert set(subset) <= set(label_subset(labels, 0.5, seed=0))


def test_pretrained_batchnorm_statistics_are_kept_and_a_random_inits_are_learned():
    def run(init_statistics: bool, freeze: bool) -> tuple[nn.BatchNorm2d, nn.BatchNorm2d, torch.Tensor]:
        torch.manual_seed(0)
        backbone_bn, new_bn = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
        if init_statistics:  # as loaded from a pretrained checkpoint
            backbone_bn.running_mean.fill_(0.3)
            backbone_bn.running_var.fill_(2.0)
        model = nn.Sequential(nn.Conv2d(1, 2, 3), backbone_bn, nn.Conv2d(2, 2, 1), new_bn)
        before = backbone_bn.running_mean.clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        train_with_validation(model, optimizer, plan_schedule(1, FinetuneConfig(steps=3, batch_size=1)),
                              iter(lambda: torch.randn(4, 1, 8, 8) + 5, None), lambda b: model(b).pow(2).mean(),
                              None, freeze_pretrained_batchnorm=freeze)
        return backbone_bn, new_bn, before

    assert pretrained_batchnorms(nn.Sequential(nn.BatchNorm2d(2))) == []
    kept, learned, before = run(init_statistics=True, freeze=True)
    assert torch.equal(kept.running_mean, before) and not torch.all(learned.running_mean == 0)
    assert kept.weight.grad is not None  # its scale and shift still train
    drifted, _, before = run(init_statistics=True, freeze=False)
    assert not torch.equal(drifted.running_mean, before)
    random_init, _, before = run(init_statistics=False, freeze=True)
    assert not torch.equal(random_init.running_mean, before)  # a random init has no statistics to keep
