"""Reliability of an edit pack: how often the edited model recommends each edit request's new
item, by beam search over the full catalog (the metric GenRecEdit reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from freshrec.data.schema import Requests, Split
from freshrec.errors import CheckpointError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.edit_packs import EditPack, hooks_for
from freshrec.recommend.catalog import Catalog
from freshrec.recommend.gr import GRRanker


def pack_requests(pack: EditPack) -> Requests:
    """The pack's edit requests (history from the split, target = the new item, all cold)."""
    r = pack.requests
    if not r:
        raise CheckpointError(f"edit pack {pack.pack_id} has no stored edit requests")
    return Requests(
        r["user"].astype(np.int32),
        r["pos"].astype(np.int32),
        r["item"].astype(np.int32),
        np.ones(len(r["user"]), dtype=bool),
    )


def pack_reliability(
    model: GenerativeRecommender,
    catalog: Catalog,
    split: Split,
    pack: EditPack,
    extra: Sequence[EditPack],
    *,
    beam: int,
    max_requests: int | None,
) -> dict[str, float]:
    """{"top1", "top10": share of the pack's edit requests whose new item is the top-1 / in the
    top-10 over the full `catalog`, "n": requests checked, "beam"}. The model is ranked as
    currently hooked plus the `extra` packs (applied for the call); at most `max_requests`
    requests, a seeded sample that is the same for every call (None = all)."""
    req = pack_requests(pack)
    if max_requests is not None and len(req) > max_requests:
        idx = np.sort(np.random.default_rng(0).choice(len(req), max_requests, replace=False))
        req = req.subset(idx)
    hist = split.histories(req, model.config.max_history)
    ranker = GRRanker(model, catalog, scope="full", name="edited", beam_size=beam, batch_size=256)
    hooks = hooks_for(model, list(extra)).install() if extra else None
    try:
        top, _ = ranker.rank_histories(hist, np.asarray(req.user), top_k=10)
    finally:
        if hooks is not None:
            hooks.remove()
    hit = top == np.asarray(req.target)[:, None]
    return {
        "top1": float(hit[:, 0].mean()) if len(req) else float("nan"),
        "top10": float(hit.any(axis=1).mean()) if len(req) else float("nan"),
        "n": len(req),
        "beam": beam,
    }
