"""Recommend modes: a registry of ranker factories that `Session.recommend(mode=...)` dispatches
on. A factory is `factory(session, catalog, scope, **options) -> ModeRanker` (`catalog`: the
Catalog to rank over, a snapshot of `session.catalog`); add a mode with

```python
@register_mode("fresh")
def fresh_mode(session: Session, catalog: Catalog, scope: Scope, **options) -> ModeRanker: ...
```
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from freshrec.errors import ConfigError
from freshrec.recommend.catalog import Catalog, Scope
from freshrec.recommend.gr import GRRanker, model_window
from freshrec.semid.table import SidTable

if TYPE_CHECKING:
    from freshrec.recommend.session import Session


class ModeRanker(Protocol):
    """What a mode factory returns."""

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None,
        top_k: np.ndarray,
        *,
        exclude_history: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items int64[n, K], scores float32[n, K]) for histories int64[n, H]; top_k int64[n]
        per row, K = max."""
        ...


ModeFactory = Callable[..., ModeRanker]
"""factory(session, catalog, scope, **options) -> ModeRanker."""

MODES: dict[str, ModeFactory] = {}


def register_mode(name: str) -> Callable[[ModeFactory], ModeFactory]:
    """Decorator: register `factory(session, catalog, scope, **options)` as mode `name`."""

    def add(factory: ModeFactory) -> ModeFactory:
        MODES[name] = factory
        return factory

    return add


@register_mode("beam")
def beam_mode(
    session: Session, catalog: Catalog, scope: Scope, *, beam_size: int | None = None
) -> ModeRanker:
    """Trie-constrained beam search over `scope` (`GRRanker`); options: beam_size."""
    return GRRanker(
        session.model,
        catalog,
        scope=scope,
        beam_size=beam_size or session.beam_size,
        batch_size=session.batch_size,
        retries=session.retries,
        prompt_new_items=session.prompt_new_items,
    )


class SpecMode:
    """Speculative recommendation (`SpecRanker`) as a mode ranker: the model reads (and the
    history exclusion covers) each row's last `history_len` items."""

    def __init__(self, ranker: Any, history_len: int) -> None:
        self.ranker = ranker
        self.history_len = history_len

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None,
        top_k: np.ndarray,
        *,
        exclude_history: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        if not exclude_history:
            raise ConfigError("spec mode always excludes the history")
        hist = model_window(histories, self.history_len)
        users = np.zeros(hist.shape[0], dtype=np.int64) if users is None else users
        out = self.ranker.rank_histories(hist, users, int(np.max(top_k)))
        return out.items.numpy(), out.scores.numpy().astype(np.float32)


@register_mode("spec")
def spec_mode(
    session: Session,
    catalog: Catalog,
    scope: Scope,
    *,
    drafter: str = "text",
    gamma: float | None = None,
    n_drafts: int = 50,
    beam_size: int | None = None,
    self_drafter_dir: str | Path | None = None,
) -> ModeRanker:
    """SpecGR over `scope`: drafter "text" (the session's item embeddings) or "self" (heads
    saved by `SelfDrafter.save` in `self_drafter_dir`), verified by the session's model
    (edit packs included); options: drafter, gamma (default DEFAULT_GAMMA), n_drafts,
    beam_size, self_drafter_dir."""
    from freshrec.recommend.spec import DEFAULT_GAMMA, Drafter, SelfDrafter, SpecRanker, TextDrafter

    d: Drafter
    if drafter == "text":
        d = TextDrafter(session.embeddings)
    elif drafter == "self":
        if self_drafter_dir is None:
            raise ConfigError("drafter 'self' needs self_drafter_dir (heads from SelfDrafter.save)")
        d = SelfDrafter.load(self_drafter_dir, session.model, catalog.sid_tokens)
    else:
        raise ConfigError(f"drafter must be 'text' or 'self', got {drafter!r}")
    ranker = SpecRanker(
        session.model,
        d,
        SidTable(catalog.sids, catalog.vocab.max_collision),
        catalog.trie(scope),
        gamma=DEFAULT_GAMMA if gamma is None else gamma,
        n_drafts=n_drafts,
        beam_size=beam_size or session.beam_size,
        is_new=catalog.is_new,
        prompt_new_items=session.prompt_new_items,
    )
    return SpecMode(ranker, session.history_len)


class NewOnlyMode:
    """The fused ranker's new-item channel alone (scope "new")."""

    def __init__(self, fresh: Any) -> None:
        self.fresh = fresh

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None,
        top_k: np.ndarray,
        *,
        exclude_history: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.fresh.rank_new(histories, users, top_k, exclude_history=exclude_history)


@register_mode("fresh")
def fresh_mode(
    session: Session, catalog: Catalog, scope: Scope, *, beam_size: int | None = None
) -> ModeRanker:
    """Warm and new items in one list (docs/FRESH.md): the GR beam (over warm items, or over
    every item when edit packs are applied) fused with the content-based new-item channel under
    the freshness gate, with the session's calibration (`session.fresh`, the checkpoint's
    fresh.json). Scope "new": the new-item channel alone. Options: beam_size."""
    from freshrec.recommend.fresh import FreshRanker

    edited = session.edit_stack is not None and len(session.edit_stack) > 0
    beam = GRRanker(
        session.model,
        catalog,
        scope="full" if edited else "warm",
        beam_size=beam_size or session.beam_size,
        batch_size=session.batch_size,
        retries=session.retries,
        prompt_new_items=session.prompt_new_items,
    )
    emb = catalog.embeddings if catalog.embeddings is not None else session.embeddings
    recommendable = catalog.recommendable if scope == "new" else catalog.mask(scope)
    fresh = FreshRanker(
        beam, emb, catalog.is_new, session.fresh, recommendable=recommendable, name="FRESH"
    )
    return NewOnlyMode(fresh) if scope == "new" else fresh
