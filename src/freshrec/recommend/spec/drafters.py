"""Drafters: score every catalog item, new ones included, from a request's history.

A drafter maps a batch of requests to float[B, n_items] scores; `SpecRanker` masks the history
and items without a SID, takes the top-δ as drafts and lets the GR model verify them. Drafters
never need training on new items: `TextDrafter` reads item texts, `SelfDrafter`
(`freshrec.recommend.spec.selfdraft`) embeds an item from its SID tokens.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from freshrec.errors import ConfigError


@runtime_checkable
class Drafter(Protocol):
    """Scores all items for a batch of requests.

    `score(histories, history_tokens)`: histories Long[B, H] item indices (right-aligned, -1
    padded, the GR model's history window), history_tokens Long[B, T] the GR model's input
    tokens of the same requests -> float[B, n_items] (higher = better; -inf = never draft).
    """

    name: str

    def score(self, histories: torch.Tensor, history_tokens: torch.Tensor) -> torch.Tensor: ...


class TextDrafter:
    """Text-embedding retrieval: inner product of each item's L2-normalised text embedding
    with the mean normalised embedding of the request's last `n_last` history items (the
    `TextKNNRanker` query). New items are scored from their text like any other.

    emb: float32[n_items, d] item text embeddings (row = item index).
    """

    def __init__(self, emb: np.ndarray, *, n_last: int = 5, name: str = "text") -> None:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise ConfigError(f"embeddings must be a finite float32[n_items, d], got {emb.shape}")
        if n_last < 1:
            raise ConfigError(f"n_last must be >= 1, got {n_last}")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        self.emb = torch.from_numpy(emb / np.maximum(norms, 1e-12))
        self.n_last = n_last
        self.name = name

    @property
    def n_items(self) -> int:
        return int(self.emb.shape[0])

    def query(self, histories: torch.Tensor) -> torch.Tensor:
        """float32[B, d]: mean normalised embedding of the last `n_last` items of histories
        Long[B, H] (-1 padded); zeros for an empty history."""
        hist = histories[:, -self.n_last :].cpu()
        valid = (hist >= 0).unsqueeze(-1).float()
        vecs = self.emb[hist.clamp(min=0)] * valid
        return vecs.sum(1) / valid.sum(1).clamp(min=1.0)

    @torch.no_grad()
    def score(self, histories: torch.Tensor, history_tokens: torch.Tensor) -> torch.Tensor:
        """float32[B, n_items] cosine-like similarity (history_tokens unused)."""
        return self.query(histories) @ self.emb.T
