"""Segmentation transfer: an smp decoder on the pipeline's timm backbone, fine-tuned on a few labelled chips.

The encoder is smp's ``tu-<timm name>`` (a timm ``features_only`` model). Its weights are copied from the
same backbone the classification stages use — SimCLR export, ImageNet or random — and the copy is exact:
every encoder tensor must come from the backbone, and the only backbone tensors left over may be the
classifier-head layers a feature extractor drops (:func:`transfer_encoder_weights`).

Pixels marked 255 in the chip cache (nodata, DICOM padding, unlabelled) are ignored by the loss and by
the metrics.
"""

from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import build_view_transform
from pipeline.config import SegmentationConfig
from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.data.datasets import ChannelStandardiser, resize_batch
from pipeline.data.subsets import epoch_batches
from pipeline.metrics import segmentation_confusion, segmentation_metrics
from pipeline.runtime import Compute
from pipeline.training.optim import transfer_optimizer
from pipeline.tasks.transfer_loop import plan_schedule, train_with_validation

ARCHITECTURES = {"unet": smp.Unet, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}
# Layers of a timm classifier that a features_only encoder does not have (EfficientNet's head conv + BN,
# ResNet's fc, generic heads): the only backbone tensors a transfer may leave unused.
HEAD_ONLY_PREFIXES = ("conv_head.", "bn2.", "fc.", "classifier.", "head.")


def build_segmenter(backbone: nn.Module, backbone_name: str, architecture: str, in_chans: int,
                    num_classes: int) -> nn.Module:
    """smp model with a ``tu-`` encoder whose weights are exactly ``backbone``'s."""
    model = ARCHITECTURES[architecture](encoder_name=f"tu-{backbone_name}", encoder_weights=None,
                                        in_channels=in_chans, classes=num_classes)
    transfer_encoder_weights(backbone, model.encoder.model)
    return model


def transfer_encoder_weights(backbone: nn.Module, encoder: nn.Module) -> list[str]:
    """Copy every encoder tensor from ``backbone``; return the (head-only) backbone keys left unused.

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


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice: nn.Module) -> torch.Tensor:
    """Cross-entropy + soft Dice, both ignoring 255: CE for calibrated pixels, Dice for small structures."""
    return F.cross_entropy(logits, masks, ignore_index=MASK_IGNORE) + dice(logits, masks)


def finetune_segmenter(model: nn.Module, chips: ChipSet, train: np.ndarray, val: np.ndarray,
                       cfg: SegmentationConfig, augment_preset: str, seed: int,
                       compute: Compute = Compute()) -> tuple[nn.Module, dict]:
    """Fine-tune encoder + decoder on ``train`` chips (decoder at ``lr × decoder_lr_multiplier``) by the shared
    protocol, keeping the weights with the best validation mIoU; returns the model and the training record."""
    torch.manual_seed(seed)
    model = model.to(compute.device, memory_format=torch.channels_last).train()
    decoder = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer = transfer_optimizer(model.encoder.parameters(), decoder, cfg.lr, cfg.decoder_lr_multiplier,
                                   cfg.weight_decay, compute.device)
    dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=MASK_IGNORE)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    size = cfg.image_size or int(chips.images.shape[-1])
    transform = build_view_transform(augment_preset, size, spatial_only=cfg.augmentation == "spatial")
    classes = len(chips.mask_classes or [])

    def prepared():
        rng = np.random.default_rng([seed, 11])
        for step, positions in enumerate(epoch_batches(rng, len(train), cfg.batch_size)):
            images, masks = _augmented_pairs(transform, chips, train[positions], [seed, step])
            yield standardise(images), masks

    def loss_of(batch) -> torch.Tensor:
        images, masks = batch
        with compute.autocast():
            logits = model(images.to(compute.device))
        return segmentation_loss(logits.float(), masks.to(compute.device), dice)

    def validate() -> float:
        predicted = predict_masks(model, chips, val, compute, image_size=size)
        confusion = segmentation_confusion(np.asarray(chips.masks[val]), predicted, classes, MASK_IGNORE)
        return segmentation_metrics(confusion, chips.mask_classes)["miou"]

    record = train_with_validation(model, optimizer, plan_schedule(len(train), cfg), prepared(), loss_of,
                                   validate if len(val) else None, cfg.freeze_pretrained_batchnorm,
                                   prefetch=compute.device.type != "cpu")
    return model, record


def _augmented_pairs(transform, chips: ChipSet, batch: np.ndarray, seed_words: list[int]):
    """The domain's augmentation applied jointly to each image and its mask (spatial steps move both)."""
    images, masks = [], []
    for index in batch:
        transform.set_random_seed(int(np.random.SeedSequence([*seed_words, int(index)]).generate_state(1)[0]))
        out = transform(image=np.ascontiguousarray(np.moveaxis(chips.images[index], 0, -1), dtype=np.float32),
                        mask=np.asarray(chips.masks[index]))
        images.append(np.moveaxis(out["image"], -1, 0))
        masks.append(out["mask"])
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks).astype(np.int64))


@torch.no_grad()
def predict_masks(model: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                  batch_size: int = 64, image_size: int | None = None) -> np.ndarray:
    """(len(indices), S, S) uint8 argmax class per pixel at the chip size (a model trained at another
    ``image_size`` sees resized chips; its logits are resized back before the argmax)."""
    model.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    chip_size = tuple(chips.images.shape[2:])
    out = []
    for start in range(0, len(indices), batch_size):
        images = torch.from_numpy(np.asarray(chips.images[indices[start : start + batch_size]], dtype=np.float32))
        with compute.autocast():
            logits = model(standardise(resize_batch(images, image_size)).to(compute.device)).float()
        if tuple(logits.shape[-2:]) != chip_size:
            logits = F.interpolate(logits, size=chip_size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *chip_size), np.uint8)
