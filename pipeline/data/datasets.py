"""Torch datasets over the chip cache, and the one place where chips are standardised."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.augment import TwoViewTransform
from pipeline.data.chips import ChipSet


class ChannelStandardiser:
    """(x − mean) / std per channel, on whole batches in torch (vectorised, after augmentation).

    Values are not clamped afterwards: standardised reflectance and HU channels may legitimately
    exceed a few σ (docs/background.md §4).
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(np.asarray(std), dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] → standardised, channels_last for the CPU convolution kernels."""
        return ((batch - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


class TwoViewDataset(Dataset):
    """SimCLR pairs: each item is two independent augmentations of one chip, (2, C, S, S)."""

    def __init__(self, chips: ChipSet, indices: np.ndarray, preset: str, image_size: int, seed: int,
                 crop_scale: tuple[float, float] | None = None) -> None:
        self.chips = chips
        self.indices = np.asarray(indices)
        self.transform = TwoViewTransform(preset, image_size, seed, crop_scale)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Views depend on (seed, epoch, chip), never on worker count or call order."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> torch.Tensor:
        index = int(self.indices[item])
        image = np.ascontiguousarray(np.moveaxis(self.chips.images[index], 0, -1), dtype=np.float32)
        view_a, view_b = self.transform(image, index=index, epoch=self.epoch)
        return torch.from_numpy(np.stack([view_a, view_b]))


class ChipDataset(Dataset):
    """Un-augmented chips with their labels, for feature extraction and evaluation."""

    def __init__(self, chips: ChipSet, indices: np.ndarray) -> None:
        self.chips = chips
        self.indices = np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = int(self.indices[item])
        image = np.array(self.chips.images[index], dtype=np.float32)  # a writable copy of the memory-mapped chip
        return torch.from_numpy(image), int(self.chips.labels[index])


def augment_one_view(transform, image: np.ndarray, seed_words: list[int]) -> np.ndarray:
    """One augmented view of a (C, S, S) chip whose randomness is fixed by ``seed_words``."""
    transform.set_random_seed(int(np.random.SeedSequence(seed_words).generate_state(1)[0]))
    hwc = np.ascontiguousarray(np.moveaxis(np.asarray(image, dtype=np.float32), 0, -1))
    return np.ascontiguousarray(np.moveaxis(transform(image=hwc)["image"], -1, 0))


def resize_batch(batch: torch.Tensor, size: int | None) -> torch.Tensor:
    """(B, C, H, W) resized to (size, size), bilinear and antialiased when shrinking; unchanged for None or
    the same size (a fine-tune at ``image_size`` scores chips at the size it trained on)."""
    if size is None or tuple(batch.shape[-2:]) == (size, size):
        return batch
    return torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)
