"""Process-wide settings a stage applies once at start: seeds, threads, deterministic kernels."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch


def configure_runtime(seed: int, torch_threads: int = 0) -> None:
    """Seed every generator from the one params seed and pin the thread count.

    Same seed + same thread count on the same CPU gives bit-identical metrics; the thread count is
    pinned because the reduction order of parallel kernels depends on it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=False)
    threads = torch_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def stage_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"stages.{name}")
