"""SimCLR pretraining throughput: this pipeline's loop vs a loop built from lightly's parts vs the bare model.

Measures source images per second (one image = one pair of views), in one process, of
  (a) this pipeline's loop: ``pipeline.ssl.train.pretrain_simclr`` on an in-memory chip cache, as the
      pretrain stage runs it (augmentation, standardisation, one forward pass for both views, NT-Xent,
      clipping, AdamW, monitors);
  (b) the reference loop from lightly's documented SimCLR example: ``SimCLRTransform`` on PIL images,
      ``SimCLRProjectionHead``, ``NTXentLoss``, one forward per view, fp32, around the same timm backbone,
      same resolution, batch and optimiser; best of DataLoader workers {0, 1} (2-core machine);
  (c) the compute limit: the same model as (a), same memory format and precision, forward + NT-Xent +
      backward + AdamW on pre-made tensors.
  (d) where (a)'s time goes: (a)'s own step function (standardisation, both views in one pass, clipping, the
      fused AdamW, the monitors' statistics) on pre-made batches, without augmentation; (a) − (d) is what the
      augmentation thread costs the training threads.
It prints a/b (goal ≥ 1.3) and a/c (goal ≥ 0.9: the cost of everything that is not the model). ``--repeats N``
measures (c), (a), (d) N times in turn and reports the median of each ratio with its range: on a shared 2-core VM
one measurement drifts by ±5 %.

    python bench/pretrain_throughput.py                                     # CPU: resnet18, 64 px, batch 128
    python bench/pretrain_throughput.py --backbone resnet50 --image-size 224 --batch 256 --precision bf16  # GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.config import SimCLRConfig
from pipeline.data.chips import ChipSet
from pipeline.models.heads import SimCLRModel
from pipeline.runtime import Compute, resolve_compute
from pipeline.seeding import configure_runtime
from pipeline.ssl.loss import nt_xent
from pipeline.ssl.train import pretrain_simclr


def source_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 images with some structure (smoothed noise), the same for every loop."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, size // 8, size // 8, 3))
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.uint8)


def build_model(backbone: str, compute: Compute) -> SimCLRModel:
    torch.manual_seed(0)
    model = SimCLRModel(timm.create_model(backbone, num_classes=0, pretrained=False), 512, 128)
    return model.to(compute.device, memory_format=torch.channels_last)


def pipeline_loop(images: np.ndarray, args, compute: Compute) -> float:
    """(a): the production loop; epoch 2's rate (epoch 1 pays the one-off warm-up)."""
    n = len(images)
    chips = ChipSet(
        images=np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0,
        valid=np.ones((n, images.shape[1], images.shape[2]), bool), manifest=[{"split": "train", "label": ""}] * n,
        classes=[], channel_names=["r", "g", "b"], mean=np.full(3, 0.5, np.float32), std=np.full(3, 0.25, np.float32),
    )
    cfg = SimCLRConfig(init="random", epochs=2, batch_size=args.batch, image_size=args.image_size,
                       knn_every_epochs=0, resume=False)
    history = pretrain_simclr(build_model(args.backbone, compute), chips, cfg, "remote_multispectral", seed=0,
                              num_workers=args.workers, compute=compute)
    return history.images_per_s[-1]


class _PILDataset(Dataset):
    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = [Image.fromarray(image) for image in images], transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index])


def lightly_loop(images: np.ndarray, args, compute: Compute, workers: int) -> float:
    """(b): lightly's SimCLR example as documented (fp32, default memory format, a forward per view)."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(0)
    backbone = timm.create_model(args.backbone, num_classes=0, pretrained=False)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(backbone.num_features, 512, 128)).to(compute.device)
    criterion, optimizer = NTXentLoss(temperature=0.2), torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(_PILDataset(images, SimCLRTransform(input_size=args.image_size)), batch_size=args.batch,
                        shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0)
    rates = []
    for _ in range(2):  # epoch 1 warms up, epoch 2 is timed
        started = time.perf_counter()
        for x0, x1 in loader:
            z0, z1 = model(x0.to(compute.device)), model(x1.to(compute.device))
            loss = criterion(z0, z1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        rates.append(len(loader) * args.batch / (time.perf_counter() - started))
    return rates[-1]


def bare_model(args, compute: Compute, steps: int) -> float:
    """(c): forward + NT-Xent + backward + AdamW on pre-made tensors; nothing else."""
    model = build_model(args.backbone, compute)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    views = torch.randn(2 * args.batch, 3, args.image_size, args.image_size, device=compute.device)
    views = views.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with compute.autocast():
            _, projections = model(views)
        loss = nt_xent(*projections.float().chunk(2), temperature=0.2).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return _timed(step, steps, args.batch, compute)


def step_on_premade_batches(args, compute: Compute, steps: int) -> float:
    """(d): the pipeline's own training step (``_train_step``) on pre-made (B, 2, C, S, S) batches."""
    from pipeline.ssl.distributed import DistributedContext
    from pipeline.ssl.train import _train_step, build_optimizer
    from pipeline.data.datasets import ChannelStandardiser

    model = build_model(args.backbone, compute)
    cfg = SimCLRConfig(init="random", epochs=2, batch_size=args.batch, image_size=args.image_size)
    optimizer = build_optimizer(model, cfg, compute.device)
    standardise = ChannelStandardiser(np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    pairs = torch.rand(args.batch, 2, 3, args.image_size, args.image_size)

    def step() -> None:
        _train_step(model, optimizer, standardise, pairs, cfg, compute, DistributedContext())

    return _timed(step, steps, args.batch, compute)


def _timed(step, steps: int, batch: int, compute: Compute) -> float:
    """Source images per second of ``steps`` calls of ``step`` after one warm-up call."""
    step()
    _synchronise(compute)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronise(compute)
    return steps * batch / (time.perf_counter() - started)


def _synchronise(compute: Compute) -> None:
    if compute.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per loop")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of loop (a)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--skip-lightly", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="measure (c), (a), (d) this many times in turn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    configure_runtime(0)
    compute = resolve_compute(args.device, args.precision)
    images = source_images(args.batch * args.steps, args.image_size)
    result = {"backbone": args.backbone, "image_size": args.image_size, "batch": args.batch,
              "precision": compute.precision, "device": _device_name(compute), "threads": torch.get_num_threads()}
    rounds = []
    for _ in range(args.repeats):
        bare_before = bare_model(args, compute, args.steps)
        pipeline = pipeline_loop(images, args, compute)
        premade = step_on_premade_batches(args, compute, args.steps)
        bare = (bare_before + bare_model(args, compute, args.steps)) / 2  # drift-robust: around (a) and (d)
        rounds.append({"a_pipeline": pipeline, "c_bare_model": bare, "d_step_premade": premade})
    for key in rounds[0]:
        result[key] = float(np.median([r[key] for r in rounds]))
    for name, top in (("a_over_c", "a_pipeline"), ("d_over_c", "d_step_premade")):
        ratios = [r[top] / r["c_bare_model"] for r in rounds]
        result[name] = float(np.median(ratios))
        if len(rounds) > 1:
            result[f"{name}_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    if not args.skip_lightly:
        result["b_lightly"] = max(lightly_loop(images, args, compute, workers) for workers in (0, 1))
        result["a_over_b"] = result["a_pipeline"] / result["b_lightly"]
        result["b_over_c"] = result["b_lightly"] / result["c_bare_model"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


def _device_name(compute: Compute) -> str:
    if compute.device.type == "cuda":
        return torch.cuda.get_device_name(compute.device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.backends.cpu.get_cpu_capability()})"
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
