"""Training recipe."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TrainConfig(BaseModel):
    """Optimisation settings. Defaults are the CPU recipe (minutes on 2 cores)."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1, description="global batch size (split across processes)")
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["cosine", "inverse_sqrt", "constant"] = "cosine"
    grad_clip: float = Field(1.0, gt=0)
    patience: int = Field(3, ge=1, description="epochs without validation gain before stopping")
    min_epochs: int = Field(1, ge=1)
    min_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="no early stop before this share of `epochs` has run (with the cosine "
        "schedule, validation keeps gaining while the learning rate anneals)",
    )
    seed: int = 0
    valid_requests: int | None = Field(
        2000, description="seeded sample of validation requests scored each epoch (None = all)"
    )
    valid_beam: int = Field(20, ge=1)
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep an exponential moving average of the weights with this decay per "
        "optimizer step (e.g. 0.99 = a horizon of ~100 steps); validation and the saved "
        "checkpoints use the averaged weights (None = off)",
    )
    num_threads: int | None = Field(None, description="torch intra-op threads (None = default)")
