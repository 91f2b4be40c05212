"""Content baseline: mean text embedding of the last history items vs every item's embedding."""

from __future__ import annotations

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.evaluate.protocol import DEFAULT_HISTORY_LEN, rank_in_chunks


class TextKNNRanker:
    """Scores every item by the inner product of its L2-normalised text embedding with the
    mean normalised embedding of the request's last `n_last` history items; the last
    `history_len` history items (None = all) are excluded. Ranks the full catalog (new items
    included, they have text); `only_new=True` restricts candidates to new items.

    emb: float32[n_items, d] item text embeddings (row i = item index i).
    """

    catalog = "full"

    def __init__(
        self,
        emb: np.ndarray,
        *,
        n_last: int = 5,
        only_new: bool = False,
        history_len: int | None = DEFAULT_HISTORY_LEN,
        name: str | None = None,
    ) -> None:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise ConfigError(f"embeddings must be a finite float32[n_items, d], got {emb.shape}")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.emb = torch.from_numpy(emb / np.maximum(norms, 1e-12))
        self.n_last = n_last
        self.only_new = only_new
        self.history_len = history_len
        self.name = name or ("text-knn (new only)" if only_new else "text-knn")

    def _query(self, split: Split, requests: Requests) -> torch.Tensor:
        """float32[b, d] mean normalised embedding of the last `n_last` history items."""
        hist = torch.from_numpy(split.histories(requests, self.n_last))  # [b, n_last], -1 pad
        valid = (hist >= 0).unsqueeze(-1).float()
        vecs = self.emb[hist.clamp(min=0)] * valid
        return vecs.sum(1) / valid.sum(1).clamp(min=1.0)

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        """int64[n, top_k] nearest items by inner product, history excluded."""
        if self.emb.shape[0] != split.dataset.n_items:
            raise ConfigError(
                f"{self.emb.shape[0]} embedding rows for a catalog of {split.dataset.n_items} items"
            )
        blocked = None
        if self.only_new:
            blocked = torch.from_numpy(~np.asarray(split.is_new, dtype=bool))

        def score(sub: Requests) -> torch.Tensor:
            s = self._query(split, sub) @ self.emb.T
            return s.masked_fill(blocked, float("-inf")) if blocked is not None else s

        return rank_in_chunks(score, split, requests, top_k, history_len=self.history_len)
