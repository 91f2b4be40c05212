"""`EditConfig`: every knob of a GenRecEdit run (defaults = the authors' released settings where
they exist, otherwise the choice documented in docs/EDITING.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freshrec.errors import ConfigError, validation_problems


class EditConfig(BaseModel):
    """Hyper-parameters of one edit (immutable; unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- pseudo-interactions (pseudo.py)
    n_neighbors: int = Field(10, ge=1, description="warm text neighbours per new item")
    n_contexts: int = Field(10, ge=1, description="pseudo-requests kept per new item")
    contexts: Literal["similar", "random"] = Field(
        "similar", description="'similar': contexts of text neighbours; 'random': ablation"
    )
    top_up: bool = Field(
        False,
        description="with real (observed) edit requests: also give an item with fewer than "
        "n_contexts of them pseudo-requests up to n_contexts (else only items with none)",
    )
    # --- which SID positions are edited and where (locate.py)
    positions: tuple[int, ...] | None = Field(
        None, description="SID positions edited (None = all sid_len positions)"
    )
    locate: Literal["fixed", "probe"] = Field(
        "fixed", description="'fixed': layer min(p, n_layers-1); 'probe': linear-probe accuracy"
    )
    probe_samples: int = Field(3000, ge=50, description="training requests for the probes")
    probe_holdout: float = Field(0.25, gt=0, lt=1)
    probe_ridge: float = Field(1e-2, gt=0, description="ridge of the probes (standardised keys)")
    probe_margin: float = Field(
        0.01, ge=0, description="earliest layer within this held-out accuracy of the best wins"
    )
    # --- target residuals (targets.py)
    target_steps: int = Field(30, ge=0)
    target_lr: float = Field(0.5, gt=0)
    norm_reg: float = Field(0.2, ge=0, description="weight of ||delta|| / ||v||")
    clamp: float = Field(4.0, gt=0, description="||delta|| <= clamp * ||v||")
    target_margin: float = Field(
        0.0,
        ge=0,
        description="a request succeeds once its target's logit is within this many nats of "
        "the best allowed token (0: the target must win outright)",
    )
    drop_failures: bool = Field(
        False,
        description="leave requests that never met the success rule (top-1, or within "
        "target_margin) out of the solve",
    )
    # --- preservation statistics (covariance.py)
    cov_samples: int = Field(20000, ge=1, description="training requests in C_p (or all)")
    cov_seed: int = Field(0, ge=0, description="sampling seed of C_p (part of the cache key)")
    # --- closed form (solve.py)
    method: Literal["memit", "alphaedit"] = "memit"
    lam: float = Field(3000.0, ge=0, description="weight of C_p (a mean) against K K^T (a sum)")
    ridge: float = Field(1e-6, ge=0, description="eps * mean(diag) * I added to the system")
    null_threshold: float = Field(
        1e-2, gt=0, lt=1, description="AlphaEdit: eigen-directions below threshold * top are null"
    )
    alpha: float = Field(1.0, gt=0, description="AlphaEdit: ridge alpha of the projected solve")
    # --- application (freshrec.model.edit_hooks)
    trigger: bool = Field(
        True, description="False = ablation: deltas at every decoder token (= merged weights)"
    )
    gate: Literal["prefix", "none"] = Field(
        "prefix",
        description="'prefix': a position's delta fires only on beams whose decoded SID prefix "
        "leads to an edited item; 'none': on every beam (the authors' trigger)",
    )
    # --- bookkeeping
    batch_size: int = Field(1024, ge=1, description="requests per forward pass")
    reliability_beam: int = Field(20, ge=10, description="beam of the reliability check")
    reliability_requests: int | None = Field(
        2000, ge=1, description="seeded sample of edit requests checked (None = all)"
    )
    measure_reliability: bool = True
    seed: int = 0

    @field_validator("positions")
    @classmethod
    def _positions(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("positions must not be empty (None = all positions)")
        if any(p < 0 for p in v) or len(set(v)) != len(v):
            raise ValueError(f"positions must be distinct non-negative ints, got {list(v)}")
        return tuple(sorted(v))

    def resolved_positions(self, sid_len: int) -> list[int]:
        """Edited positions for `sid_len` SID tokens (ConfigError if out of range)."""
        pos = list(range(sid_len)) if self.positions is None else list(self.positions)
        if pos and max(pos) >= sid_len:
            raise ConfigError(f"edit positions {pos} out of range for sid_len {sid_len}")
        return pos

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EditConfig:
        """Validate a dict; raises ConfigError with pydantic's message."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc)
            raise ConfigError(f"invalid edit config: {problems}") from None
