"""The SimCLR loop and fine-tuning on a tiny in-memory chip set: it learns, monitors, and is deterministic."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import FinetuneConfig, SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.models.backbone import create_backbone
from pipeline.models.heads import SimCLRModel
from pipeline.runtime import Compute
from pipeline.ssl import train
from pipeline.ssl.train import pretrain_simclr
from pipeline.transfer.classification import ClassificationTask, predict_proba
from pipeline.transfer.engine import fine_tune


def _chips(n: int = 24, channels: int = 4, size: int = 32) -> ChipSet:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (n, channels, size, size)).astype(np.float32)
    labels = ["a", "b"] * (n // 2)
    manifest = [{"split": "train" if i < n * 2 // 3 else "val", "label": labels[i]} for i in range(n)]
    for i, row in enumerate(manifest):
        images[i, :, : size // 2] *= 0.3 if row["label"] == "a" else 1.0  # a learnable class cue
    return ChipSet(images=images, valid=np.ones((n, size, size), bool), manifest=manifest, classes=["a", "b"],
                   channel_names=[f"b{i}" for i in range(channels)], mean=np.full(channels, 0.4, np.float32),
                   std=np.full(channels, 0.3, np.float32))


def _pretrain(chips: ChipSet, **options) -> tuple[SimCLRModel, list]:
    cfg = SimCLRConfig(init="random", epochs=2, batch_size=8, image_size=32, knn_every_epochs=1,
                       projection_hidden_dim=32, projection_dim=16, **options)
    backbone, _ = create_backbone("tf_efficientnet_lite0", "random", chips.in_chans, seed=0)
    model = SimCLRModel(backbone, cfg.projection_hidden_dim, cfg.projection_dim)
    history = pretrain_simclr(model, chips, cfg, "remote_multispectral", seed=0)
    return model, history.epochs


def test_pretraining_is_deterministic_and_monitored():
    chips = _chips()
    model_a, history_a = _pretrain(chips)
    model_b, history_b = _pretrain(chips)
    for key, tensor in model_a.state_dict().items():
        assert torch.equal(tensor, model_b.state_dict()[key]), key
    assert history_a == history_b
    assert "knn_acc" in history_a[0] and "loss" not in history_a[0]  # epoch 0: the untrained baseline
    for row in history_a[1:]:
        assert np.isfinite(row["loss"]) and 0 <= row["top1"] <= 1 and row["embedding_std"] > 0 and row["lr"] > 0


def test_pretraining_changes_the_backbone():
    chips = _chips()
    before, _ = create_backbone("tf_efficientnet_lite0", "random", chips.in_chans, seed=0)
    after, _ = _pretrain(chips, export="last")
    assert not torch.equal(before.conv_stem.weight, after.backbone.conv_stem.weight)


NAN = float("nan")


@pytest.mark.parametrize("accuracies, exported", [((0.5, 0.7, 0.6), 1), ((0.5, 0.5, 0.4), 0), ((0.4, 0.5, 0.6), 2),
                                                  ((NAN, NAN, NAN), 2)])  # no labels (no kNN): the last weights
def test_the_backbone_of_the_best_validation_knn_epoch_is_exported(monkeypatch, accuracies, exported):
    """simclr.export best_knn: the backbone as it was at the epoch of the best kNN accuracy (the earliest on a
    tie; epoch 0 = the starting weights); the reference copies are taken when each kNN is measured."""
    seen = []

    def scripted_knn(backbone, *args, **kwargs):
        seen.append({key: value.detach().clone() for key, value in backbone.state_dict().items()})
        return accuracies[len(seen) - 1]

    monkeypatch.setattr(train, "knn_accuracy", scripted_knn)
    model, history = _pretrain(_chips())
    assert [row["knn_acc"] for row in history] == pytest.approx(accuracies, nan_ok=True)  # every epoch's value
    for key, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, seen[exported][key]), key
    if exported != 2:
        assert any(not torch.equal(seen[2][key], seen[exported][key]) for key in seen[2])  # not the last weights


def test_finetune_is_deterministic_and_returns_probabilities():
    chips = _chips()
    train, test = chips.indices("train"), chips.indices("val")
    cfg = FinetuneConfig(steps=3, batch_size=4)
    models = [fine_tune(ClassificationTask(chips, cfg, "remote_multispectral", Compute()),
                        create_backbone("tf_efficientnet_lite0", "random", 4, seed=0)[0], train, np.zeros(0, np.int64),
                        cfg, seed=1)[0] for _ in range(2)]
    runs = [predict_proba(model, chips, test) for model in models]
    assert runs[0].shape == (len(test), 2)
    np.testing.assert_allclose(runs[0].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_too_few_training_chips_is_a_clear_error():
    chips = _chips(n=2)
    cfg = SimCLRConfig(init="random", epochs=1, batch_size=8, image_size=32)
    model = SimCLRModel(create_backbone("tf_efficientnet_lite0", "random", 4)[0], 16, 8)
    with pytest.raises(ValueError, match="at least 2 training chips"):
        pretrain_simclr(model, chips, cfg, "remote_multispectral", seed=0)


def _resumable_run(chips: ChipSet, checkpoint: Path, key: str = "params-a", **options) -> tuple[SimCLRModel, list]:
    cfg = SimCLRConfig(init="random", epochs=3, batch_size=8, image_size=32, knn_every_epochs=1,
                       projection_hidden_dim=32, projection_dim=16, **options)
    backbone, _ = create_backbone("tf_efficientnet_lite0", "random", chips.in_chans, seed=0)
    model = SimCLRModel(backbone, cfg.projection_hidden_dim, cfg.projection_dim)
    history = pretrain_simclr(model, chips, cfg, "remote_multispectral", seed=0, checkpoint_path=checkpoint,
                              resume_key=key)
    return model, history.epochs


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, caplog):
    chips = _chips()
    full_model, full_history = _resumable_run(chips, tmp_path / "uninterrupted.pt")
    save = train._save_checkpoint

    def save_then_crash_after_epoch_2(path, run, key):
        save(path, run, key)
        if run.epoch == 2:
            raise KeyboardInterrupt  # the machine goes away right after the epoch-2 checkpoint

    monkeypatch.setattr(train, "_save_checkpoint", save_then_crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(chips, tmp_path / "crashed.pt")
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="pipeline.ssl.train"):
        resumed_model, resumed_history = _resumable_run(chips, tmp_path / "crashed.pt")
    assert "resuming SimCLR" in caplog.text and "step 4/6 (after epoch 2)" in caplog.text
    assert resumed_history == full_history
    for key, tensor in full_model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[key]), key


@pytest.mark.parametrize("crash_step", [1, 3])  # half-way through epoch 1 and through epoch 2
def test_resume_from_a_mid_epoch_checkpoint_ends_like_an_uninterrupted_run(tmp_path, monkeypatch, caplog, crash_step):
    chips = _chips()  # 16 train chips, batch 8: 2 steps per epoch
    full_model, full_history = _resumable_run(chips, tmp_path / "uninterrupted.pt")
    save = train._save_checkpoint
    steps_saved = []

    def save_then_crash(path, run, key):
        save(path, run, key)
        steps_saved.append(run.step)
        if run.step == crash_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _resumable_run(chips, tmp_path / "crashed.pt", checkpoint_every_steps=1)
    monkeypatch.undo()
    assert steps_saved == list(range(1, crash_step + 1))  # every step: mid-epoch and epoch ends
    with caplog.at_level(logging.INFO, logger="pipeline.ssl.train"):
        resumed_model, resumed_history = _resumable_run(chips, tmp_path / "crashed.pt", checkpoint_every_steps=1)
    assert f"step {crash_step}/6 (after epoch {crash_step // 2})" in caplog.text
    assert resumed_history == full_history  # the half-epoch's running sums were restored
    for key, tensor in full_model.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[key]), key


def _nan_loss_at_call(monkeypatch, bad_call: int) -> None:
    """Make the loss of the ``bad_call``-th step (0-based) NaN, as an overflow would."""
    real, calls = train.nt_xent_distributed, []

    def loss(z_a, z_b, temperature):
        out = real(z_a, z_b, temperature)
        calls.append(1)
        if len(calls) - 1 == bad_call:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(train, "nt_xent_distributed", loss)


def test_nonfinite_loss_stops_naming_the_step_and_last_checkpoint(tmp_path, monkeypatch):
    _nan_loss_at_call(monkeypatch, bad_call=3)
    checkpoint = tmp_path / "last.pt"
    with pytest.raises(FloatingPointError) as error:
        _resumable_run(_chips(), checkpoint)
    message = str(error.value)
    assert "step 3 (epoch 2)" in message and f"{checkpoint} (step 2)" in message
    assert "\n" not in message and torch.load(checkpoint, weights_only=False)["step"] == 2


def test_nonfinite_loss_can_skip_the_step(tmp_path, monkeypatch):
    _nan_loss_at_call(monkeypatch, bad_call=3)
    model, history = _resumable_run(_chips(), tmp_path / "last.pt", on_nonfinite_loss="skip")
    assert [row.get("skipped_steps", 0) for row in history] == [0, 0, 1, 0]
    assert all(np.isfinite(row["loss"]) for row in history[1:])
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


def test_checkpoint_of_other_params_or_finished_run_is_not_resumed(tmp_path, caplog):
    chips = _chips()
    checkpoint = tmp_path / "last.pt"
    _resumable_run(chips, checkpoint, key="params-a")
    with caplog.at_level(logging.INFO, logger="pipeline.ssl.train"):
        _resumable_run(chips, checkpoint, key="params-a")
        _resumable_run(chips, checkpoint, key="params-b")
    assert "is a finished run" in caplog.text and "belongs to other params" in caplog.text
    assert "resuming" not in caplog.text


def test_bf16_autocast_trains_with_an_fp32_loss():
    chips = _chips()
    cfg = SimCLRConfig(init="random", epochs=1, batch_size=8, image_size=32, knn_every_epochs=0,
                       projection_hidden_dim=32, projection_dim=16)
    model = SimCLRModel(create_backbone("tf_efficientnet_lite0", "random", 4, seed=0)[0], 32, 16)
    history = pretrain_simclr(model, chips, cfg, "remote_multispectral", seed=0,
                              compute=Compute(precision="bf16"))
    assert np.isfinite(history.last("loss")) and history.last("loss") > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never casts the weights



def _colour_coded_chips(n: int = 32, channels: int = 3, size: int = 32) -> ChipSet:
    """Every chip one flat colour of its own: an identity the domain's views keep (crops, flips, ±20 % band gain
    and brightness change it less than two random colours differ), so instance discrimination is learnable."""
    rng = np.random.default_rng(0)
    colour = rng.uniform(0.1, 0.9, (n, channels, 1, 1))
    images = (colour + rng.normal(0, 0.02, (n, channels, size, size))).astype(np.float32)
    manifest = [{"split": "train", "label": "x"} for _ in range(n)]
    return ChipSet(images=images, valid=np.ones((n, size, size), bool), manifest=manifest, classes=["x"],
                   channel_names=[f"b{i}" for i in range(channels)], mean=np.full(channels, 0.5, np.float32),
                   std=np.full(channels, 0.3, np.float32))


@torch.no_grad()
def _held_out_contrastive_loss(model: SimCLRModel, chips: ChipSet) -> float:
    """NT-Xent of fixed views (an epoch the training never draws) of every chip, the model in eval mode."""
    from pipeline.data.datasets import ChannelStandardiser, TwoViewDataset
    from pipeline.ssl.loss import nt_xent

    pairs = TwoViewDataset(chips, chips.indices("train"), "remote_multispectral", 32, seed=0)
    pairs.set_epoch(10_000)
    views = torch.stack([pairs[i] for i in range(len(pairs))])
    standardise = ChannelStandardiser(chips.mean, chips.std)
    model.eval()
    _, z_a = model(standardise(views[:, 0]))
    _, z_b = model(standardise(views[:, 1]))
    return float(nt_xent(z_a, z_b, 0.5).loss)


def test_simclr_learns_to_match_two_views_of_the_same_chip():
    chips = _colour_coded_chips()
    cfg = SimCLRConfig(init="random", epochs=20, batch_size=8, image_size=32, lr=0.002, temperature=0.5,
                       knn_every_epochs=0, projection_hidden_dim=64, projection_dim=32)
    model = SimCLRModel(create_backbone("tf_efficientnet_lite0", "random", chips.in_chans, seed=0)[0],
                        cfg.projection_hidden_dim, cfg.projection_dim)
    before = _held_out_contrastive_loss(model, chips)
    pretrain_simclr(model, chips, cfg, "remote_multispectral", seed=0)
    after = _held_out_contrastive_loss(model, chips)
    chance = float(np.log(2 * len(chips.manifest) - 1))  # NT-Xent when every other view is equally likely
    # 60 steps from random weights: 4.11 → 3.63 (1 torch thread) / 3.92 (2 threads); views shuffled between the
    # two halves of a batch (no true positives) would leave it at chance
    assert before == pytest.approx(chance, abs=0.1) and after < before - 0.15, (before, after, chance)
