"""Detection transfer: a torchvision detector (Faster R-CNN, RetinaNet, FCOS) on the pipeline's timm backbone.

The detector's body is the backbone's timm ``features_only`` twin (feature maps at strides 4, 8, 16, 32),
filled with exactly the backbone's weights by the same check as segmentation
(:func:`pipeline.models.backbone.transfer_encoder_weights`: every body tensor from the backbone, only
classifier-head tensors left over), then a torchvision FPN and the detector's heads.

Chips are standardised by the pipeline's own train-split channel statistics before they reach the model,
so torchvision's ``GeneralizedRCNNTransform`` is set to the identity: mean 0, std 1 (not ImageNet's RGB
numbers, which would be wrong for CT windows and multispectral bands) and min/max size = the chip size (no
resizing: anchors are chosen in chip pixels). Boxes are ``(x0, y0, x1, y1)`` in chip pixels; torchvision's
label 0 is background, so box class ``k`` is label ``k + 1``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

from pipeline.augment_boxes import augment_with_boxes, build_box_transform
from pipeline.config import DetectionConfig, EvaluateConfig
from pipeline.data.chips import ChipSet
from pipeline.data.datasets import ChannelStandardiser
from pipeline.data.subsets import epoch_batches, validation_subset
from pipeline.metrics import detection_ap_at
from pipeline.models.backbone import feature_twin
from pipeline.runtime import Compute
from pipeline.transfer.engine import TransferTask, fine_tune, predict_in_batches
from pipeline.transfer.protocol import run_protocols, seed_runs, stratified_subsets, task_result, test_units, \
    training_budget, transfer_protocols
from pipeline.transfer.scoring import annotated_split, annotated_splits, detection_extra, detection_scoring

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
    features = FeaturePyramidBackbone(feature_twin(backbone, backbone_name, in_chans, FEATURE_LEVELS), cfg.fpn_channels)
    return ARCHITECTURES[cfg.architecture](features, num_classes + 1, cfg,
                                           identity_transform_options(in_chans, cfg.image_size or chip_size))


def _targets(boxes: list[np.ndarray], device) -> list[dict[str, torch.Tensor]]:
    """torchvision targets (boxes (K, 4) float, labels (K,) int64 ≥ 1) from (K, 5) x0, y0, x1, y1, class boxes."""
    return [{"boxes": torch.from_numpy(np.ascontiguousarray(b[:, :4], dtype=np.float32)).reshape(-1, 4).to(device),
             "labels": torch.from_numpy(b[:, 4].astype(np.int64) + 1).to(device)} for b in boxes]


class DetectionTask(TransferTask):
    """torchvision detector on the backbone's feature twin + FPN; the domain's box-aware augmentation; the
    detector's own losses; mAP@0.5 on validation."""

    channels_last = False  # torchvision's transform re-batches the images itself

    def __init__(self, chips: ChipSet, cfg: DetectionConfig, backbone_name: str, augment_preset: str,
                 compute: Compute):
        self.chips, self.cfg, self.backbone_name, self.compute = chips, cfg, backbone_name, compute
        self.new_lr_multiplier = cfg.head_lr_multiplier
        self.transform = build_box_transform(augment_preset if cfg.augment else "none")

    def build(self, backbone: nn.Module) -> nn.Module:
        return build_detector(backbone, self.backbone_name, self.chips.in_chans, len(self.chips.box_classes or []),
                              int(self.chips.images.shape[-1]), self.cfg)

    def parameter_groups(self, model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        body = list(model.backbone.body.parameters())
        body_ids = {id(p) for p in body}
        return body, [p for p in model.parameters() if id(p) not in body_ids]

    def batches(self, train: np.ndarray, seed: int) -> Iterator[tuple[torch.Tensor, list[np.ndarray]]]:
        standardise = ChannelStandardiser(self.chips.mean, self.chips.std)
        rng = np.random.default_rng([seed, 13])
        for step, positions in enumerate(epoch_batches(rng, len(train), self.cfg.batch_size)):
            pairs = [augment_with_boxes(self.transform, self.chips.images[i], self.chips.boxes[i], [seed, step, int(i)])
                     for i in train[positions]]
            yield standardise(torch.from_numpy(np.stack([image for image, _ in pairs]))), [b for _, b in pairs]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        images, boxes = batch
        with self.compute.autocast():
            losses = model(list(images.to(self.compute.device)), _targets(boxes, self.compute.device))
        return sum(value.float() for value in losses.values())

    def predict(self, model: nn.Module, indices: np.ndarray) -> list[np.ndarray]:
        return predict_boxes(model, self.chips, indices, self.compute)

    def validation_score(self, val: np.ndarray, predicted: list[np.ndarray]) -> float:
        return detection_ap_at([self.chips.boxes[i] for i in val], predicted, 0.5)


def predict_boxes(model: nn.Module, chips: ChipSet, indices: np.ndarray, compute: Compute = Compute(),
                  batch_size: int = 64) -> list[np.ndarray]:
    """Per chip (K, 6) float32: x0, y0, x1, y1 (chip pixels), score, class_index (0-based box class)."""

    def as_arrays(detections: list[dict]) -> list[np.ndarray]:
        return [torch.cat([found["boxes"].float(), found["scores"].float()[:, None],
                           (found["labels"] - 1).float()[:, None]], dim=1).cpu().numpy() for found in detections]

    batches = predict_in_batches(model, chips, indices, lambda images: model(list(images)), as_arrays, compute,
                                 batch_size)
    return [boxes for batch in batches for boxes in batch]


def evaluate_detection(make_backbone: Callable[[], nn.Module], backbone_name: str, chips: ChipSet,
                       cfg: EvaluateConfig, augment_preset: str, extra: dict, compute: Compute = Compute()) -> dict:
    """Per seed: fine-tune on a label subset (the same stratified draw over the chip labels as classification;
    ``augment_preset`` a key of :data:`pipeline.augment_boxes.BOX_AUGMENT_PRESETS`), then mAP@0.5 and
    mAP@0.5:0.95 on the test split."""
    train, test = annotated_splits(chips)
    settings, val_all = cfg.detection, annotated_split(chips, "val")

    def fit_predict(fraction: float, seed: int, subset: np.ndarray) -> tuple[list[np.ndarray], dict]:
        task = DetectionTask(chips, settings, backbone_name, augment_preset, compute)
        val = validation_subset(val_all, settings.max_validation_chips, seed)
        model, record = fine_tune(task, make_backbone(), subset, val, settings, seed, compute)
        return task.predict(model, test), record

    scoring = detection_scoring(chips, test)
    done = run_protocols(transfer_protocols(cfg, "det"),
                         seed_runs(cfg.seeds, stratified_subsets(chips, train), fit_predict, scoring,
                                   describe=lambda subset: {"n_label_boxes": int(sum(len(chips.boxes[i]) for i in subset))},
                                   label=extra.get("init", ""), map_runs=compute.map_runs))
    extra = {**detection_extra(chips, test, done["finetune"].first), "architecture": settings.architecture,
             "finetune_budget": training_budget(settings, "evaluate.detection"), **extra}
    return task_result(scoring, cfg, cfg.seeds, test_units(chips, test, labelled=False), done,
                       extra)
