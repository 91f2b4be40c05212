"""What a replay holds: the fixed inputs (`ReplayContext`) and the deployment that policies
update (`ReplayState`: the running model, the base checkpoint edits are made on, the edit
stack, the SID table grown so far, and until when the model has been trained)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.data.schema import Split
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.checkpoint import save_checkpoint
from freshrec.model.edit_packs import EditStack
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.fresh.params import FreshParams
from freshrec.semid.base import SemanticTokenizer, assign_new_items
from freshrec.semid.table import SidTable
from freshrec.train.config import TrainConfig


@dataclass
class ReplayContext:
    """Fixed inputs of a replay.

    split: a time split (full sequences; requests of both periods); emb: float32[n_items, d]
    item text embeddings; tokenizer: the fitted SID tokenizer (new items get SIDs from it
    without refitting); warm_table: SIDs of the training-period items only; checkpoint: the
    trained model's folder; train: the recipe's training settings (retraining, fine-tuning);
    fresh: the fused ranker's calibration; work: a folder for checkpoints and caches;
    first_seen: int64[n_items] first interaction time (unix s); beam_size, batch_size,
    prompt_new_items: the recipe's decoding settings (`eval.*`); seed: sampling seed.
    """

    split: Split
    emb: np.ndarray
    tokenizer: SemanticTokenizer
    warm_table: SidTable
    checkpoint: Path
    train: TrainConfig
    fresh: FreshParams
    work: Path
    first_seen: np.ndarray
    beam_size: int = 50
    batch_size: int = 256
    prompt_new_items: bool = True
    seed: int = 0

    @property
    def fingerprint(self) -> str:
        return self.tokenizer.fingerprint


@dataclass
class ReplayState:
    """The deployment a policy updates.

    model: the running model (its weights; edit packs are hooks on top of them);
    base_dir: a checkpoint folder holding exactly `model`'s weights (edit packs are made on
    it); stack: the live edit packs (None = none); table: SIDs of every item seen so far;
    trained: bool[n_items], items whose interactions the weights were trained or fine-tuned
    on (the others are "new" to the model: the fused ranker's new-item channel and the edit
    policy serve them); trained_until: unix s, the end of the latest data the weights saw;
    version: bumped whenever the weights change (edit packs made on older weights are
    dropped); info: per-policy bookkeeping.
    """

    model: GenerativeRecommender
    base_dir: Path
    table: SidTable
    trained: np.ndarray
    trained_until: int
    stack: EditStack | None = None
    version: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def set_weights(
        self,
        model: GenerativeRecommender,
        ctx: ReplayContext,
        *,
        trained: np.ndarray | None = None,
        until: int | None = None,
    ) -> None:
        """Replace the running weights by `model`'s (saved as the new base checkpoint); live
        edit packs are taken off (they were made on the old weights). trained: bool[n_items]
        items the new weights were also trained on; until: the end of the data they saw."""
        self.drop_edits()
        self.version += 1
        folder = ctx.work / "base" / f"v{self.version}"
        save_checkpoint(model, folder, ctx.fingerprint, extra={"replay_version": self.version})
        self.model, self.base_dir = model.eval(), folder
        if trained is not None:
            self.trained = self.trained | np.asarray(trained, dtype=bool)
        if until is not None:
            self.trained_until = max(self.trained_until, int(until))

    def drop_edits(self) -> None:
        """Take every edit pack off the model."""
        if self.stack is not None:
            self.stack.remove()
            self.stack = None

    def grow_table(self, ctx: ReplayContext, until: int) -> np.ndarray:
        """Give SIDs (without refitting) to every item first seen before `until` that has none;
        returns their indices int64[m], in first-seen order."""
        seen = ctx.first_seen
        missing = (seen < until) & (self.table.sids[: seen.size] < 0).any(axis=1)
        items = np.flatnonzero(missing)
        items = items[np.argsort(seen[items], kind="stable")]
        if items.size:
            self.table = assign_new_items(
                ctx.tokenizer, self.table, ctx.emb[items], items, n_items=self.table.n_items
            )
        return items

    def catalog(self, ctx: ReplayContext, t0: int) -> Catalog:
        """The catalog at a step starting at t0: items with SIDs; those first seen before t0
        recommendable; "new" = not trained on by the running model."""
        sids = self.table.sids
        has = (sids >= 0).all(axis=1)
        rec = has & (ctx.first_seen < t0)
        return Catalog(sids, self.model.vocab, rec, self.model_is_new(ctx), ctx.emb)

    def model_is_new(self, ctx: ReplayContext) -> np.ndarray:
        """bool[n_items]: items the running weights were not trained on."""
        return ~self.trained


def check_context(ctx: ReplayContext) -> None:
    """Clear errors for inconsistent inputs."""
    n = ctx.split.dataset.n_items
    if ctx.emb.ndim != 2 or ctx.emb.shape[0] != n:
        raise ConfigError(f"emb must be float32[{n}, d], got shape {ctx.emb.shape}")
    if ctx.warm_table.n_items != n:
        raise ConfigError(f"the SID table has {ctx.warm_table.n_items} rows, the data {n} items")
    if ctx.first_seen.shape != (n,):
        raise ConfigError(f"first_seen must be int64[{n}], got shape {ctx.first_seen.shape}")
