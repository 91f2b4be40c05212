"""The audience slot: a new item is shown to the requests whose recent history is made of its
closest catalog items, whatever the freshness gate says.

The mixture (`fusion.mix`) ranks a new item by P(next is new) x its content probability, and
for a history without new items the gate's P(next is new) is about the validation base rate
(~10%), so a film added a minute ago rarely beats the tenth warm item even for a user who
watched everything like it. The audience slot is the exposure rule a catalog team expects:
when at least `share` x `last` of a request's last `last` history items are among a live new
item's `k` closest recommendable items (cosine of text embeddings: the history item is at
least as close to it as its k-th closest item, `audience_radii`), that item moves up to
position `slot` of the fused list (the list keeps its length; nothing above the slot moves).
It is an exposure rule, not a recall gain: on the benchmark's validation requests it fires
for ~0.2% of them; calibration (`evaluate.fresh_fit`) scores the mixture with it in place.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from freshrec.recommend.fresh.fusion import Fused


class AudienceParams(BaseModel):
    """k: closest catalog items that make up a new item's audience; last: history items
    looked at (most recent); share: the part of them that must be in the audience; slot:
    the position (1-based) the item is moved up to (0 = the rule is off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(10, ge=1)
    last: int = Field(10, ge=1)
    share: float = Field(0.5, gt=0, le=1)
    slot: int = Field(10, ge=0)


@torch.no_grad()
def audience_radii(
    emb: torch.Tensor,
    items: np.ndarray,
    reference: np.ndarray,
    k: int,
    n_total: int,
    chunk: int = 1024,
) -> np.ndarray:
    """float32[m]: the cosine of each of `items`' (int64[m]) k-th closest catalog item, the
    item itself left out, from emb float32[n_items, d] unit rows; a history item at least
    this close is in the item's audience. `reference` int64[r] (sorted): the catalog items
    (or a seeded sample of the `n_total` of them, where the k-th closest of the catalog is
    about the (k r / n_total)-th closest of the sample); -inf when too few items exist."""
    items = np.asarray(items, dtype=np.int64)
    out = np.full(len(items), -np.inf, dtype=np.float32)
    ref = torch.from_numpy(np.asarray(reference, dtype=np.int64))
    kk = max(1, round(k * len(ref) / max(n_total, 1)))
    if len(items) == 0 or len(ref) <= kk:
        return out
    ref_emb = emb[ref]
    for start in range(0, len(items), chunk):
        it = torch.from_numpy(items[start : start + chunk])
        sims = emb[it] @ ref_emb.T  # [b, r]
        sims[it[:, None] == ref[None, :]] = -torch.inf
        out[start : start + chunk] = sims.topk(kk, dim=1).values[:, -1].numpy()
    return out


@torch.no_grad()
def audience_share(
    emb: torch.Tensor,
    histories: np.ndarray,
    items: np.ndarray,
    radii: np.ndarray,
    last: int,
    chunk: int = 512,
) -> np.ndarray:
    """float32[n, M]: how many of each request's last `last` history items (histories
    int64[n, H], right-aligned, -1 padded) are in the audience of each of its candidates
    items int64[n, M] (-1 = empty slot: 0), divided by `last`. radii float32[n, M]: the
    candidates' `audience_radii`. A short history counts its missing items as outside: one
    watched film is not a history full of the candidate's neighbours."""
    h_all = torch.from_numpy(np.asarray(histories, dtype=np.int64)[:, -last:])
    cand_all = torch.from_numpy(np.asarray(items, dtype=np.int64))
    radii_all = torch.from_numpy(np.asarray(radii, dtype=np.float32))
    out = np.zeros(cand_all.shape, dtype=np.float32)
    for start in range(0, len(out), chunk):
        h, cand = h_all[start : start + chunk], cand_all[start : start + chunk]
        sims = torch.einsum("bld,bmd->blm", emb[h.clamp(min=0)], emb[cand.clamp(min=0)])
        inside = sims >= radii_all[start : start + chunk, None, :] - 1e-6
        inside &= (h >= 0)[:, :, None] & (cand >= 0)[:, None, :]
        out[start : start + chunk] = (inside.sum(1).float() / last).numpy()
    return out


def promote(
    fused: Fused, item: np.ndarray, score: np.ndarray, fire: np.ndarray, slot: int
) -> Fused:
    """`fused` with item int64[n] moved up to position `slot` (1-based) of the rows where
    fire bool[n] holds and the item is not already at or above it; score float[n]: the score
    it is reported with when it was not in the list. Items below the slot move down one and
    the last one drops out."""
    items, scores, from_new = fused
    n, top_k = items.shape
    if slot < 1 or n == 0 or not fire.any():
        return fused
    slot = min(slot, top_k)
    at = (items == item[:, None]) & (item[:, None] >= 0)
    pos = np.where(at.any(1), at.argmax(1), top_k)
    fire = fire & (item >= 0) & (pos >= slot)
    if not fire.any():
        return fused
    key = np.broadcast_to(np.arange(top_k, dtype=np.float64), (n, top_k)).copy()
    key[at & fire[:, None]] = np.inf  # the item leaves its old place...
    extra = np.where(fire, slot - 1.5, np.inf)  # ...and enters just above position `slot`
    key = np.concatenate([key, extra[:, None]], axis=1)
    old = np.where(at.any(1), scores[np.arange(n), np.minimum(pos, top_k - 1)], score)
    all_items = np.concatenate([items, item[:, None]], axis=1)
    all_scores = np.concatenate([scores, old[:, None].astype(scores.dtype)], axis=1)
    all_new = np.concatenate([from_new, np.ones((n, 1), dtype=bool)], axis=1)
    order = np.argsort(key, axis=1, kind="stable")[:, :top_k]
    return Fused(
        np.take_along_axis(all_items, order, 1),
        np.take_along_axis(all_scores, order, 1),
        np.take_along_axis(all_new, order, 1),
    )
