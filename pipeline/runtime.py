"""Where a stage's tensors live, in which precision its forward pass runs, and how many of its independent runs
go side by side (seeds: :mod:`pipeline.seeding`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.side_by_side import map_side_by_side

AUTO_PARALLEL_RUNS_CAP = 8  # auto never forks more runs than this: each holds its own model and activations


@dataclass(frozen=True)
class Compute:
    """Where tensors live and in which precision the forward pass runs (the loss is always fp32)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"  # "fp32" or "bf16"
    compile_model: bool = False  # torch.compile the training model
    parallel_runs: int = 1  # a stage's fine-tunes side by side in forked processes (1: one after another, here)
    threads_per_run: int = 1  # torch threads of each side-by-side run
    cores: int = 0  # with parallel_runs 0 (auto): the cores the side-by-side runs share

    def map_runs(self, run: Callable, items: list) -> list:
        """``[run(item) for item in items]``, side by side when :attr:`parallel_runs` (or auto's choice for this
        many runs) is > 1."""
        if self.parallel_runs:
            return map_side_by_side(run, items, self.parallel_runs, lambda: torch.set_num_threads(self.threads_per_run))
        # auto: every run at threads_per_run, also when they run here one after another (1 core, or 1 run)
        stage_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads_per_run)
        try:
            workers = auto_side_by_side(len(items), self.cores // self.threads_per_run)
            return map_side_by_side(run, items, workers)
        finally:
            torch.set_num_threads(stage_threads)

    def autocast(self) -> torch.autocast:
        """bf16 autocast for the model's forward pass, or a disabled (no-op) context for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


def resolve_compute(
    device: str = "auto", precision: str = "auto", local_rank: int = 0, compile_model: bool = False,
    parallel_runs: int = 1, torch_threads: int = 0,
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
    return Compute(device=resolved, precision=precision, compile_model=compile_model,
                   **side_by_side_runs(resolved, parallel_runs, torch_threads))


def side_by_side_runs(device: torch.device, parallel_runs: int, torch_threads: int) -> dict:
    """Compute's side-by-side fields from ``runtime.parallel_runs`` (0 = auto) and ``runtime.torch_threads``
    (0 = auto: one per run). A GPU runs one at a time: a forked child cannot use its parent's CUDA."""
    if device.type != "cpu":
        if parallel_runs > 1:
            raise ValueError("runtime.parallel_runs: runs go side by side on the CPU only; use 0 or 1 on a GPU")
        return {"parallel_runs": 1, "threads_per_run": torch_threads}
    cores = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return {"parallel_runs": parallel_runs, "threads_per_run": torch_threads or 1, "cores": cores}


def auto_side_by_side(runs: int, slots: int) -> int:
    """How many of ``runs`` equal runs to start at once on ``slots`` (cores ÷ threads per run): the fewest
    workers that minimise the estimated wall time ``ceil(runs / k) · max(1, k / slots)``, up to twice the slots
    (time-slicing 3 one-thread fine-tunes on 2 cores finished 3 runs 1.2× sooner than 2 then 1) and
    :data:`AUTO_PARALLEL_RUNS_CAP`."""
    slots = max(1, slots)
    candidates = range(1, max(1, min(runs, 2 * slots, AUTO_PARALLEL_RUNS_CAP)) + 1)
    return min(candidates, key=lambda k: (math.ceil(runs / k) * max(1.0, k / slots), k))
