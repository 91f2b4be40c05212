"""Time in a replay: step windows over a period, the requests and interactions of a window, the
data a model trained up to time t has seen, and the catalog at a step.

All times are unix seconds (int64). A step is the half-open window [t0, t1). An item *appears*
at its first interaction (`first_seen`); MovieLens has no catalog-add times, so an item is
listed (recommendable) from the first step that starts after it appeared, and gets its SID
(from its text, without refitting the tokenizer) as soon as it can occur in a history.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Literal, NamedTuple

import numpy as np

from freshrec.data.schema import Requests, Split
from freshrec.data.split import NEVER, first_seen
from freshrec.errors import ConfigError

Part = Literal["valid", "test"]
DAY = 86400


class Step(NamedTuple):
    """One replay step: index within its part and the window [t0, t1) in unix seconds."""

    index: int
    t0: int
    t1: int


def check_time_split(split: Split) -> tuple[int, int]:
    """(train_end, valid_end) of a global time split; ConfigError for other schemes (a replay
    needs one timeline shared by all users)."""
    if split.scheme != "time" or split.cutoffs is None:
        raise ConfigError(
            f"replay needs a global time split (data.split: time), got scheme {split.scheme!r}"
        )
    return split.cutoffs


def period(split: Split, part: Part) -> tuple[int, int]:
    """[start, end) unix seconds of the validation or test period."""
    cut1, cut2 = check_time_split(split)
    if part == "valid":
        return cut1, cut2
    if part == "test":
        return cut2, int(split.seq_ts.max()) + 1
    raise ConfigError(f"part must be 'valid' or 'test', got {part!r}")


def steps(
    split: Split,
    part: Part,
    step_days: float,
    max_steps: int | None = None,
    align: Literal["start", "end"] = "start",
) -> list[Step]:
    """The period cut into windows of `step_days` days, at most `max_steps` of them: the first
    ones (align "start"; the period's last step may be shorter) or the last ones ("end"; its
    first step may be shorter)."""
    if not step_days > 0:
        raise ConfigError(f"step_days must be positive, got {step_days}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 (or None for all), got {max_steps}")
    start, end = period(split, part)
    width = max(round(step_days * DAY), 1)
    if align == "end":  # full steps back from the end; the first one may be shorter
        bounds = [start, *range(end - width * ((end - start - 1) // width), end + 1, width)]
    else:  # full steps from the start; the last one may be shorter
        bounds = [*range(start, end, width), end]
    out = [Step(i, t0, t1) for i, (t0, t1) in enumerate(itertools.pairwise(bounds))]
    if align not in ("start", "end"):
        raise ConfigError(f"align must be 'start' or 'end', got {align!r}")
    if max_steps is None:
        return out
    return out[:max_steps] if align == "start" else out[-max_steps:]


def request_times(split: Split, requests: Requests) -> np.ndarray:
    """int64[n] the time of each request's target interaction."""
    idx = np.asarray(split.seq_offsets, dtype=np.int64)[requests.user] + requests.pos
    return np.asarray(split.seq_ts, dtype=np.int64)[idx]


def window_requests(
    split: Split,
    requests: Requests,
    times: np.ndarray,
    t0: int,
    t1: int,
    cap: int | None = None,
    seed: int = 0,
) -> Requests:
    """The requests whose target time is in [t0, t1); a seeded uniform sample of `cap` of them
    (kept in order) when there are more."""
    idx = np.flatnonzero((times >= t0) & (times < t1))
    if cap is not None and idx.size > cap:
        rng = np.random.default_rng([seed, t0])
        idx = np.sort(rng.choice(idx, size=cap, replace=False))
    return requests.subset(idx)


def entry_users(split: Split) -> np.ndarray:
    """int64[n_entries] the user of each entry of `split.seq_items`."""
    counts = np.diff(np.asarray(split.seq_offsets, dtype=np.int64))
    return np.repeat(np.arange(counts.size, dtype=np.int64), counts)


def count_before(split: Split, t: int | float) -> np.ndarray:
    """int64[n_users] interactions of each user before time t (a prefix of the user's
    sequence: sequences of a time split are in time order)."""
    before = np.asarray(split.seq_ts) < t
    return np.bincount(entry_users(split)[before], minlength=len(split.train_len)).astype(np.int64)


def prefix_split(split: Split, t: int, is_new: np.ndarray | None = None) -> Split:
    """`split` as seen by a model trained on the interactions before t: `train_len` counts
    them, `is_new` marks the items it was not trained on (default: first seen at or after t).
    Requests are unchanged."""
    check_time_split(split)
    if is_new is None:
        is_new = first_seen(split.dataset) >= t
    return dataclasses.replace(
        split, train_len=count_before(split, t).astype(np.int32), is_new=np.asarray(is_new, bool)
    )


def window_items(split: Split, t0: int | float, t1: int | float) -> np.ndarray:
    """bool[n_items]: items with an interaction in [t0, t1)."""
    out = np.zeros(split.dataset.n_items, dtype=bool)
    out[np.asarray(split.seq_items)[window_interactions(split, t0, t1)]] = True
    return out


def window_interactions(split: Split, t0: int | float, t1: int | float) -> np.ndarray:
    """int64[m] indices into `split.seq_items` of the interactions with time in [t0, t1)."""
    ts = np.asarray(split.seq_ts)
    return np.flatnonzero((ts >= t0) & (ts < t1)).astype(np.int64)


def observed_requests(
    split: Split, t0: int | float, t1: int | float, items: np.ndarray
) -> Requests:
    """Real interactions in [t0, t1) with one of `items` int[k] as requests (user, pos, target);
    entries that are a user's first interaction (no history) are left out. cold = True."""
    idx = window_interactions(split, t0, t1)
    users = entry_users(split)[idx]
    pos = idx - np.asarray(split.seq_offsets, dtype=np.int64)[users]
    target = np.asarray(split.seq_items)[idx]
    keep = np.isin(target, np.asarray(items)) & (pos > 0)
    return Requests(
        users[keep].astype(np.int32),
        pos[keep].astype(np.int32),
        target[keep].astype(np.int32),
        np.ones(int(keep.sum()), dtype=bool),
    )


def item_first_seen(split: Split) -> np.ndarray:
    """int64[n_items] first interaction time of each item (`NEVER` if none)."""
    return first_seen(split.dataset)


def listed(seen: np.ndarray, t: int) -> np.ndarray:
    """bool[n_items]: items that appeared before t (recommendable at a step starting at t)."""
    return np.asarray(seen) < t


def never(seen: np.ndarray) -> np.ndarray:
    """bool[n_items]: items with no interaction at all."""
    return np.asarray(seen) == NEVER
