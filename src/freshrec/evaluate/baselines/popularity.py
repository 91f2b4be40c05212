"""Most-popular baseline: training-period interaction counts, same list for everyone."""

from __future__ import annotations

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.evaluate.protocol import DEFAULT_HISTORY_LEN, rank_in_chunks


def train_item_counts(split: Split) -> np.ndarray:
    """int64[n_items] number of training-period interactions of each item (vectorised)."""
    lengths = np.diff(np.asarray(split.seq_offsets, dtype=np.int64))
    within = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(split.seq_offsets[:-1], lengths)
    in_train = within < np.repeat(np.asarray(split.train_len, dtype=np.int64), lengths)
    items = np.asarray(split.seq_items[: lengths.sum()])[in_train]
    return np.bincount(items, minlength=split.dataset.n_items).astype(np.int64)


class PopularityRanker:
    """Items by training-period interaction count, ties by item index; the request's last
    `history_len` items (None = all) are excluded.

    New items have count 0 and are never recommended (this is the warm-catalog baseline).
    """

    catalog = "warm"

    def __init__(
        self, name: str = "most-popular", history_len: int | None = DEFAULT_HISTORY_LEN
    ) -> None:
        self.name = name
        self.history_len = history_len
        self._split: Split | None = None
        self._scores: torch.Tensor | None = None

    def fit(self, split: Split) -> PopularityRanker:
        counts = train_item_counts(split)
        n = counts.shape[0]
        order = np.lexsort((np.arange(n), -counts))  # count desc, then item index asc
        scores = np.empty(n, dtype=np.float32)
        scores[order] = n - np.arange(n, dtype=np.float32)  # exact in float32 for n < 2**24
        scores[(counts == 0) | np.asarray(split.is_new, dtype=bool)] = -np.inf
        self._scores = torch.from_numpy(scores)
        self._split = split
        return self

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        """int64[n, top_k]: the popularity order minus each request's history."""
        if self._split is not split or self._scores is None:
            self.fit(split)
        scores = self._scores
        return rank_in_chunks(
            lambda sub: scores.expand(len(sub), -1),
            split,
            requests,
            top_k,
            history_len=self.history_len,
            chunk_size=1024,
        )
