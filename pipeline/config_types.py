"""The building blocks every params.yaml section model shares: strict, frozen models and constrained numbers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Percentiles = tuple[Annotated[float, Field(ge=0, le=100)], Annotated[float, Field(ge=0, le=100)]]


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be silently ignored) and a loaded config cannot change."""

    model_config = ConfigDict(extra="forbid", frozen=True)
