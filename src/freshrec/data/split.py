"""Cut a Dataset into training sequences and validation/test requests (vectorised numpy).

Three schemes, all producing a `Split` whose per-user sequences hold every interaction:
- `time_split`: global time cut-offs (default 80/10/10 % of the time span);
- `leave_one_out`: last interaction of each user tests, second-to-last validates;
- `official_split`: the parts of the Amazon 2023 official split files.
A validation/test interaction whose history would be empty (the user's first) is not a
request; it is counted in `Split.skipped`.
"""

from __future__ import annotations

import math

import numpy as np

from freshrec.data.schema import Dataset, Requests, Split
from freshrec.errors import ConfigError, DataError

NEVER = np.iinfo(np.int64).max
TRAIN, VALID, TEST = 0, 1, 2


def first_seen(dataset: Dataset) -> np.ndarray:
    """int64[n_items] earliest interaction time (unix s) per item; int64 max if never seen."""
    inter = dataset.interactions
    out = np.full(dataset.n_items, NEVER, dtype=np.int64)
    if len(inter):
        order = np.lexsort((inter.ts, inter.item))
        items, first = np.unique(inter.item[order], return_index=True)
        out[items] = inter.ts[order][first]
    return out


def _requests(
    user: np.ndarray, pos: np.ndarray, item: np.ndarray, is_new: np.ndarray, mask: np.ndarray
) -> Requests:
    """Requests for the sequence entries selected by `mask` (all arrays over seq entries)."""
    target = item[mask].astype(np.int32)
    return Requests(
        user=user[mask].astype(np.int32),
        pos=pos[mask].astype(np.int32),
        target=target,
        cold=is_new[target].astype(bool),
    )


def _build(
    dataset: Dataset,
    part: np.ndarray,
    *,
    scheme: str,
    cutoffs: tuple[int, int] | None,
    is_new: np.ndarray | None = None,
    skipped: dict[str, int] | None = None,
) -> Split:
    """Assemble a Split from a part label per interaction (0 train, 1 valid, 2 test).

    Sequences are ordered by (user, part, ts, item), so each user's training interactions
    form a prefix (for time splits this is exactly time order, ties by item index).
    is_new defaults to "no training interaction".
    """
    inter = dataset.interactions
    if len(inter) == 0:
        raise DataError(f"dataset {dataset.name!r} has no interactions to split")
    order = np.lexsort((inter.item, inter.ts, part, inter.user))
    user, item, ts, part = inter.user[order], inter.item[order], inter.ts[order], part[order]
    counts = np.bincount(user, minlength=dataset.n_users)
    offsets = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    pos = np.arange(len(user), dtype=np.int64) - offsets[user]
    train = part == TRAIN
    train_len = np.bincount(user[train], minlength=dataset.n_users).astype(np.int32)
    if is_new is None:
        is_new = np.bincount(item[train], minlength=dataset.n_items) == 0
    skipped = dict(skipped or {})
    parts = {}
    for name, k in (("valid", VALID), ("test", TEST)):
        in_part = part == k
        skipped[f"{name}_empty_history"] = int((in_part & (pos == 0)).sum())
        parts[name] = _requests(user, pos, item, is_new, in_part & (pos > 0))
    return Split(
        dataset=dataset,
        seq_offsets=offsets,
        seq_items=item.astype(np.int32),
        seq_ts=ts.astype(np.int64),
        train_len=train_len,
        valid=parts["valid"],
        test=parts["test"],
        is_new=is_new.astype(bool),
        scheme=scheme,
        cutoffs=cutoffs,
        skipped=skipped,
    )


def time_cutoffs(dataset: Dataset, train_frac: float, valid_frac: float) -> tuple[int, int]:
    """(cut1, cut2) unix seconds: t_min + frac * (t_max - t_min), rounded up.

    Rounding up keeps `ts < cut` exact for integer timestamps.
    """
    if not (0 < train_frac <= 1 and valid_frac >= 0 and train_frac + valid_frac <= 1):
        raise ConfigError(
            f"time split fractions must satisfy 0 < train_frac, 0 <= valid_frac and "
            f"train_frac + valid_frac <= 1; got train_frac={train_frac}, valid_frac={valid_frac}"
        )
    ts = dataset.interactions.ts
    if ts.size == 0:
        raise DataError(f"dataset {dataset.name!r} has no interactions to split")
    t_min, t_max = int(ts.min()), int(ts.max())
    span = t_max - t_min
    cut1 = math.ceil(t_min + train_frac * span)
    cut2 = math.ceil(t_min + (train_frac + valid_frac) * span)
    return cut1, cut2


def time_split(dataset: Dataset, train_frac: float = 0.8, valid_frac: float = 0.1) -> Split:
    """Global time split: train ts < cut1 <= valid ts < cut2 <= test ts.

    Every validation/test interaction with a non-empty history is a request. `is_new[i]`:
    item i has no interaction before cut1; `train_len[u]`: u's interactions before cut1.
    """
    cut1, cut2 = time_cutoffs(dataset, train_frac, valid_frac)
    ts = dataset.interactions.ts
    part = np.where(ts < cut1, TRAIN, np.where(ts < cut2, VALID, TEST)).astype(np.int8)
    is_new = first_seen(dataset) >= cut1
    return _build(dataset, part, scheme="time", cutoffs=(cut1, cut2), is_new=is_new)


def leave_one_out(dataset: Dataset) -> Split:
    """Per user: last interaction tests, second-to-last validates, the rest trains.

    Users with fewer than 3 interactions only train (counted in skipped["users_lt3"]).
    is_new = items with no training interaction. scheme "loo", cutoffs None.
    """
    inter = dataset.interactions
    counts = np.bincount(inter.user, minlength=dataset.n_users)
    order = np.lexsort((inter.item, inter.ts, inter.user))
    offsets = np.zeros(dataset.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    user = inter.user[order]
    from_end = offsets[user + 1] - np.arange(len(user))  # 1 = last
    long_enough = counts[user] >= 3
    part_sorted = np.where(long_enough & (from_end == 1), TEST, TRAIN)
    part_sorted = np.where(long_enough & (from_end == 2), VALID, part_sorted)
    part = np.empty(len(user), dtype=np.int8)
    part[order] = part_sorted
    skipped = {"users_lt3": int(((counts > 0) & (counts < 3)).sum())}
    return _build(dataset, part, scheme="loo", cutoffs=None, skipped=skipped)


def official_split(dataset: Dataset) -> Split:
    """Follow the Amazon official split files (load with `load_amazon(..., official_split=True)`).

    Part per interaction from `meta["official_part"]`; is_new = items absent from the train
    file; cutoffs = (first valid/test time, first test time), or None if those parts are empty.
    """
    part = dataset.meta.get("official_part")
    if not isinstance(part, np.ndarray) or part.shape != (len(dataset.interactions),):
        raise ConfigError(
            f"dataset {dataset.name!r} has no official split parts; load it with "
            f"load_amazon(..., official_split=True)"
        )
    ts = dataset.interactions.ts
    later, test = ts[part >= VALID], ts[part == TEST]
    cutoffs = (int(later.min()), int(test.min())) if later.size and test.size else None
    return _build(dataset, part.astype(np.int8), scheme="official", cutoffs=cutoffs)
