"""Recommending for a dataset user from the command line (`freshrec recommend`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.config import Recipe
from freshrec.data.schema import Split
from freshrec.recommend.session import Session


def describe_items(
    split: Split, items: np.ndarray, scores: np.ndarray
) -> list[tuple[str, str, float, bool]]:
    """(item id, title, score, is_new) of ranked items int[k] with scores float[k] (-1 skipped)."""
    meta = split.dataset.items
    return [
        (meta.ids[i], meta.titles[i], float(s), bool(split.is_new[i]))
        for i, s in zip(np.asarray(items).tolist(), np.asarray(scores).tolist(), strict=True)
        if i >= 0
    ]


def recommend_user(
    recipe: Recipe,
    checkpoint: Path | str,
    user_id: str,
    top_k: int = 10,
    catalog: str = "full",
    *,
    mode: str = "fresh",
    edit_packs: Sequence[str | Path] = (),
    **options: Any,
) -> list[tuple[str, str, float, bool]]:
    """Top-k (item id, title, score, is_new) for a dataset user from their whole sequence
    (`freshrec recommend`), through `Session`: `checkpoint` (or a run folder's best/) with
    `edit_packs` (folders or pack ids under `<work>/edits/`) applied in order, over `catalog`
    (warm | full | new), by `mode` (fresh | beam | spec, with the mode's `options`). Score:
    fresh = the mixture log-score, beam = summed SID log-prob, spec = mean SID log-prob."""
    with Session.open(recipe, checkpoint, edit_packs) as session:
        recs = session.recommend_user(user_id, top_k, mode, scope=catalog, **options)
        assert session.split is not None
        return describe_items(session.split, recs.items[0], recs.scores[0])
