"""A fixed number of optimiser steps on given examples (incremental fine-tuning): the Trainer's
update (AdamW, gradient clipping, `model.loss`) without epochs, validation or checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import Examples, iterate_batches
from freshrec.train.config import TrainConfig


@dataclass
class StepsResult:
    """steps: optimiser steps taken; examples: rows seen; mean_loss: mean training loss."""

    steps: int
    examples: int
    mean_loss: float


def train_steps(
    model: GenerativeRecommender,
    examples: Examples,
    n_steps: int,
    *,
    lr: float,
    cfg: TrainConfig | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> StepsResult:
    """`n_steps` AdamW steps (constant `lr`, weight decay and clipping from `cfg`) on seeded
    shuffled batches of `examples`, cycling through them as needed. The model is left in eval
    mode. Returns what was done."""
    cfg = cfg or TrainConfig()
    if n_steps < 0:
        raise ConfigError(f"n_steps must be >= 0, got {n_steps}")
    rows = int(next(iter(examples.values())).shape[0]) if examples else 0
    if n_steps == 0 or rows == 0:
        return StepsResult(0, 0, float("nan"))
    bs = batch_size or cfg.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(seed)
    model.train()
    losses: list[float] = []
    seen, epoch = 0, 0
    try:
        while len(losses) < n_steps:
            for batch in iterate_batches(examples, bs, shuffle=True, seed=seed + epoch):
                loss = model.loss(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                losses.append(float(loss.detach()))
                seen += int(next(iter(batch.values())).shape[0])
                if len(losses) >= n_steps:
                    break
            epoch += 1
    finally:
        model.eval()
    return StepsResult(len(losses), seen, float(np.mean(losses)))
