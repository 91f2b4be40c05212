"""Options of the checkpoint grid (`GridConfig`) and the names of its phases and tracks."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freshrec.errors import ConfigError, validation_problems

__all__ = ["ALL", "GridConfig", "phase_names"]

ALL = "all"


class GridConfig(BaseModel):
    """Options of `build_grid` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    phases: list[float] = Field(
        default_factory=lambda: [0.6, 0.8],
        description="boundaries pretrain | phase1 | ... | phaseK inside the training period, "
        "fractions in (0, 1), strictly increasing",
    )
    phase_unit: Literal["interactions", "time"] = Field(
        "interactions",
        description="phases cut the training period by share of interactions or of time span",
    )
    domains: dict[str, list[str]] | None = Field(
        None, description="domain name -> primary labels; None = auto_domains(n_domains)"
    )
    n_domains: int = Field(3, ge=1, description="number of domains when `domains` is None")
    label_field: Literal["auto", "genres", "categories"] = "auto"
    label_level: int = Field(0, ge=0, description="which listed label is primary (0 = first)")
    include_all: bool = Field(True, description="also train the all-items track")
    pretrain_epochs: int = Field(4, ge=1)
    phase_epochs: int = Field(3, ge=1)
    phase_lr: float | None = Field(None, gt=0, description="lr of later phases (None = recipe)")
    validate_on: Literal["valid", "next"] = Field(
        "valid",
        description="early stopping of every checkpoint on its context's requests of the time "
        "split's validation period ('valid', as docs/EVAL.md tunes everything), or of the window "
        "after the checkpoint's own ('next': pretrain on phase 1, ..., the last on validation)",
    )
    valid_requests: int | None = Field(
        300, ge=1, description="validation requests per epoch (None = recipe's)"
    )
    min_window_interactions: int = Field(
        100, ge=1, description="each (phase, track) window needs at least this many"
    )

    @field_validator("phases")
    @classmethod
    def _phases(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("give at least one boundary (pretrain | phase1)")
        if any(not 0.0 < f < 1.0 for f in value) or any(
            b <= a for a, b in itertools.pairwise(value)
        ):
            raise ValueError(f"must be strictly increasing fractions in (0, 1), got {value}")
        return value

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, source: str = "grid options") -> GridConfig:
        """Validate a mapping; `ConfigError` with one `field: message` per problem."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = validation_problems(exc, empty="options", strip_value_error=True)
            raise ConfigError(f"{source}: {problems}") from None


def phase_names(n_later: int) -> list[str]:
    """['pretrain', 'phase1', ..., 'phase<n_later>']."""
    return ["pretrain"] + [f"phase{k}" for k in range(1, n_later + 1)]
