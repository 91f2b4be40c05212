"""Position-wise knowledge preparation: pseudo-requests that teach the model a new item.

For each new item c: its `n_neighbors` most similar **warm** items by text-embedding cosine
(among warm items that are the target of at least one training context); every training-period
context (user u, position i >= 1 of u's training sequence) whose target is one of those
neighbours is a candidate pseudo-request (history = u's training items before i, target = c).

Sampling (seeded): each neighbour's contexts are put in a random order, then the new item takes
them round-robin over its neighbours in order of similarity -- the first context of the most
similar neighbour, the first of the second, ..., then the second context of each, and so on --
until it has `n_contexts`. So the most similar neighbours are preferred, a single popular
neighbour cannot fill every slot, and with the defaults (10 neighbours, 10 contexts) each
neighbour that has a context contributes one.

`contexts="random"` (ablation): `n_contexts` uniformly random training contexts per new item
(drawn with replacement; duplicates are rare when there are many more contexts than slots).

Everything is vectorised over new items and contexts (a CSR index item -> training contexts);
the only loop is over chunks of new items in the similarity matmul.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError, UnknownItemError

_SIM_CHUNK = 2048  # new items per similarity matmul


@dataclass(frozen=True)
class PseudoRequests:
    """Edit requests, one row each. user, pos: int32[n] (history = the user's sequence before
    `pos`, all inside the training period); item: int64[n] the new item (the target);
    neighbor: int64[n] the warm item whose context was borrowed (-1 for random contexts);
    sim: float32[n] cosine(item, neighbor) (NaN for random contexts).
    no_context: int64[k] new items that got no pseudo-request (no neighbour with a context)."""

    user: np.ndarray
    pos: np.ndarray
    item: np.ndarray
    neighbor: np.ndarray
    sim: np.ndarray
    no_context: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def requests(self) -> Requests:
        """As evaluation `Requests` (target = the new item, cold = True)."""
        return Requests(
            self.user.astype(np.int32),
            self.pos.astype(np.int32),
            self.item.astype(np.int32),
            np.ones(len(self), dtype=bool),
        )

    def subset(self, idx: np.ndarray) -> PseudoRequests:
        return PseudoRequests(
            self.user[idx],
            self.pos[idx],
            self.item[idx],
            self.neighbor[idx],
            self.sim[idx],
            self.no_context,
        )


def training_contexts(split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every training-period context: (user int64[n], pos int64[n], target int64[n]) for
    pos = 1..train_len[u]-1 (the first training item has no history)."""
    n_t = np.maximum(np.asarray(split.train_len, dtype=np.int64) - 1, 0)
    users = np.repeat(np.arange(len(n_t), dtype=np.int64), n_t)
    starts = np.repeat(np.cumsum(n_t) - n_t, n_t)
    pos = np.arange(int(n_t.sum()), dtype=np.int64) - starts + 1
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    target = np.asarray(split.seq_items, dtype=np.int64)[offsets[users] + pos]
    return users, pos, target


def warm_mask(split: Split, n_items: int) -> np.ndarray:
    """bool[n_items]: items with training interactions (items beyond the split are new)."""
    is_new = np.asarray(split.is_new, dtype=bool)
    out = np.zeros(n_items, dtype=bool)
    m = min(n_items, is_new.shape[0])
    out[:m] = ~is_new[:m]
    return out


def check_new_items(new_items: np.ndarray, split: Split, n_items: int) -> np.ndarray:
    """Validated int64[m] distinct item indices that are not warm (UnknownItemError /
    ConfigError otherwise)."""
    items = np.asarray(new_items)
    if items.ndim != 1 or (items.size and not np.issubdtype(items.dtype, np.integer)):
        raise ConfigError(f"new_items must be a 1-d array of item indices, got {items.dtype}")
    items = items.astype(np.int64)
    if items.size == 0:
        raise ConfigError("new_items is empty: nothing to edit")
    if items.min() < 0 or items.max() >= n_items:
        bad = int(items[(items < 0) | (items >= n_items)][0])
        raise UnknownItemError(f"item index {bad} is outside the catalog 0..{n_items - 1}")
    if np.unique(items).size != items.size:
        raise ConfigError("new_items lists an item more than once")
    warm = warm_mask(split, n_items)
    if warm[items].any():
        bad = int(items[warm[items]][0])
        raise ConfigError(
            f"item {bad} has training interactions (it is warm); GenRecEdit injects new items"
        )
    return items


def nearest_warm(
    emb: np.ndarray, new_items: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours among `candidates` int64[c] of each new item int64[m].

    Returns (neighbors int64[m, k] item indices, sims float32[m, k]), best first."""
    e = torch.tensor(np.asarray(emb), dtype=torch.float32)  # a copy: emb may be read-only
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cand = e[torch.from_numpy(candidates)]
    k = min(k, len(candidates))
    nbr = np.empty((len(new_items), k), dtype=np.int64)
    sims = np.empty((len(new_items), k), dtype=np.float32)
    for s in range(0, len(new_items), _SIM_CHUNK):
        q = e[torch.from_numpy(new_items[s : s + _SIM_CHUNK])]
        val, idx = torch.topk(q @ cand.T, k, dim=1)
        nbr[s : s + len(q)] = candidates[idx.numpy()]
        sims[s : s + len(q)] = val.numpy()
    return nbr, sims


def _group_rank(keys_sorted: np.ndarray) -> np.ndarray:
    """Rank of each element within its run of equal (sorted) keys."""
    n = keys_sorted.shape[0]
    start = np.ones(n, dtype=bool)
    start[1:] = keys_sorted[1:] != keys_sorted[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - first


def pseudo_requests(
    split: Split,
    emb: np.ndarray,
    new_items: np.ndarray,
    *,
    n_neighbors: int = 10,
    n_contexts: int = 10,
    contexts: str = "similar",
    seed: int = 0,
) -> PseudoRequests:
    """Pseudo-requests for `new_items` (see the module doc). emb: float32[n_items, d] text
    embeddings of the whole catalog (rows beyond the split's items are live additions).
    Rows are ordered by new item (as given), then by pick order."""
    n_items = emb.shape[0]
    items = check_new_items(new_items, split, n_items)
    rng = np.random.default_rng(seed)
    users, pos, target = training_contexts(split)
    if users.size == 0:
        raise ConfigError("the split has no training contexts (every user has < 2 items)")
    m = len(items)
    if contexts == "random":
        pick = rng.integers(0, users.size, size=(m, n_contexts)).reshape(-1)
        return PseudoRequests(
            user=users[pick].astype(np.int32),
            pos=pos[pick].astype(np.int32),
            item=np.repeat(items, n_contexts),
            neighbor=np.full(pick.size, -1, dtype=np.int64),
            sim=np.full(pick.size, np.nan, dtype=np.float32),
            no_context=np.zeros(0, dtype=np.int64),
        )
    if contexts != "similar":
        raise ConfigError(f"contexts must be 'similar' or 'random', got {contexts!r}")

    # CSR index item -> its training contexts, in a seeded random order within each item
    counts = np.bincount(target, minlength=n_items)
    order = np.lexsort((rng.random(target.size), target))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    candidates = np.flatnonzero(warm_mask(split, n_items) & (counts > 0))
    nbr, sims = nearest_warm(emb, items, candidates, n_neighbors)  # [m, k]
    k = nbr.shape[1]

    # each (new item, neighbour rank r) pair offers its first q = min(count, n_contexts) contexts
    q = np.minimum(counts[nbr], n_contexts).reshape(-1)  # [m*k]
    pair = np.repeat(np.arange(m * k), q)
    j = np.arange(pair.size) - np.repeat(np.cumsum(q) - q, q)  # index within the pair
    c_idx, r = pair // k, pair % k
    ctx = order[offsets[nbr.reshape(-1)[pair]] + j]
    # round-robin: by new item, then context index j, then neighbour rank r
    sel = np.lexsort((r, j, c_idx))
    keep = sel[_group_rank(c_idx[sel]) < n_contexts]
    c_keep = c_idx[keep]
    has = np.bincount(c_keep, minlength=m) > 0
    return PseudoRequests(
        user=users[ctx[keep]].astype(np.int32),
        pos=pos[ctx[keep]].astype(np.int32),
        item=items[c_keep],
        neighbor=nbr.reshape(-1)[pair[keep]],
        sim=sims.reshape(-1)[pair[keep]],
        no_context=items[~has],
    )
