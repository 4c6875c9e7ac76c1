"""The background fine-tuner's knobs, validated by pydantic at the edge (one line per mistake)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from core.configs import EmbtuneConfig
from core.matching import DEFAULT_GROUP_FIELD


class FineTunerConfig(EmbtuneConfig):
    """Knobs of the background fine-tuner, validated by pydantic (one line per mistake)."""

    _label: ClassVar[str] = "fine-tuner"

    trigger_threshold: PositiveInt = 10
    """Train after this many new confirmations."""
    max_examples: PositiveInt = 1000
    """Keep at most this many confirmed examples per collection; the oldest are dropped."""
    epochs: PositiveInt = 3
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    """Small on purpose: a few confirmations should nudge the model, not rewrite it."""
    batch_size: PositiveInt = 16
    holdout_every: NonNegativeInt = 5
    """Every n-th confirmed example (by id) is held out for the before/after top-1; 0: none (1 would hold out all)."""
    max_holdout_drop: Annotated[float, Field(ge=0, le=1)] | None = 0.0
    """Swap only if held-out top-1 falls by at most this much (None: always swap). A fine-tune that makes
    the confirmed cases worse is kept out of service: the measured screen loop did exactly that once."""
    references_per_workflow: PositiveInt = 32
    """Image models: indexed screenshots averaged into a workflow's prototype. Text models: item texts
    paired with each confirmed query."""
    field: str = DEFAULT_GROUP_FIELD
    """Metadata field that names the workflow."""
    device: str = "auto"
    seed: int = 0

    @field_validator("holdout_every")
    @classmethod
    def _not_everything_held_out(cls, value: int) -> int:
        if value == 1:
            raise ValueError("0 (no hold-out) or 2 and more (1 would hold out everything)")
        return value
