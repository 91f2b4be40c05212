"""The normalised in-memory dataset every loader produces and every stage consumes.

Items and users are re-indexed to dense integers `0..n-1`; the original string ids are kept
for display and I/O. Timestamps are unix **seconds** (int64) whatever the source unit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Items:
    """The catalog. Row `i` describes item index `i`.

    ids: external item ids (unique strings), len n_items.
    titles: short display titles, len n_items.
    texts: the text that is embedded (title + genres/categories + description), non-empty.
    """

    ids: list[str]
    titles: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        """External id -> item index."""
        return {item_id: i for i, item_id in enumerate(self.ids)}


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one row per interaction, sorted by (user, ts, item).

    user: int32[n] user index; item: int32[n] item index; ts: int64[n] unix seconds.
    """

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A normalised dataset: users, the item catalog with text, interactions with timestamps."""

    name: str
    user_ids: list[str]
    items: Items
    interactions: Interactions
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Requests:
    """Evaluation requests: (user, history = the user's sequence before `pos`, target).

    user: int32[n]; pos: int32[n] index of the target inside the user's full sequence
    (so the history is `Split.sequence(user)[:pos]`, all earlier interactions in any period);
    target: int32[n] item index; cold: bool[n] True when the target is a new item.
    """

    user: np.ndarray
    pos: np.ndarray
    target: np.ndarray
    cold: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def subset(self, mask: np.ndarray) -> Requests:
        return Requests(self.user[mask], self.pos[mask], self.target[mask], self.cold[mask])


@dataclass(frozen=True)
class Split:
    """A dataset cut into training sequences and validation/test requests.

    Full per-user sequences (all periods, time order, ties by item index) are stored as CSR:
    `seq_items[seq_offsets[u]:seq_offsets[u+1]]` with timestamps `seq_ts`. The first
    `train_len[u]` entries of user u's sequence are the training period.

    is_new: bool[n_items], True for items with no interaction before the training cut-off
    (known from the catalog's first appearances, never from test labels).
    scheme: "time" (global cut-offs) or "loo" (leave-one-out).
    cutoffs: (train_end, valid_end) unix seconds for "time"; None for "loo".
    skipped: counts of requests skipped (e.g. empty history), by reason and part.
    """

    dataset: Dataset
    seq_offsets: np.ndarray
    seq_items: np.ndarray
    seq_ts: np.ndarray
    train_len: np.ndarray
    valid: Requests
    test: Requests
    is_new: np.ndarray
    scheme: str
    cutoffs: tuple[int, int] | None
    skipped: dict[str, int] = field(default_factory=dict)

    def sequence(self, user: int) -> np.ndarray:
        """int32[len] the user's full item sequence in time order."""
        return self.seq_items[self.seq_offsets[user] : self.seq_offsets[user + 1]]

    def train_sequence(self, user: int) -> np.ndarray:
        """int32[train_len[user]] the user's training-period items in time order."""
        start = self.seq_offsets[user]
        return self.seq_items[start : start + self.train_len[user]]

    def histories(self, requests: Requests, max_len: int) -> np.ndarray:
        """int64[n, max_len] the last `max_len` history items of each request, right-aligned
        (most recent last), left-padded with -1. Vectorised over requests."""
        n = len(requests)
        out = np.full((n, max_len), -1, dtype=np.int64)
        if n == 0:
            return out
        end = self.seq_offsets[requests.user] + requests.pos  # exclusive end in seq_items
        start = np.maximum(end - max_len, self.seq_offsets[requests.user])
        lengths = end - start
        cols = np.arange(max_len)[None, :]
        valid = cols >= (max_len - lengths)[:, None]
        idx = (end[:, None] - max_len + cols)[valid]
        out[valid] = self.seq_items[idx]
        return out
