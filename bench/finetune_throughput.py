"""Fine-tuning throughput: the pipeline's classification fine-tune against a bare loop on pre-made tensors.

Measures training images per second, in one process, of
  (a) the pipeline's loop: ``pipeline.transfer.engine.fine_tune`` of a ``ClassificationTask`` on an in-memory chip cache, as
      the evaluate stage runs it (the domain's augmentation per chip, standardisation, batches prepared in a
      background thread, cross-entropy, fused AdamW, the lr schedule), validation switched off;
  (b) the bare loop: the same model, memory format, precision and optimiser, forward + cross-entropy + backward
      + AdamW on tensors made before the clock starts.
(a) and (b) alternate (b, a, b, a, b) so drift of a shared VM cancels. It prints a/b (goal ≥ 0.9: the cost of
everything that is not the model).

    python bench/finetune_throughput.py                          # CPU: tf_efficientnet_lite0, 64 px, batch 32
    python bench/finetune_throughput.py --image-size 224 --batch 128 --steps 50 --precision bf16   # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import FinetuneConfig
from pipeline.data.chips import ChipSet
from pipeline.models.backbone import create_backbone
from pipeline.models.heads import Classifier
from pipeline.runtime import resolve_compute
from pipeline.seeding import configure_runtime
from pipeline.transfer.classification import ClassificationTask
from pipeline.transfer.engine import fine_tune
from pipeline.training.optim import transfer_optimizer


def make_chips(n: int, channels: int, size: int, classes: int) -> ChipSet:
    """Smoothed-noise chips with a class cue, in memory (the production path reads a memory map the same way)."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 1, (n, channels, size // 8, size // 8)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)
    labels = [str(i % classes) for i in range(n)]
    return ChipSet(images=images, valid=np.ones((n, size, size), bool),
                   manifest=[{"split": "train", "label": label} for label in labels],
                   classes=sorted(set(labels)), channel_names=[f"b{i}" for i in range(channels)],
                   mean=np.full(channels, 0.5, np.float32), std=np.full(channels, 0.29, np.float32))


def pipeline_rate(chips: ChipSet, args, compute) -> float:
    cfg = FinetuneConfig(steps=args.steps, batch_size=args.batch, warmup_fraction=0.1, augmentation=args.augmentation)
    backbone = create_backbone(args.backbone, "random", chips.in_chans, seed=0)[0]
    started = time.perf_counter()
    fine_tune(ClassificationTask(chips, cfg, args.preset, compute), backbone, chips.indices("train"),
              np.zeros(0, np.int64), cfg, 0, compute)
    return args.steps * args.batch / (time.perf_counter() - started)


def bare_rate(chips: ChipSet, args, compute) -> float:
    torch.manual_seed(0)
    model = Classifier(create_backbone(args.backbone, "random", chips.in_chans, seed=0)[0], len(chips.classes))
    model = model.to(compute.device, memory_format=torch.channels_last).train()
    optimizer = transfer_optimizer(model.backbone.parameters(), model.head.parameters(), 1e-4, 10.0, 1e-4,
                                   compute.device)
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(chips.images[rng.choice(len(chips.images), args.batch)]).contiguous(
        memory_format=torch.channels_last).to(compute.device),
        torch.from_numpy(rng.integers(0, len(chips.classes), args.batch)).to(compute.device))
        for _ in range(args.steps)]
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for images, labels in batches:
        with compute.autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if compute.device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--preset", default="remote_multispectral", help="augmentation recipe of the fine-tune")
    parser.add_argument("--augmentation", choices=["spatial", "full"], default="spatial")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--chips", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    configure_runtime(0)
    compute = resolve_compute(args.device, args.precision)
    chips = make_chips(args.chips, args.channels, args.image_size, classes=10)
    pipeline_rate(chips, args, compute)  # warm-up: allocator, kernels, thread pools
    bare, loop = [bare_rate(chips, args, compute)], []
    for _ in range(2):
        loop.append(pipeline_rate(chips, args, compute))
        bare.append(bare_rate(chips, args, compute))
    result = {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
              "device": str(compute.device), "settings": vars(args) | {"json": None},
              "pipeline_images_per_s": round(float(np.mean(loop)), 1),
              "bare_images_per_s": round(float(np.mean(bare)), 1),
              "pipeline_over_bare": round(float(np.mean(loop) / np.mean(bare)), 3)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
