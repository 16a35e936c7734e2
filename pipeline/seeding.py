"""Process-wide settings a stage applies once at start: seeds, threads, deterministic kernels.

torch is set up only where a stage uses it. Importing torch (and with it torchvision and timm) is ~6 s of the
~7 s a data stage (demo, ingest) took to start on a 2-core CPU, and those stages draw no torch random numbers.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np


def configure_runtime(seed: int, torch_threads: int = 0, uses_torch: bool = True) -> None:
    """Seed every generator from the one params seed and, for torch stages, pin the thread count.

    Same seed + same thread count on the same CPU gives bit-identical metrics; the thread count is
    pinned because the reduction order of parallel kernels depends on it.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=False)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if uses_torch:
        _configure_torch(seed, torch_threads)


def _configure_torch(seed: int, torch_threads: int) -> None:
    import torch  # here, not at the top: see the module docstring

    # Under torchrun, the ranks on one host share its cores instead of each claiming all of them.
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(torch_threads or max(1, (os.cpu_count() or 1) // ranks_here))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
