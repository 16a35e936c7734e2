"""Detection transfer: a torchvision detector (Faster R-CNN, RetinaNet, FCOS) on the pipeline's timm backbone.

The detector's body is the backbone's timm ``features_only`` twin (feature maps at strides 4, 8, 16, 32),
filled with exactly the backbone's weights by the same check as segmentation
(:func:`pipeline.tasks.segmentation.transfer_encoder_weights`: every body tensor from the backbone, only
classifier-head tensors left over), then a torchvision FPN and the detector's heads.

Chips are standardised by the pipeline's own train-split channel statistics before they reach the model,
so torchvision's ``GeneralizedRCNNTransform`` is set to the identity: mean 0, std 1 (not ImageNet's RGB
numbers, which would be wrong for CT windows and multispectral bands) and min/max size = the chip size (no
resizing: anchors are chosen in chip pixels). Boxes are ``(x0, y0, x1, y1)`` in chip pixels; torchvision's
label 0 is background, so box class ``k`` is label ``k + 1``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import timm
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

from pipeline.augment_boxes import augment_with_boxes, build_box_transform
from pipeline.config import DetectionConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser
from pipeline.data.subsets import epoch_batches
from pipeline.metrics import detection_map
from pipeline.runtime import Compute
from pipeline.training.optim import transfer_optimizer
from pipeline.tasks.segmentation import transfer_encoder_weights
from pipeline.tasks.transfer_loop import plan_schedule, train_with_validation

FEATURE_LEVELS = (1, 2, 3, 4)  # timm out_indices: strides 4, 8, 16, 32 (64-px chips → 16 … 2 px maps)
BOX_HEAD_WIDTH = 256  # Faster R-CNN box head: torchvision's 1024 is sized for 800-px COCO images and 4× slower here


class FeaturePyramidBackbone(nn.Module):
    """timm ``features_only`` body + torchvision FPN: (B, C, H, W) → {"0".."3": (B, F, H/s, W/s)}."""

    def __init__(self, body: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), out_channels)
        self.out_channels = out_channels  # the attribute torchvision detectors read

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(level), f) for level, f in enumerate(self.body(images))))


def build_feature_body(backbone: nn.Module, backbone_name: str, in_chans: int) -> nn.Module:
    """The ``features_only`` twin of ``backbone`` with exactly its weights (raises if the transfer is not exact)."""
    body = timm.create_model(backbone_name, pretrained=False, features_only=True, out_indices=FEATURE_LEVELS,
                             in_chans=in_chans)
    transfer_encoder_weights(backbone, body)
    return body


def identity_transform_options(in_chans: int, chip_size: int) -> dict:
    """GeneralizedRCNNTransform options that neither resize nor renormalise the (already standardised) chips."""
    return {"min_size": chip_size, "max_size": chip_size, "image_mean": [0.0] * in_chans,
            "image_std": [1.0] * in_chans}


def _anchors(cfg: DetectionConfig, one_per_location: bool) -> AnchorGenerator:
    """Anchors in chip pixels per FPN level.

    FCOS takes one square "anchor" per level, which only sets the level's box-size range ([4a, 8a] in
    torchvision); doubling from the smallest size keeps those ranges contiguous, so no box falls between levels.
    """
    if one_per_location:
        smallest = cfg.anchor_sizes[0][0]
        return AnchorGenerator(tuple((smallest * 2**level,) for level in range(len(cfg.anchor_sizes))),
                               ((1.0,),) * len(cfg.anchor_sizes))
    return AnchorGenerator(tuple(tuple(sizes) for sizes in cfg.anchor_sizes),
                           (tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))


def _faster_rcnn(features: nn.Module, classes: int, cfg: DetectionConfig, options: dict) -> nn.Module:
    return FasterRCNN(features, rpn_anchor_generator=_anchors(cfg, False),
                      box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=2),
                      box_head=TwoMLPHead(features.out_channels * 7 * 7, BOX_HEAD_WIDTH),
                      box_predictor=FastRCNNPredictor(BOX_HEAD_WIDTH, classes),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=200, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64,
                      box_score_thresh=cfg.score_threshold, box_detections_per_img=cfg.max_detections, **options)


def _retinanet(features: nn.Module, classes: int, cfg: DetectionConfig, options: dict) -> nn.Module:
    return RetinaNet(features, classes, anchor_generator=_anchors(cfg, False), score_thresh=cfg.score_threshold,
                     detections_per_img=cfg.max_detections, **options)


def _fcos(features: nn.Module, classes: int, cfg: DetectionConfig, options: dict) -> nn.Module:
    return FCOS(features, classes, anchor_generator=_anchors(cfg, True), score_thresh=cfg.score_threshold,
                detections_per_img=cfg.max_detections, **options)


ARCHITECTURES = {"fasterrcnn": _faster_rcnn, "retinanet": _retinanet, "fcos": _fcos}


def build_detector(backbone: nn.Module, backbone_name: str, in_chans: int, num_classes: int, chip_size: int,
                   cfg: DetectionConfig) -> nn.Module:
    """``cfg.architecture`` on ``backbone``'s weights; ``num_classes`` object classes (background added here)."""
    features = FeaturePyramidBackbone(build_feature_body(backbone, backbone_name, in_chans), cfg.fpn_channels)
    return ARCHITECTURES[cfg.architecture](features, num_classes + 1, cfg,
                                           identity_transform_options(in_chans, cfg.image_size or chip_size))


def _targets(boxes: list[np.ndarray], device) -> list[dict[str, torch.Tensor]]:
    """torchvision targets (boxes (K, 4) float, labels (K,) int64 ≥ 1) from (K, 5) x0, y0, x1, y1, class boxes."""
    return [{"boxes": torch.from_numpy(np.ascontiguousarray(b[:, :4], dtype=np.float32)).reshape(-1, 4).to(device),
             "labels": torch.from_numpy(b[:, 4].astype(np.int64) + 1).to(device)} for b in boxes]


def finetune_detector(model: nn.Module, chips: ChipSet, train: np.ndarray, val: np.ndarray, cfg: DetectionConfig,
                      seed: int, compute: Compute = Compute(), augment_preset: str = "none") -> tuple[nn.Module, dict]:
    """Fine-tune body + FPN + heads on ``train`` chips (new layers at ``lr × head_lr_multiplier``) by the shared
    protocol, keeping the weights with the best validation mAP@0.5; each chip is augmented with its boxes by
    the domain's box-aware recipe (:mod:`pipeline.augment_boxes`) unless ``cfg.augment`` is off."""
    torch.manual_seed(seed)
    model = model.to(compute.device).train()
    body = list(model.backbone.body.parameters())
    body_ids = {id(p) for p in body}
    new = [p for p in model.parameters() if id(p) not in body_ids]
    optimizer = transfer_optimizer(body, new, cfg.lr, cfg.head_lr_multiplier, cfg.weight_decay, compute.device)
    standardise = ChannelStandardiser(chips.mean, chips.std)
    transform = build_box_transform(augment_preset if cfg.augment else "none")

    def prepared():
        rng = np.random.default_rng([seed, 13])
        for step, positions in enumerate(epoch_batches(rng, len(train), cfg.batch_size)):
            pairs = [augment_with_boxes(transform, chips.images[i], chips.boxes[i], [seed, step, int(i)])
                     for i in train[positions]]
            yield standardise(torch.from_numpy(np.stack([image for image, _ in pairs]))), [b for _, b in pairs]

    def loss_of(batch) -> torch.Tensor:
        images, boxes = batch
        with compute.autocast():
            losses = model(list(images.to(compute.device)), _targets(boxes, compute.device))
        return sum(value.float() for value in losses.values())

    def validate() -> float:
        return detection_map([chips.boxes[i] for i in val], predict_boxes(model, chips, val, compute))["map50"]

    record = train_with_validation(model, optimizer, plan_schedule(len(train), cfg), prepared(), loss_of,
                                   validate if len(val) else None, cfg.freeze_pretrained_batchnorm,
                                   prefetch=compute.device.type != "cpu")
    return model, record


@torch.no_grad()
def predict_boxes(model: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                  batch_size: int = 64) -> list[np.ndarray]:
    """Per chip (K, 6) float32: x0, y0, x1, y1 (chip pixels), score, class_index (0-based box class)."""
    model.eval()
    standardise = ChannelStandardiser(chips.mean, chips.std)
    out = []
    for start in range(0, len(indices), batch_size):
        images = standardise(torch.from_numpy(np.asarray(chips.images[indices[start : start + batch_size]],
                                                         dtype=np.float32)))
        with compute.autocast():
            detections = model(list(images.to(compute.device)))
        for found in detections:
            out.append(torch.cat([found["boxes"].float(), found["scores"].float()[:, None],
                                  (found["labels"] - 1).float()[:, None]], dim=1).cpu().numpy())
    return out
