"""The continued-pretraining levers: frozen early stages stay exactly as they started (weights and BatchNorm
statistics), and BatchNorm recalibration gives the statistics of the clean chips, checked against the stem's
activations computed directly."""

import numpy as np
import pytest
import timm
import torch

from pipeline.config import SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.models.backbone import create_backbone
from pipeline.models.batchnorm import recalibrated_copy
from pipeline.models.freeze import early_stage_parameters
from pipeline.models.heads import SimCLRModel
from pipeline.ssl.train import pretrain_simclr


def _chips(n: int = 24, size: int = 32) -> ChipSet:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (n, 3, size, size)).astype(np.float32)
    manifest = [{"split": "train" if i < 16 else "val", "label": "ab"[i % 2]} for i in range(n)]
    return ChipSet(images=images, valid=np.ones((n, size, size), bool), manifest=manifest, classes=["a", "b"],
                   channel_names=["red", "green", "blue"], mean=np.full(3, 0.4, np.float32),
                   std=np.full(3, 0.3, np.float32))


@pytest.mark.parametrize("name, stages, last_frozen", [
    ("tf_efficientnet_lite0", 1, "blocks.0.0.bn2.bias"),  # stem + the stride-2 stage
    ("tf_efficientnet_lite0", 2, "blocks.1.1.bn3.bias"),
    ("resnet18", 1, "bn1.bias"),  # the stem is resnet's stride-2 stage
    ("resnet18", 2, "layer1.1.bn2.bias"),
])
def test_early_stages_end_where_the_next_feature_stage_begins(name, stages, last_frozen):
    model = timm.create_model(name, pretrained=False, num_classes=0)
    names = [n for n, _ in model.named_parameters()]
    frozen = early_stage_parameters(model, stages)
    assert frozen == names[: len(frozen)] and frozen[-1] == last_frozen
    assert early_stage_parameters(model, 0) == []
    with pytest.raises(ValueError, match="simclr.freeze_stages must be between 0 and"):
        early_stage_parameters(model, len(model.feature_info))


def test_frozen_stages_keep_weights_and_statistics_and_the_rest_trains():
    chips = _chips()
    backbone, _ = create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = SimCLRModel(backbone, 32, 16)
    cfg = SimCLRConfig(init="random", epochs=2, batch_size=8, image_size=32, knn_every_epochs=0, freeze_stages=2,
                       export="last", projection_hidden_dim=32, projection_dim=16)
    pretrain_simclr(model, chips, cfg, "natural_rgb", seed=0)
    after = model.backbone.state_dict()
    frozen_modules = ("conv_stem.", "bn1.", "blocks.0.", "blocks.1.")
    for key, value in after.items():
        if key.startswith(frozen_modules) and "num_batches_tracked" not in key:
            assert torch.equal(value, start[key]), key  # running_mean / running_var included
    assert not torch.equal(after["blocks.2.0.conv_pw.weight"], start["blocks.2.0.conv_pw.weight"])
    assert not torch.equal(after["blocks.2.0.bn1.running_mean"], start["blocks.2.0.bn1.running_mean"])
    assert all(p.requires_grad for p in model.backbone.parameters())  # handed back whole for fine-tuning


def test_recalibrated_statistics_are_those_of_the_clean_chips():
    chips = _chips()
    backbone, _ = create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)
    backbone.bn1.running_mean.fill_(5.0)  # statistics of some other data
    train = chips.indices("train")
    copy = recalibrated_copy(backbone, chips, train, batch_size=len(train))
    standardised = (torch.from_numpy(chips.images[train]) - 0.4) / 0.3
    with torch.no_grad():
        stem = backbone.conv_stem(standardised)  # the first BatchNorm's input, computed directly
    torch.testing.assert_close(copy.bn1.running_mean, stem.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(copy.bn1.running_var, stem.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert torch.equal(backbone.bn1.running_mean, torch.full_like(backbone.bn1.running_mean, 5.0))  # untouched
    assert torch.equal(copy.conv_stem.weight, backbone.conv_stem.weight) and not copy.training
    assert copy.bn1.momentum == backbone.bn1.momentum


def test_recalibration_turns_sync_batchnorm_into_plain_batchnorm_on_the_copy():
    chips = _chips()
    backbone = torch.nn.SyncBatchNorm.convert_sync_batchnorm(create_backbone("resnet18", "random", 3, seed=0)[0])
    copy = recalibrated_copy(backbone, chips, chips.indices("train"))  # would need a process group if still Sync
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in copy.modules())
    assert isinstance(backbone.bn1, torch.nn.SyncBatchNorm)


def test_recalibration_changes_only_the_exported_statistics_not_the_training():
    chips = _chips()

    def run(recalibrate: bool) -> torch.nn.Module:
        model = SimCLRModel(create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)[0], 32, 16)
        cfg = SimCLRConfig(init="random", epochs=2, batch_size=8, image_size=32, knn_every_epochs=1, export="last",
                           recalibrate_batchnorm=recalibrate, projection_hidden_dim=32, projection_dim=16)
        pretrain_simclr(model, chips, cfg, "natural_rgb", seed=0)
        return model.backbone

    plain, recalibrated = run(False), run(True)
    expected = recalibrated_copy(plain, chips, chips.indices("train")).state_dict()
    for key, value in recalibrated.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)  # same weights; statistics of the clean chips
    assert not torch.equal(plain.bn1.running_mean, recalibrated.bn1.running_mean)


def test_with_recalibration_epoch_0_is_still_the_starting_weights_as_they_came(monkeypatch):
    """best_knn must be able to fall back to the baseline init itself, not to a recalibrated variant of it."""
    from pipeline.ssl import train

    chips = _chips()
    backbone, _ = create_backbone("tf_efficientnet_lite0", "random", 3, seed=0)
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    monkeypatch.setattr(train, "knn_accuracy", lambda measured, *a, **k: 1.0 if measured is backbone else 0.5)
    model = SimCLRModel(backbone, 32, 16)
    cfg = SimCLRConfig(init="random", epochs=2, batch_size=8, image_size=32, knn_every_epochs=1,
                       recalibrate_batchnorm=True, projection_hidden_dim=32, projection_dim=16)
    history = pretrain_simclr(model, chips, cfg, "natural_rgb", seed=0)
    assert [row["knn_acc"] for row in history.epochs] == [1.0, 0.5, 0.5] and history.exported_epoch == 0
    for key, value in model.backbone.state_dict().items():
        if "num_batches_tracked" not in key:
            assert torch.equal(value, start[key]), key
