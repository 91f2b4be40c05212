"""The new-item channel's content model: recency-weighted soft nearest neighbours over the
request's recent history, in MiniLM text-embedding space.

For a history h_1..h_n (most recent last) and a candidate item j with unit embedding e_j:

    c_j = T * log sum_i w_i exp(cos(h_i, e_j) / T),   w_i proportional to decay ** (n - i)

so an item close to *any* recent item scores high (a soft max, T -> 0 is the plain max), with
recent items weighted up. `log_probs` turns c into a distribution over the whole catalog,
log p(j) = c_j / tau - log sum_r exp(c_r / tau) with r over a reference set of catalog items,
so a new item's probability does not depend on how many other new items are live.
Only matrix products over (requests x history x candidates) chunks; no Python loop over items.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from freshrec.errors import ConfigError


class ContentParams(BaseModel):
    """n_last: history items used (most recent); decay: weight ratio between consecutive
    items (1 = uniform); knn_temperature: T of the soft maximum over history items (cosine
    units); temperature: tau of the catalog distribution (cosine units)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_last: int = Field(10, ge=1)
    decay: float = Field(0.7, gt=0, le=1)
    knn_temperature: float = Field(0.1, gt=0)
    temperature: float = Field(0.06, gt=0)


def normalise_rows(emb: np.ndarray) -> torch.Tensor:
    """float32[n, d] L2-normalised copy of `emb` (zero rows stay zero); NaN/inf refused."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise ConfigError(f"item embeddings must be a finite float32[n_items, d], got {emb.shape}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return torch.from_numpy(emb / np.maximum(norms, 1e-12))


class ContentScorer:
    """Scores candidate items against request histories (see the module docstring).

    emb: float32[n_items, d] text embeddings, row i = item index i (normalised here).
    """

    def __init__(self, emb: np.ndarray | torch.Tensor, settings: ContentParams) -> None:
        self.emb = emb if isinstance(emb, torch.Tensor) else normalise_rows(emb)
        self.settings = settings

    def _weights(self, hist: torch.Tensor) -> torch.Tensor:
        """float[b, n_last] recency weights of the last n_last history items (0 at padding),
        summing to 1 over a request's real items."""
        s = self.settings
        n = hist.shape[1]
        w = (s.decay ** torch.arange(n - 1, -1, -1, dtype=torch.float32))[None, :]
        w = w * (hist >= 0).float()
        return w / w.sum(1, keepdim=True).clamp(min=1e-12)

    def _soft_knn(self, sims: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """c float[b, m] from cosine similarities sims float[b, n_last, m] of the last n_last
        history items hist int64[b, n_last] (-1 padded) to m candidates (0 for no history)."""
        s = self.settings
        logw = torch.log(self._weights(hist).clamp(min=1e-30))[:, :, None]
        c = s.knn_temperature * torch.logsumexp(sims / s.knn_temperature + logw, dim=1)
        c[(hist < 0).all(1)] = 0.0
        return c

    @torch.no_grad()
    def scores(self, histories: np.ndarray, items: np.ndarray, chunk: int = 128) -> np.ndarray:
        """float32[n, m] soft-kNN scores c (cosine units) of `items` int64[m] for histories
        int64[n, H] (right-aligned, -1 padded). Requests with an empty history score 0."""
        hist_all = torch.from_numpy(
            np.asarray(histories, dtype=np.int64)[:, -self.settings.n_last :]
        )
        cand = self.emb[torch.from_numpy(np.asarray(items, dtype=np.int64))]  # [m, d]
        out = np.empty((hist_all.shape[0], cand.shape[0]), dtype=np.float32)
        for start in range(0, hist_all.shape[0], chunk):
            hist = hist_all[start : start + chunk]
            sims = torch.einsum("bnd,md->bnm", self.emb[hist.clamp(min=0)], cand)
            out[start : start + chunk] = self._soft_knn(sims, hist).numpy()
        return out

    @torch.no_grad()
    def row_scores(self, histories: np.ndarray, items: np.ndarray, chunk: int = 512) -> np.ndarray:
        """float32[n, K] soft-kNN scores c of each request's own candidates items int64[n, K]
        (-1 = empty slot: -inf), e.g. the items of its GR beam."""
        hist_all = torch.from_numpy(
            np.asarray(histories, dtype=np.int64)[:, -self.settings.n_last :]
        )
        items = np.asarray(items, dtype=np.int64)
        cand_all = torch.from_numpy(np.clip(items, 0, None))
        out = np.empty(items.shape, dtype=np.float32)
        for start in range(0, len(items), chunk):
            hist = hist_all[start : start + chunk]
            cand = self.emb[cand_all[start : start + chunk]]  # [b, K, d]
            sims = torch.einsum("bnd,bkd->bnk", self.emb[hist.clamp(min=0)], cand)
            out[start : start + chunk] = self._soft_knn(sims, hist).numpy()
        return np.where(items >= 0, out, -np.inf).astype(np.float32)

    def log_normaliser(
        self, histories: np.ndarray, reference: np.ndarray, n_total: int
    ) -> np.ndarray:
        """float64[n] log sum over the catalog of exp(c / tau), estimated from `reference`
        int64[r] items (a sample of the `n_total` catalog items, or all of them; sorted). A
        request's own history items are left out: they are never recommended, and they are
        the items closest to the history, so they would dominate the sum."""
        if len(reference) == 0:
            return np.zeros(len(histories))
        c = self.scores(histories, reference).astype(np.float64) / self.settings.temperature
        hist = np.asarray(histories, dtype=np.int64)
        pos = np.clip(np.searchsorted(reference, hist), 0, len(reference) - 1)
        r, j = np.nonzero((hist >= 0) & (reference[pos] == hist))
        c[r, pos[r, j]] = -np.inf
        top = c.max(1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            lse = np.log(np.exp(c - top).sum(1)) + top[:, 0]
        return lse + np.log(n_total / max(len(reference), 1))

    def log_probs(
        self, histories: np.ndarray, items: np.ndarray, reference: np.ndarray, n_total: int
    ) -> np.ndarray:
        """float32[n, m] log p(item) under the content distribution over the whole catalog."""
        c = self.scores(histories, items) / self.settings.temperature
        return (c - self.log_normaliser(histories, reference, n_total)[:, None]).astype(np.float32)


def reference_items(candidates: np.ndarray, max_size: int, seed: int = 0) -> np.ndarray:
    """int64[<= max_size] sorted: the catalog items `candidates` (all of them when they fit,
    else a seeded uniform sample) over which the content distribution is normalised."""
    candidates = np.sort(np.asarray(candidates, dtype=np.int64))
    if len(candidates) <= max_size:
        return candidates
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=max_size, replace=False))
