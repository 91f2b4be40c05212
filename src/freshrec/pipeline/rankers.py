"""The rankers the pipeline evaluates and trains with, built from a recipe: the model's beam
through a `Session` (`gr_ranker`), a beam whose last result is reused (`ReusedBeam`), and the
fused fresh-item ranker (`fresh_ranker`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from freshrec.config import Recipe
from freshrec.data.schema import Split
from freshrec.model.base import GenerativeRecommender
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.fresh import FreshParams, FreshRanker
from freshrec.recommend.gr import GRRanker
from freshrec.recommend.session import Session
from freshrec.semid import SidTable


def gr_ranker(
    recipe: Recipe,
    model: GenerativeRecommender,
    table: SidTable,
    split: Split,
    *,
    catalog: str,
    name: str | None = None,
    beam_size: int | None = None,
    prompt_new_items: bool | None = None,
) -> GRRanker:
    """The beam-mode ranker of a `Session` over the warm catalog (`catalog="warm"`) or every
    item with a SID ("full"): what evaluation, training validation and the benchmarks rank
    with (an evaluate `Ranker`). beam_size, prompt_new_items: None = the recipe's."""
    session = Session(
        model,
        Catalog.from_split(split, table, model.vocab),
        beam_size=beam_size or recipe.eval.beam_size,
        batch_size=recipe.eval.batch_size,
        prompt_new_items=(
            recipe.eval.prompt_new_items if prompt_new_items is None else prompt_new_items
        ),
    )
    ranker = session.ranker("beam", catalog)  # type: ignore[arg-type]
    assert isinstance(ranker, GRRanker)
    if name is not None:
        ranker.name = name
    return ranker


class ReusedBeam:
    """A GR ranker whose last result is reused when asked again for the same histories and
    top_k (the FRESH row of an evaluation ranks the requests the warm GR row just ranked)."""

    def __init__(self, ranker: GRRanker) -> None:
        self.ranker = ranker
        self.history_len = ranker.history_len
        self._last: tuple[bytes, int, tuple[np.ndarray, np.ndarray]] | None = None

    def rank(self, split: Split, requests: Any, top_k: int = 50) -> np.ndarray:
        hist = split.histories(requests, self.ranker.model.config.max_history)
        return self.rank_histories(hist, np.asarray(requests.user), top_k)[0]

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: Any = 50,
        *,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        key = np.ascontiguousarray(histories).tobytes() + bytes([exclude_history])
        k = int(np.max(top_k))
        if self._last is not None and self._last[0] == key and self._last[1] == k:
            return self._last[2]
        out = self.ranker.rank_histories(histories, users, top_k, exclude_history=exclude_history)
        self._last = (key, k, out)
        return out

    def __getattr__(self, name: str) -> Any:  # name, catalog, ... of the wrapped ranker
        return getattr(self.ranker, name)


def fresh_ranker(
    recipe: Recipe,
    model: GenerativeRecommender,
    table: SidTable,
    split: Split,
    emb: np.ndarray,
    params: FreshParams | None = None,
    beam: Any | None = None,
) -> FreshRanker:
    """The fused ranker (mode "fresh"): the model's beam over warm items (or `beam`) + the
    content channel over the new items, with `params` (default: the built-in values)."""
    beam = beam or gr_ranker(recipe, model, table, split, catalog="warm")
    return FreshRanker(beam, emb, split.is_new, params or FreshParams(), name="FRESH")
