"""Fusing the GR beam (warm items) and the new-item channel into one ranked list.

`warm_expert`: the beam re-weighted by content agreement (a product of experts): beam item j
of a request scores gr_j + w * content_j, renormalised so that the beam keeps the GR model's
probability mass; w = 0 leaves the beam as generated.

`mix`: a two-expert mixture. With z = a * gate_logit + b per request and sigma the logistic
function, a beam item keeps its GR log-prob plus log sigma(-z), a new item gets its content
log-prob plus log sigma(z); the lists are merged by these scores. The first `head` beam items
stay on top (the GR model's most confident picks are never displaced). An item in both lists
(an edited model can generate new items) keeps its better score.

`quota`: the baselines. The last k_i of the top_k slots of request i go to the new channel's
best k_i items (k fixed: TIGER's epsilon quota; k chosen by a history share: gated quota).
All vectorised over requests; no Python loop over items or beams.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Fused(NamedTuple):
    """items int64[n, top_k] (-1 empty), scores float32[n, top_k], from_new bool[n, top_k]
    (True where the slot came from the new-item channel)."""

    items: np.ndarray
    scores: np.ndarray
    from_new: np.ndarray


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))), elementwise, without overflow."""
    return -np.logaddexp(0.0, -x)


def _drop_duplicates(
    beam_items: np.ndarray, beam_s: np.ndarray, new_items: np.ndarray, new_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """New-channel items that the beam also holds: the beam slot takes the better score and
    the new slot is emptied (-inf). Returns updated (beam_s, new_s) copies."""
    same = (new_items[:, :, None] == beam_items[:, None, :]) & (new_items[:, :, None] >= 0)
    if not same.any():
        return beam_s, new_s
    beam_s, new_s = beam_s.copy(), new_s.copy()
    r, j, k = np.nonzero(same)
    beam_s[r, k] = np.maximum(beam_s[r, k], new_s[r, j])
    new_s[r, j] = -np.inf
    return beam_s, new_s


def _select(
    items: np.ndarray, rank_key: np.ndarray, scores: np.ndarray, from_new: np.ndarray, top_k: int
) -> Fused:
    """The top_k entries of each row by `rank_key` (stable), reporting `scores`."""
    order = np.argsort(-rank_key, axis=1, kind="stable")[:, :top_k]
    keep = np.take_along_axis(rank_key, order, 1) > -np.inf
    it = np.where(keep, np.take_along_axis(items, order, 1), -1)
    s = np.where(keep, np.take_along_axis(scores, order, 1), -np.inf)
    fn = np.take_along_axis(from_new, order, 1) & keep
    if it.shape[1] < top_k:
        pad = ((0, 0), (0, top_k - it.shape[1]))
        it = np.pad(it, pad, constant_values=-1)
        s = np.pad(s, pad, constant_values=-np.inf)
        fn = np.pad(fn, pad, constant_values=False)
    return Fused(it.astype(np.int64), s.astype(np.float32), fn)


def warm_expert(
    beam_items: np.ndarray, beam_scores: np.ndarray, content: np.ndarray, weight: float
) -> tuple[np.ndarray, np.ndarray]:
    """The beam re-ranked by GR log-prob + `weight` x content log-score (see the module
    docstring). beam_items int64[n, K] (-1 empty), beam_scores float[n, K] GR log-probs,
    content float[n, K] content log-scores (c / tau). Returns (items, scores float32), best
    first; a request's summed probability over its beam is unchanged."""
    if weight == 0:
        return beam_items, beam_scores
    real = beam_items >= 0
    gr = np.where(real, beam_scores, -np.inf).astype(np.float64)
    poe = np.where(real, gr + weight * np.where(real, content, 0.0), -np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.logaddexp.reduce(gr, axis=1) - np.logaddexp.reduce(poe, axis=1)
    scores = np.where(real, poe + np.nan_to_num(shift, neginf=0.0)[:, None], -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    items = np.take_along_axis(beam_items, order, 1)
    return items, np.take_along_axis(scores, order, 1).astype(np.float32)


def mix(
    beam_items: np.ndarray,
    beam_scores: np.ndarray,
    new_items: np.ndarray,
    new_log_probs: np.ndarray,
    z: np.ndarray,
    top_k: int,
    head: int = 0,
) -> Fused:
    """Merge beam items int64[n, K] (GR log-probs float[n, K], best first) with new-channel
    items int64[n, M] (content log-probs float[n, M]) under per-request log-odds z float[n]
    of the new-item expert. Returned scores are the mixture log-scores; the `head` first
    beam items rank first whatever their score."""
    z = np.asarray(z, dtype=np.float64)[:, None]
    bs = np.where(beam_items >= 0, beam_scores + log_sigmoid(-z), -np.inf)
    ns = np.where(new_items >= 0, new_log_probs + log_sigmoid(z), -np.inf)
    bs, ns = _drop_duplicates(beam_items, bs, new_items, ns)
    scores = np.concatenate([bs, ns], axis=1)
    rank_key = scores
    if head > 0:
        h = min(head, bs.shape[1])
        rank_key = scores.copy()
        rank_key[:, :h] = np.where(np.isfinite(bs[:, :h]), np.inf, -np.inf)
    items = np.concatenate([beam_items, new_items], axis=1)
    from_new = np.zeros(scores.shape, dtype=bool)
    from_new[:, beam_items.shape[1] :] = True
    return _select(items, rank_key, scores, from_new, top_k)


def quota(
    beam_items: np.ndarray,
    beam_scores: np.ndarray,
    new_items: np.ndarray,
    new_scores: np.ndarray,
    k_new: np.ndarray | int,
    top_k: int,
) -> Fused:
    """The first top_k - k_i slots of request i from the beam, the last k_i from the new
    channel (both in their own order; new items the beam holds are skipped); k_new int or
    int[n]."""
    n = beam_items.shape[0]
    # new-channel items the beam already holds are dropped (moved to the end of the list)
    dup = ((new_items[:, :, None] == beam_items[:, None, :]) & (new_items[:, :, None] >= 0)).any(2)
    if dup.any():
        order = np.argsort(dup, axis=1, kind="stable")
        new_items = np.where(
            np.take_along_axis(dup, order, 1), -1, np.take_along_axis(new_items, order, 1)
        )
        new_scores = np.take_along_axis(new_scores, order, 1)
    k = np.broadcast_to(np.clip(np.asarray(k_new), 0, top_k), (n,))
    slot = np.arange(top_k)[None, :]
    take_new = slot >= (top_k - k)[:, None]
    bi = np.pad(beam_items, ((0, 0), (0, max(0, top_k - beam_items.shape[1]))), constant_values=-1)
    bs = np.pad(
        beam_scores, ((0, 0), (0, max(0, top_k - beam_scores.shape[1]))), constant_values=-np.inf
    )
    ni = np.pad(new_items, ((0, 0), (0, max(0, top_k - new_items.shape[1]))), constant_values=-1)
    ns = np.pad(
        new_scores, ((0, 0), (0, max(0, top_k - new_scores.shape[1]))), constant_values=-np.inf
    )
    new_col = np.clip(slot - (top_k - k)[:, None], 0, None)
    items = np.where(take_new, np.take_along_axis(ni, new_col, 1), bi[:, :top_k])
    scores = np.where(take_new, np.take_along_axis(ns, new_col, 1), bs[:, :top_k])
    return Fused(items.astype(np.int64), scores.astype(np.float32), take_new & (items >= 0))
