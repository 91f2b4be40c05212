"""`retrain`: a full retrain from scratch on every interaction so far, every `every_days` (the
expensive reference). Epochs: the trained checkpoint's best epoch + 1 (no validation split
exists inside a replay), or `epochs`."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from freshrec.model.base import build_model
from freshrec.model.batches import iterate_batches, n_batches, n_targets
from freshrec.model.checkpoint import read_checkpoint_config
from freshrec.replay.examples import window_examples
from freshrec.replay.policies.base import UpdatePolicy, register_policy
from freshrec.replay.state import ReplayContext, ReplayState
from freshrec.replay.timeline import DAY
from freshrec.train.trainer import Trainer, seed_everything


class RetrainSettings(BaseModel):
    """every_days: days between retrains (a retrain happens at the first step end at least
    this long after the last one); epochs: training epochs (None = the trained checkpoint's
    best epoch + 1, else the recipe's train.epochs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_days: float = Field(7.0, gt=0)
    epochs: int | None = Field(None, ge=1)


def base_epochs(ctx: ReplayContext) -> int:
    """Epochs of the trained checkpoint's run up to its best one (from its config extra)."""
    extra = read_checkpoint_config(ctx.checkpoint).get("extra") or {}
    epoch = extra.get("epoch")
    return int(epoch) + 1 if isinstance(epoch, int) else ctx.train.epochs


@register_policy("retrain", settings=RetrainSettings)
class Retrain(UpdatePolicy):
    settings: RetrainSettings

    def start(self, state: ReplayState, ctx: ReplayContext) -> None:
        state.info["retrained_at"] = state.trained_until

    def update(self, state: ReplayState, ctx: ReplayContext, t0: int, t1: int) -> dict[str, Any]:
        if t1 - state.info["retrained_at"] < self.settings.every_days * DAY:
            return {}
        epochs = self.settings.epochs or base_epochs(ctx)
        seed_everything(ctx.train.seed + state.version + 1)
        model = build_model(state.model.config, state.model.vocab)
        examples = window_examples(
            model.config, ctx.split, state.table.tokens(model.vocab), model.vocab, -math.inf, t1
        )
        cfg = ctx.train.model_copy(update={"epochs": epochs})
        trainer = Trainer(
            model,
            cfg,
            batches=lambda e: iterate_batches(examples, cfg.batch_size, True, cfg.seed + e),
            n_batches=n_batches(examples, cfg.batch_size),
            n_examples=n_targets(examples),
            validate=None,
            out_dir=ctx.work / "retrain",
            tokenizer_fingerprint=ctx.fingerprint,
            progress=False,
        )
        result = trainer.fit()
        state.set_weights(trainer.eval_model, ctx, trained=ctx.first_seen < t1, until=t1)
        state.info["retrained_at"] = t1
        return {"retrained": 1, "epochs": result.epochs_run, "targets": n_targets(examples)}
