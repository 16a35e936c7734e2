"""Where a stage's tensors live and in which precision its forward pass runs (seeds: :mod:`pipeline.seeding`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Compute:
    """Where tensors live and in which precision the forward pass runs (the loss is always fp32)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # "fp32" or "bf16"
    compile_model: bool = False  # torch.compile the training model

    def autocast(self) -> torch.autocast:
        """bf16 autocast for the model's forward pass, or a disabled (no-op) context for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def resolve_compute(
    device: str = "auto", precision: str = "auto", local_rank: int = 0, compile_model: bool = False
) -> Compute:
    """Turn the ``runtime.device`` / ``runtime.precision`` params into a :class:`Compute`.

    ``auto`` picks this process's GPU (``cuda:<LOCAL_RANK>`` under torchrun) when there is one, else the CPU;
    and bf16 on a GPU that supports it, fp32 on CPU: without native bf16 units (AVX2-only CPUs such as the
    2-core EPYC the demo is calibrated on) bf16 autocast is slower than fp32 (docs/scaling.md, mixed precision).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("runtime.device: cuda requested but torch sees no CUDA device")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    else:
        resolved = torch.device(device)
    if precision == "auto":
        precision = "bf16" if resolved.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return Compute(device=resolved, precision=precision, compile_model=compile_model)
