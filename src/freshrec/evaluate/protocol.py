"""The ranking protocol every method is evaluated under (docs/EVAL.md).

A `Ranker` returns its top-K items per request with the request's history items excluded;
`evaluate_ranker` runs it on the validation or test requests of a `Split` and scores it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.evaluate.metrics import KS, Metrics, compute_metrics

DEFAULT_HISTORY_LEN = 20
"""History length of the baselines (TIGER's): a request's model input and exclusion set are
its last 20 interactions (docs/EVAL.md: history truncated to the model's history length)."""

Part = Literal["valid", "test"]
Catalog = Literal["warm", "full"]


@runtime_checkable
class Ranker(Protocol):
    """A recommender under evaluation.

    name: the row label in tables. catalog: "warm" when it can only rank training-period items,
    "full" when it ranks the whole catalog including new items. history_len: how many of the
    most recent interactions form the request's history, the model input and the exclusion set
    (None = all earlier interactions).
    """

    name: str
    catalog: str
    history_len: int | None

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        """int64[n, top_k] item indices, best first, -1 for empty slots; never an item of the
        request's history (the last `history_len` items of `split.sequence(user)[:pos]`)."""
        ...


# --------------------------------------------------------------------------- helpers


def history_pairs(
    split: Split, requests: Requests, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) int64[m] each: every (request row, history item) pair.

    The history of request i is `split.sequence(user[i])[:pos[i]]`, truncated to its last
    `max_len` items (None = all earlier interactions); vectorised, no loop.
    """
    pos = np.asarray(requests.pos, dtype=np.int64)
    lengths = pos if max_len is None else np.minimum(pos, max_len)
    starts = np.asarray(split.seq_offsets, dtype=np.int64)[requests.user] + pos - lengths
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(requests), dtype=np.int64), lengths)
    if total == 0:
        return rows, np.zeros(0, dtype=np.int64)
    # index into seq_items: start of the row's history + position within it
    first = np.cumsum(lengths) - lengths
    idx = np.arange(total, dtype=np.int64) + np.repeat(starts - first, lengths)
    return rows, split.seq_items[idx].astype(np.int64)


def history_mask(split: Split, requests: Requests, max_len: int | None = None) -> torch.Tensor:
    """bool[n, n_items] True where the item is in the request's (last `max_len`) history."""
    rows, items = history_pairs(split, requests, max_len)
    mask = torch.zeros(len(requests), split.dataset.n_items, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(items)] = True
    return mask


def topk_excluding(scores: torch.Tensor, exclude: torch.Tensor, top_k: int) -> np.ndarray:
    """int64[n, top_k] items by descending score, skipping `exclude` (bool[n, n_items]) and
    items scored -inf (candidates a method cannot rank); -1 fills slots with no candidate.

    scores: float[n, n_items]. Ties: lower item index first (stable sort).
    """
    scores = scores.masked_fill(exclude, float("-inf"))
    k = min(top_k, scores.shape[1])
    values, index = torch.topk(scores, k, dim=1, sorted=True)
    # torch.topk's tie order is unspecified; re-sort (value desc, index asc) for determinism
    order = np.lexsort((index.numpy(), -values.double().numpy()), axis=1)
    index = np.take_along_axis(index.numpy(), order, axis=1)
    values = np.take_along_axis(values.numpy(), order, axis=1)
    out = np.where(np.isneginf(values), -1, index).astype(np.int64)
    if k < top_k:
        out = np.concatenate([out, np.full((out.shape[0], top_k - k), -1, np.int64)], axis=1)
    return out


def rank_in_chunks(
    score_fn: Callable[[Requests], torch.Tensor],
    split: Split,
    requests: Requests,
    top_k: int,
    history_len: int | None = None,
    chunk_size: int = 512,
) -> np.ndarray:
    """Call `score_fn(chunk_requests) -> float[b, n_items]` chunk by chunk, exclude each
    request's history (its last `history_len` items; None = all) and keep the top-K.
    Returns int64[n, top_k]."""
    out = np.full((len(requests), top_k), -1, dtype=np.int64)
    for start in range(0, len(requests), chunk_size):
        sel = np.arange(start, min(start + chunk_size, len(requests)))
        sub = requests.subset(sel)
        scores = score_fn(sub)
        out[sel] = topk_excluding(scores, history_mask(split, sub, history_len), top_k)
    return out


def sample_requests(
    requests: Requests, max_requests: int | None, seed: int
) -> tuple[Requests, np.ndarray]:
    """A seeded uniform sample (without replacement, kept in original order) of at most
    `max_requests` requests. Returns (subset, int64 row indices into `requests`)."""
    n = len(requests)
    if max_requests is None or max_requests >= n:
        idx = np.arange(n, dtype=np.int64)
    else:
        if max_requests <= 0:
            raise ConfigError(f"max_requests must be positive, got {max_requests}")
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n, size=max_requests, replace=False)).astype(np.int64)
    return requests.subset(idx), idx


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Metrics of one method on one split part plus what is needed to reproduce/compare them.

    n_requests: requests scored (after sampling); n_available: requests in the part before
    sampling; sample_seed: None when every request was scored.
    history_len: the ranker's history length (input and exclusion set; None = all).
    seconds: wall time of `rank`; ms_per_request: seconds * 1000 / n_requests.
    """

    method: str
    catalog: str
    part: str
    metrics: Metrics
    n_requests: int
    n_available: int
    max_requests: int | None
    sample_seed: int | None
    top_k: int
    history_len: int | None
    seconds: float
    ms_per_request: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: metadata keys plus `metrics` (flat, see `Metrics.to_dict`)."""
        return {
            "method": self.method,
            "catalog": self.catalog,
            "part": self.part,
            "n_requests": self.n_requests,
            "n_available": self.n_available,
            "max_requests": self.max_requests,
            "sample_seed": self.sample_seed,
            "top_k": self.top_k,
            "history_len": self.history_len,
            "seconds": self.seconds,
            "ms_per_request": self.ms_per_request,
            "extra": self.extra,
            "metrics": self.metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        return cls(**{**d, "metrics": Metrics.from_dict(d["metrics"])})

    def flat(self) -> dict[str, Any]:
        """One flat dict: metadata + metric keys."""
        d = self.to_dict()
        metrics = d.pop("metrics")
        d.pop("extra")
        return {**d, **metrics}


def evaluate_ranker(
    ranker: Ranker,
    split: Split,
    part: Part = "test",
    top_k: int = 50,
    max_requests: int | None = None,
    seed: int = 0,
    *,
    ks: tuple[int, ...] = KS,
    sids: np.ndarray | None = None,
    pos_acc_ks: tuple[int, ...] = (1, 10),
    check_exclusion: bool = True,
    extra: dict[str, Any] | None = None,
) -> EvalResult:
    """Rank `split.<part>` requests (optionally a seeded sample of `max_requests`) and score them.

    sids: optional int64[n_items, P] SID table for per-position token accuracy of the top-1
    item and of the best-matching item in the top-K, K in `pos_acc_ks` (keys "top1", "top10").
    check_exclusion: raise if the ranker returned a history item (the protocol forbids it).
    Coverage is relative to the catalog the ranker ranks: warm items for catalog "warm".
    """
    if part not in ("valid", "test"):
        raise ConfigError(f"part must be 'valid' or 'test', got {part!r}")
    if ranker.catalog not in ("warm", "full"):
        raise ConfigError(f"{ranker.name}: catalog must be 'warm' or 'full', got {ranker.catalog}")
    all_requests: Requests = getattr(split, part)
    requests, _ = sample_requests(all_requests, max_requests, seed)
    sampled = max_requests is not None and max_requests < len(all_requests)

    t0 = time.perf_counter()
    ranked = np.asarray(ranker.rank(split, requests, top_k=top_k))
    seconds = time.perf_counter() - t0
    if ranked.shape != (len(requests), top_k):
        raise ConfigError(
            f"{ranker.name}.rank returned shape {ranked.shape}, expected {(len(requests), top_k)}"
        )
    ranked = ranked.astype(np.int64, copy=False)
    history_len = getattr(ranker, "history_len", None)
    if check_exclusion and len(requests):
        rows, items = history_pairs(split, requests, history_len)
        n_items = split.dataset.n_items
        bad = np.isin(
            rows * n_items + items,
            np.nonzero(ranked >= 0)[0] * n_items + ranked[ranked >= 0],
        )
        if bad.any():
            raise ConfigError(
                f"{ranker.name} recommended {int(bad.sum())} items from request histories"
            )

    is_new = np.asarray(split.is_new, dtype=bool)
    catalog_size = int((~is_new).sum()) if ranker.catalog == "warm" else int(is_new.shape[0])
    metrics = compute_metrics(
        ranked,
        requests.target,
        requests.cold,
        is_new,
        catalog_size=catalog_size,
        ks=tuple(k for k in ks if k <= top_k),
        sids=sids,
        pos_acc_ks=pos_acc_ks,
    )
    n = len(requests)
    return EvalResult(
        method=ranker.name,
        catalog=ranker.catalog,
        part=part,
        metrics=metrics,
        n_requests=n,
        n_available=len(all_requests),
        max_requests=max_requests,
        sample_seed=seed if sampled else None,
        top_k=top_k,
        history_len=history_len,
        seconds=seconds,
        ms_per_request=seconds * 1000.0 / max(n, 1),
        extra=dict(extra or {}),
    )
