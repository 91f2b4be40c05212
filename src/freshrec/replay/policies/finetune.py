"""`finetune`: after each step, a few optimiser steps on the step's interactions mixed with a
sample of older ones (replay of old data against forgetting)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import Examples
from freshrec.replay.examples import concat, n_rows, sample_rows, window_examples
from freshrec.replay.policies.base import UpdatePolicy, register_policy
from freshrec.replay.state import ReplayContext, ReplayState
from freshrec.replay.timeline import window_items
from freshrec.train.steps import train_steps


class FineTuneSettings(BaseModel):
    """lr: constant AdamW learning rate; max_steps: optimiser steps per update at most;
    passes: steps = ceil(passes * rows / batch_size) up to max_steps; batch_size: rows per
    step; replay_ratio: older rows drawn per new row; mark_trained: items seen by the
    fine-tuning count as trained (the ranker's beam decodes them and the prompt keeps them,
    instead of the new-item channel). Off by default: a few fine-tuning steps on an item's
    first interactions do not teach the beam to generate it, while the content channel
    recommends it (a probe on the validation walk, seed 0, the `cpu` model: cold R@20 0.053
    with the flag off vs 0.015 with it on at the same budget; docs/REPLAY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(3e-4, gt=0)
    max_steps: int = Field(20, ge=1)
    passes: float = Field(1.0, gt=0)
    batch_size: int = Field(64, ge=1)
    replay_ratio: float = Field(1.0, ge=0)
    mark_trained: bool = False


def tune_on_window(
    model: GenerativeRecommender,
    state: ReplayState,
    ctx: ReplayContext,
    s: FineTuneSettings,
    t0: float,
    t1: float,
    seed: int,
) -> dict[str, Any]:
    """Fine-tune `model` in place on the interactions in [t0, t1) plus `replay_ratio` times as
    many rows of older ones (before t0). Returns {"rows", "steps", "loss"}."""
    cfg, vocab = model.config, model.vocab
    tokens = state.table.tokens(vocab)
    new = window_examples(cfg, ctx.split, tokens, vocab, t0, t1)
    rows = n_rows(new)
    if rows == 0:
        return {"rows": 0, "steps": 0}
    rng = np.random.default_rng([ctx.seed, seed])
    parts: list[Examples] = [new]
    if s.replay_ratio > 0:
        old = window_examples(cfg, ctx.split, tokens, vocab, -math.inf, t0)
        if n_rows(old):
            parts.append(sample_rows(old, math.ceil(s.replay_ratio * rows), rng))
    examples = concat(parts)
    n_steps = min(s.max_steps, math.ceil(s.passes * n_rows(examples) / s.batch_size))
    res = train_steps(
        model, examples, n_steps, lr=s.lr, cfg=ctx.train, batch_size=s.batch_size, seed=seed
    )
    return {"rows": rows, "steps": res.steps, "loss": res.mean_loss}


@register_policy("finetune", settings=FineTuneSettings)
class FineTune(UpdatePolicy):
    settings: FineTuneSettings

    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        state.drop_edits()
        out = tune_on_window(state.model, state, ctx, self.settings, t0, t1, seed=t1)
        if out["steps"]:
            seen = window_items(ctx.split, t0, t1) if self.settings.mark_trained else None
            state.set_weights(state.model, ctx, trained=seen, until=t1)
        return out
