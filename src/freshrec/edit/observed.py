"""Edit requests from real interactions: once a new item has been interacted with, those
interactions (user, position in the user's sequence, the item) are the best edit requests
there are; pseudo-requests (`pseudo.py`) stand in for items without any.

`edit_requests(observed, pseudo_fn, items, n_contexts, top_up)` merges the two: every real
request of an edited item is kept; an item without one gets its pseudo-requests, and with
`top_up` an item with k < n_contexts real requests also gets its first n_contexts - k.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from freshrec.data.schema import Requests
from freshrec.edit.pseudo import PseudoRequests, _group_rank
from freshrec.errors import ConfigError


def as_pseudo(observed: Requests) -> PseudoRequests:
    """Real requests in the `PseudoRequests` layout (no neighbour: -1, similarity NaN)."""
    n = len(observed)
    return PseudoRequests(
        user=np.asarray(observed.user, dtype=np.int32),
        pos=np.asarray(observed.pos, dtype=np.int32),
        item=np.asarray(observed.target, dtype=np.int64),
        neighbor=np.full(n, -1, dtype=np.int64),
        sim=np.full(n, np.nan, dtype=np.float32),
        no_context=np.zeros(0, dtype=np.int64),
    )


def concat(a: PseudoRequests, b: PseudoRequests) -> PseudoRequests:
    """Rows of a then b; `no_context` of b (the pseudo part)."""
    return PseudoRequests(
        np.concatenate([a.user, b.user]),
        np.concatenate([a.pos, b.pos]),
        np.concatenate([a.item, b.item]),
        np.concatenate([a.neighbor, b.neighbor]),
        np.concatenate([a.sim, b.sim]),
        b.no_context,
    )


def edit_requests(
    observed: Requests,
    pseudo_fn: Callable[[np.ndarray], PseudoRequests],
    items: np.ndarray,
    n_contexts: int,
    top_up: bool = False,
) -> PseudoRequests:
    """Edit requests for `items` int64[m]: the real ones in `observed` (targets must be among
    `items`, histories non-empty) plus `pseudo_fn(items_needing_some)` as described above."""
    items = np.asarray(items, dtype=np.int64)
    target = np.asarray(observed.target, dtype=np.int64)
    if len(observed) and not np.isin(target, items).all():
        bad = int(target[~np.isin(target, items)][0])
        raise ConfigError(f"an observed request targets item {bad}, which is not being edited")
    if len(observed) and (np.asarray(observed.pos) < 1).any():
        raise ConfigError("observed requests need a non-empty history (pos >= 1)")
    real = as_pseudo(observed)
    counts = np.zeros(items.size, dtype=np.int64)
    order = np.argsort(items, kind="stable")
    if len(observed):
        slot = order[np.searchsorted(items[order], target)]
        counts = np.bincount(slot, minlength=items.size)
    want = np.where(counts == 0, n_contexts, n_contexts - counts if top_up else 0)
    need = items[want > 0]
    if need.size == 0:
        return real
    pseudo = pseudo_fn(need)
    # rows of one item are adjacent and in pick order: keep each item's first `want` rows
    limit = want[order[np.searchsorted(items[order], pseudo.item)]]
    keep = _group_rank(pseudo.item) < limit
    return concat(real, pseudo.subset(np.flatnonzero(keep)))
