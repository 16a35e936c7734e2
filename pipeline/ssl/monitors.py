"""Reference values of the SimCLR monitors, importable without torch (the report draws them)."""

from __future__ import annotations

import math


def embedding_std_reference(dim: int) -> float:
    """Std of uniformly spread unit vectors per dimension (≈ 1/√D): the no-collapse reference."""
    return 1.0 / math.sqrt(dim)
