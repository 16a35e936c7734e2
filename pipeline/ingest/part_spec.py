"""Which files one ingest part reads: ``--part I/N`` names part I (from 0) of N, a contiguous slice of the sorted
file list with about 1/N of its bytes. Contiguous, so that the parts chained in order are the files in the order a
single ingest reads them; by bytes, so that a folder of mixed scene sizes still gives parts of similar work."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PartSpec:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> PartSpec:
        """``"I/N"`` (as a SLURM array's or a Kubernetes indexed Job's index gives it, counting from 0).

        Raises:
            ValueError: one line naming the text and what a part looks like.
        """
        index, slash, count = text.partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(f"--part {text!r}: expected INDEX/COUNT, e.g. 0/8 for the first of 8 parts")
        spec = cls(int(index), int(count))
        if not 0 <= spec.index < spec.count:
            raise ValueError(f"--part {text}: the index counts from 0 to COUNT - 1 (0/{max(spec.count, 1)} … "
                             f"{max(spec.count, 1) - 1}/{max(spec.count, 1)})")
        return spec

    @property
    def name(self) -> str:
        return f"part-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def slice_of(self, sizes: Sequence[int]) -> slice:
        """The files of this part: a file belongs to the part in which its first byte falls."""
        if self.count == 1:
            return slice(0, len(sizes))
        starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64).tolist()
        total = sum(sizes)
        bounds = [bisect.bisect_left(starts, -(-total * k // self.count)) if k < self.count else len(sizes)
                  for k in (self.index, self.index + 1)]
        return slice(*bounds)


WHOLE = PartSpec(0, 1)
