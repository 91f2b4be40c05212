"""Data windows of the grid: phase bounds inside the training period, the time split of one
context (domain), and the training examples whose targets lie in a window."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from freshrec.data.schema import Dataset, Interactions, Requests, Split
from freshrec.data.split import TEST, TRAIN, VALID, first_seen
from freshrec.data.split import _build as _build_split
from freshrec.errors import ConfigError
from freshrec.model.batches import Examples, history_tokens, user_bucket_tokens, window_starts
from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import BOS, PAD, SidVocab

__all__ = [
    "check_windows",
    "context_split",
    "phase_bounds",
    "window_examples",
    "window_positions",
]


def phase_bounds(
    ts: np.ndarray, train_end: int, fractions: Sequence[float], unit: str = "interactions"
) -> np.ndarray:
    """int64[K+2] time bounds `[t_min, b_1, ..., b_K, train_end]` of pretrain, phase1..K.

    ts: int64[n] timestamps of the training-period interactions (all < train_end).
    unit "interactions": b_k is the `fractions[k]` quantile of `ts` (equal-count phases);
    "time": `t_min + f * (train_end - t_min)`. A window [b_k, b_k+1) holds `t >= b_k, < b_k+1`.
    """
    ts = np.asarray(ts, dtype=np.int64)
    if ts.size == 0:
        raise ConfigError("grid: the training period has no interactions")
    t_min = int(ts.min())
    f = np.asarray(fractions, dtype=np.float64)
    if unit == "interactions":
        inner = np.ceil(np.quantile(ts, f, method="higher")).astype(np.int64)
    elif unit == "time":
        inner = np.ceil(t_min + f * (train_end - t_min)).astype(np.int64)
    else:
        raise ConfigError(f"grid: phase_unit must be 'interactions' or 'time', got {unit!r}")
    bounds = np.concatenate([[t_min], inner, [train_end]]).astype(np.int64)
    if np.any(np.diff(bounds) <= 0):
        raise ConfigError(
            f"grid: phases {list(fractions)} ({unit}) give empty or out-of-order windows "
            f"(bounds {bounds.tolist()}); choose boundaries further apart"
        )
    return bounds


def context_split(
    dataset: Dataset, cutoffs: tuple[int, int], item_mask: np.ndarray | None = None
) -> Split:
    """A time split of the interactions on `item_mask` items (None = all) with given cutoffs.

    Train `ts < cutoffs[0] <=` valid `< cutoffs[1] <=` test. Sequences, histories and requests
    hold only the context's items; `is_new[i]`: item i has no interaction of this context
    before `cutoffs[0]` (items outside the context count as new: never in its warm catalog).
    """
    cut1, cut2 = int(cutoffs[0]), int(cutoffs[1])
    if cut2 < cut1:
        raise ConfigError(f"context cutoffs must be ordered, got {cutoffs}")
    inter = dataset.interactions
    if item_mask is not None:
        item_mask = np.asarray(item_mask, dtype=bool)
        if item_mask.shape != (dataset.n_items,):
            raise ConfigError(f"item_mask must be bool[{dataset.n_items}], got {item_mask.shape}")
        keep = item_mask[inter.item]
        inter = Interactions(inter.user[keep], inter.item[keep], inter.ts[keep])
    meta = {k: v for k, v in dataset.meta.items() if k != "official_part"}
    sub = dataclasses.replace(dataset, interactions=inter, meta=meta)
    part = np.where(inter.ts < cut1, TRAIN, np.where(inter.ts < cut2, VALID, TEST))
    is_new = first_seen(sub) >= cut1
    return _build_split(
        sub, part.astype(np.int8), scheme="time", cutoffs=(cut1, cut2), is_new=is_new
    )


def window_positions(split: Split, start: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(user int64[n], pos int64[n]) of the training-period interactions of `split` at or after
    `start` (None: all), each user's first interaction excluded (it has no history).

    Sorted by (user, pos); per user the positions are contiguous up to `train_len[user]`.
    """
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    counts = np.diff(offsets)
    user = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    pos = np.arange(int(offsets[-1]), dtype=np.int64) - offsets[user]
    keep = (pos >= 1) & (pos < np.asarray(split.train_len, dtype=np.int64)[user])
    if start is not None:
        keep &= np.asarray(split.seq_ts) >= start
    return user[keep], pos[keep]


def _causal_rows(
    split: Split, users: np.ndarray, pos: np.ndarray, window: int, min_context: int
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Window rows (items, first target index, user) covering the targets `(users, pos)`."""
    rows_items: list[np.ndarray] = []
    rows_first: list[int] = []
    rows_user: list[int] = []
    if users.size == 0:
        return rows_items, rows_first, rows_user
    uniq, first_idx = np.unique(users, return_index=True)
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    train_len = np.asarray(split.train_len, dtype=np.int64)
    for u, a in zip(uniq.tolist(), pos[first_idx].tolist(), strict=True):
        lo = max(0, a - max(min_context, 1))  # context before the first target
        seq = split.seq_items[offsets[u] + lo : offsets[u] + train_len[u]].astype(np.int64)
        prev_end = a - lo
        for s in window_starts(len(seq), window, min_context):
            end = min(s + window, len(seq))
            first = max(prev_end, s) - s
            if first < end - s:
                rows_items.append(seq[s:end])
                rows_first.append(first)
                rows_user.append(u)
            prev_end = end
    return rows_items, rows_first, rows_user


def window_examples(
    config: ModelConfig,
    split: Split,
    sid_tokens: np.ndarray,
    vocab: SidVocab | None = None,
    start: int | None = None,
) -> Examples:
    """Training examples of `config.arch` whose targets are the training-period interactions
    of `split` at or after `start` (`window_positions`); histories/context reach back before
    `start`. With `start=None` this equals `model.batches.training_examples`.

    tiger: {"history": int32[n, T], "target": int32[n, sid_len]}, one row per target.
    causal: {"tokens": int32[n, S], "targets": bool[n, S]}: windows of W = max_history + 1
    items, stride W - min_context, each target trained exactly once with >= min_context items
    of context where the sequence has them (as `causal_windows`).
    """
    users, pos = window_positions(split, start)
    table = np.asarray(sid_tokens, dtype=np.int64)
    if config.example_layout == "targets":
        target = split.seq_items[np.asarray(split.seq_offsets)[users] + pos]
        req = Requests(
            users.astype(np.int32), pos.astype(np.int32), target, np.zeros(len(users), bool)
        )
        hist = split.histories(req, config.max_history)
        return {
            "history": history_tokens(hist, table, users, vocab).numpy().astype(np.int32),
            "target": table[target].astype(np.int32),
        }
    P = table.shape[1]
    W = config.max_history + 1
    rows_items, rows_first, rows_user = _causal_rows(split, users, pos, W, config.min_context)
    with_user = vocab is not None and vocab.user_buckets > 0
    head = 2 if with_user else 1
    n = len(rows_items)
    items = np.full((n, W), -1, dtype=np.int64)
    if n:
        lengths = np.fromiter((len(r) for r in rows_items), dtype=np.int64, count=n)
        items[np.arange(W)[None, :] < lengths[:, None]] = np.concatenate(rows_items)
    tok = table[np.maximum(items, 0)]
    tok[items < 0] = PAD
    tokens = np.full((n, head + W * P), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    if with_user:
        assert vocab is not None
        tokens[:, 1] = user_bucket_tokens(np.asarray(rows_user, dtype=np.int64), vocab)
    tokens[:, head:] = tok.reshape(n, W * P)
    first = np.asarray(rows_first, dtype=np.int64).reshape(n, 1)
    is_target = (np.arange(W)[None, :] >= first) & (items >= 0)
    targets = np.zeros((n, head + W * P), dtype=bool)
    targets[:, head:] = np.repeat(is_target, P, axis=1)
    return {"tokens": tokens.astype(np.int32), "targets": targets}


def check_windows(
    inter: Interactions,
    bounds: np.ndarray,
    phases: list[str],
    tracks: list[str],
    masks: Mapping[str, np.ndarray],
    minimum: int,
) -> None:
    """ConfigError listing every trained window with fewer than `minimum` interactions: the
    pretrain period (all items) and phases 1..K of every track."""
    phase_of = np.searchsorted(bounds, inter.ts, side="right") - 1  # -1 / K+1: outside
    n_all = np.bincount(phase_of[(phase_of >= 0) & (phase_of < len(phases))], minlength=len(phases))
    bad = [f"pretrain: {int(n_all[0])}"] if n_all[0] < minimum else []
    for d in tracks:
        on = masks[d][inter.item]
        if not on.any():
            raise ConfigError(f"grid: domain {d!r} has no interactions")
        sel = on & (phase_of >= 1) & (phase_of < len(phases))
        n = np.bincount(phase_of[sel], minlength=len(phases))
        bad += [f"{phases[k]}/{d}: {int(n[k])}" for k in range(1, len(phases)) if n[k] < minimum]
    if bad:
        raise ConfigError(
            f"grid: phases do not fit the data: windows with fewer than {minimum} interactions "
            f"({', '.join(bad)}); move the phase boundaries or merge small domains"
        )
