"""Segmentation transfer: an smp decoder on the pipeline's timm backbone, fine-tuned on a few labelled chips.

The encoder is smp's ``tu-<timm name>`` (a timm ``features_only`` model) filled with exactly the backbone's
weights (:func:`pipeline.models.backbone.transfer_encoder_weights`): SimCLR export, ImageNet or random. Pixels
marked 255 in the chip cache (nodata, DICOM padding, unlabelled) are ignored by the loss and by the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import build_view_transform
from pipeline.config import EvaluateConfig, SegmentationConfig
from pipeline.data.chips import MASK_IGNORE, ChipSet
from pipeline.data.datasets import ChannelStandardiser
from pipeline.data.subsets import epoch_batches, validation_subset
from pipeline.metrics import segmentation_confusion, segmentation_metrics
from pipeline.models.backbone import transfer_encoder_weights
from pipeline.runtime import Compute
from pipeline.transfer.engine import TransferTask, fine_tune, predict_in_batches
from pipeline.transfer.protocol import run_protocols, seed_runs, stratified_subsets, task_result, test_units, \
    training_budget, transfer_protocols
from pipeline.transfer.scoring import masked_split, masked_splits, segmentation_scoring

ARCHITECTURES = {"unet": smp.Unet, "fpn": smp.FPN, "deeplabv3plus": smp.DeepLabV3Plus}
OVERLAY_CHIPS = 4  # test predictions kept for the report's overlays (the same chips for every init)


def build_segmenter(backbone: nn.Module, backbone_name: str, architecture: str, in_chans: int,
                    num_classes: int) -> nn.Module:
    """smp model with a ``tu-`` encoder whose weights are exactly ``backbone``'s."""
    model = ARCHITECTURES[architecture](encoder_name=f"tu-{backbone_name}", encoder_weights=None,
                                        in_channels=in_chans, classes=num_classes)
    transfer_encoder_weights(backbone, model.encoder.model)
    return model


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, dice: nn.Module) -> torch.Tensor:
    """Cross-entropy + soft Dice, both ignoring 255: CE for calibrated pixels, Dice for small structures."""
    return F.cross_entropy(logits, masks, ignore_index=MASK_IGNORE) + dice(logits, masks)


class SegmentationTask(TransferTask):
    """smp encoder–decoder; the domain's augmentation applied jointly to image and mask; CE + Dice; mIoU."""

    def __init__(self, chips: ChipSet, cfg: SegmentationConfig, backbone_name: str, augment_preset: str,
                 compute: Compute):
        self.chips, self.cfg, self.backbone_name, self.compute = chips, cfg, backbone_name, compute
        self.new_lr_multiplier = cfg.decoder_lr_multiplier
        self.size = cfg.image_size or int(chips.images.shape[-1])
        self.transform = build_view_transform(augment_preset, self.size, spatial_only=cfg.augmentation == "spatial")
        self.dice = smp.losses.DiceLoss(mode="multiclass", ignore_index=MASK_IGNORE)

    def build(self, backbone: nn.Module) -> nn.Module:
        return build_segmenter(backbone, self.backbone_name, self.cfg.architecture, self.chips.in_chans,
                               len(self.chips.mask_classes))

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        decoder = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
        return list(model.encoder.parameters()), decoder

    def batches(self, train: np.ndarray, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        standardise = ChannelStandardiser(self.chips.mean, self.chips.std)
        rng = np.random.default_rng([seed, 11])
        for step, positions in enumerate(epoch_batches(rng, len(train), self.cfg.batch_size)):
            images, masks = self._augmented_pairs(train[positions], [seed, step])
            yield standardise(images), masks

    def _augmented_pairs(self, batch: np.ndarray, seed_words: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The domain's augmentation applied jointly to each image and its mask (spatial steps move both)."""
        images, masks = [], []
        for index in batch:
            self.transform.set_random_seed(int(np.random.SeedSequence([*seed_words, int(index)]).generate_state(1)[0]))
            out = self.transform(image=np.ascontiguousarray(np.moveaxis(self.chips.images[index], 0, -1),
                                                            dtype=np.float32),
                                 mask=np.asarray(self.chips.masks[index]))
            images.append(np.moveaxis(out["image"], -1, 0))
            masks.append(out["mask"])
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks).astype(np.int64))

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        images, masks = batch
        with self.compute.autocast():
            logits = model(images.to(self.compute.device))
        return segmentation_loss(logits.float(), masks.to(self.compute.device), self.dice)

    def predict(self, model: nn.Module, indices: np.ndarray) -> np.ndarray:
        return predict_masks(model, self.chips, indices, self.compute, image_size=self.size)

    def validation_score(self, val: np.ndarray, predicted: np.ndarray) -> float:
        confusion = segmentation_confusion(np.asarray(self.chips.masks[val]), predicted, len(self.chips.mask_classes),
                                           MASK_IGNORE)
        return segmentation_metrics(confusion, self.chips.mask_classes)["miou"]


def predict_masks(model: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                  batch_size: int = 64, image_size: int | None = None) -> np.ndarray:
    """(len(indices), S, S) uint8 argmax class per pixel at the chip size (a model trained at another
    ``image_size`` sees resized chips; its logits are resized back before the argmax)."""
    chip_size = tuple(chips.images.shape[2:])

    def at_chip_size(logits: torch.Tensor) -> np.ndarray:
        logits = logits.float()
        if tuple(logits.shape[-2:]) != chip_size:
            logits = F.interpolate(logits, size=chip_size, mode="bilinear", align_corners=False)
        return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()

    out = predict_in_batches(model, chips, indices, model, at_chip_size, compute, batch_size, image_size)
    return np.concatenate(out) if out else np.zeros((0, *chip_size), np.uint8)


def evaluate_segmentation(make_backbone: Callable[[], nn.Module], backbone_name: str, chips: ChipSet,
                          cfg: EvaluateConfig, augment_preset: str, extra: dict,
                          compute: Compute = Compute()) -> dict:
    """Per seed: fine-tune on a label subset (the same subsets as classification), then mIoU / Dice on the test
    split, at the headline label fraction and, when ``seg`` is in ``evaluate.transfer_sweep``, at every
    ``evaluate.label_fractions``."""
    train, test = masked_splits(chips)
    settings, val_all = cfg.segmentation, masked_split(chips, "val")

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[np.ndarray, dict]:
        task = SegmentationTask(chips, settings, backbone_name, augment_preset, compute)
        val = validation_subset(val_all, settings.max_validation_chips, seed)
        model, record = fine_tune(task, make_backbone(), subset, val, settings, seed, compute)
        return task.predict(model, test), record

    scoring = segmentation_scoring(chips, test)
    done = run_protocols(transfer_protocols(cfg, "seg"), seed_runs(cfg.seeds, stratified_subsets(chips, train),
                                                                   fit_predict, scoring, label=extra.get("init", ""),
                                                                   map_runs=compute.map_runs))
    first = done["finetune"].first
    extra = {"classes": chips.mask_classes, "architecture": settings.architecture,
             "finetune_budget": training_budget(settings, "evaluate.segmentation"),
             "overlays": {"chips": test[:OVERLAY_CHIPS].tolist(), "predicted": first[:OVERLAY_CHIPS].tolist()}, **extra}
    return task_result(scoring, cfg, cfg.seeds, test_units(chips, test, labelled=False), done, extra)
