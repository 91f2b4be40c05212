"""Ranking metrics of the evaluation protocol (docs/EVAL.md), vectorised over requests.

A hit is the exact target item (its full SID): ranked lists hold item indices, and each item
owns exactly one SID, so an item match is a full-SID match; prefixes never count as hits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from freshrec.errors import ConfigError

KS: tuple[int, ...] = (5, 10, 20, 50)
"""The cut-offs every table reports."""

SUBSETS: tuple[str, ...] = ("overall", "warm", "cold")


@dataclass(frozen=True)
class SubsetMetrics:
    """Recall@K and NDCG@K averaged over one subset of requests (NaN when the subset is empty)."""

    n: int
    recall: dict[int, float]
    ndcg: dict[int, float]


@dataclass(frozen=True)
class Metrics:
    """Everything one ranking run is scored on.

    overall/warm/cold: recall and NDCG per K with request counts.
    exposure[K]: share of the n*K top-K slots holding new items (empty slots count as not new).
    coverage[K]: distinct items in any top-K / `catalog_size`.
    pos_acc: name ("top1", "top10", ...) -> float[P]; entry j = share of requests whose first
      j+1 SID tokens are right (for "topK": for at least one of the top-K items). Empty when no
      SID table was given.
    """

    ks: tuple[int, ...]
    overall: SubsetMetrics
    warm: SubsetMetrics
    cold: SubsetMetrics
    exposure: dict[int, float]
    coverage: dict[int, float]
    catalog_size: int
    pos_acc: dict[str, list[float]] = field(default_factory=dict)

    def subset(self, name: str) -> SubsetMetrics:
        if name not in SUBSETS:
            raise ConfigError(f"unknown subset {name!r}; expected one of {SUBSETS}")
        return getattr(self, name)

    def to_dict(self) -> dict[str, float | int]:
        """Flat keys: `overall/recall@20`, `warm/ndcg@10`, `cold/n`, `exposure@10`,
        `coverage@50`, `catalog_size`, `pos_acc/top1/p0`."""
        out: dict[str, float | int] = {}
        for name in SUBSETS:
            sub = self.subset(name)
            out[f"{name}/n"] = sub.n
            for k in self.ks:
                out[f"{name}/recall@{k}"] = sub.recall[k]
                out[f"{name}/ndcg@{k}"] = sub.ndcg[k]
        for k in self.ks:
            out[f"exposure@{k}"] = self.exposure[k]
            out[f"coverage@{k}"] = self.coverage[k]
        out["catalog_size"] = self.catalog_size
        for name, acc in self.pos_acc.items():
            for j, value in enumerate(acc):
                out[f"pos_acc/{name}/p{j}"] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> Metrics:
        """Inverse of `to_dict` (used to reload JSON reports)."""
        ks = tuple(sorted(int(key.split("@")[1]) for key in d if key.startswith("overall/recall@")))
        subsets = {
            name: SubsetMetrics(
                n=int(d[f"{name}/n"]),
                recall={k: float(d[f"{name}/recall@{k}"]) for k in ks},
                ndcg={k: float(d[f"{name}/ndcg@{k}"]) for k in ks},
            )
            for name in SUBSETS
        }
        pos: dict[str, dict[int, float]] = {}
        for key, value in d.items():
            if key.startswith("pos_acc/"):
                _, name, p = key.split("/")
                pos.setdefault(name, {})[int(p[1:])] = float(value)
        return cls(
            ks=ks,
            exposure={k: float(d[f"exposure@{k}"]) for k in ks},
            coverage={k: float(d[f"coverage@{k}"]) for k in ks},
            catalog_size=int(d["catalog_size"]),
            pos_acc={name: [v[j] for j in sorted(v)] for name, v in pos.items()},
            **subsets,
        )


def hit_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """int64[n] 0-based rank of each request's target in `ranked` (int64[n, K_max]), or -1.

    Slots holding -1 never hit (targets are item indices >= 0).
    """
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
        raise ConfigError(
            f"ranked must be [n, K] and targets [n]; got {ranked.shape} and {targets.shape}"
        )
    hits = (ranked == targets[:, None]) & (ranked >= 0)
    first = hits.argmax(axis=1).astype(np.int64)
    return np.where(hits.any(axis=1), first, -1)


def _subset(rank: np.ndarray, mask: np.ndarray, ks: tuple[int, ...]) -> SubsetMetrics:
    r = rank[mask]
    n = int(r.shape[0])
    hit = r >= 0
    gain = np.zeros(n, dtype=np.float64)
    gain[hit] = 1.0 / np.log2(r[hit] + 2.0)
    recall, ndcg = {}, {}
    for k in ks:
        in_k = hit & (r < k)
        recall[k] = float(in_k.mean()) if n else float("nan")
        ndcg[k] = float(np.where(in_k, gain, 0.0).mean()) if n else float("nan")
    return SubsetMetrics(n=n, recall=recall, ndcg=ndcg)


def position_accuracy(target_sids: np.ndarray, pred_sids: np.ndarray) -> np.ndarray:
    """float64[P] share of requests whose first j+1 SID tokens are right, j = 0..P-1.

    target_sids: int64[n, P]. pred_sids: int64[n, P] (one prediction per request, e.g. top-1)
    or int64[n, K, P] (credit the best-matching of K predictions). Rows of -1 (no prediction,
    or an item without a SID) match nothing.
    """
    target_sids = np.asarray(target_sids)
    pred = np.asarray(pred_sids)
    if pred.ndim == 2:
        pred = pred[:, None, :]
    n, p = target_sids.shape
    if pred.shape[0] != n or pred.shape[2] != p:
        raise ConfigError(f"pred_sids {pred.shape} does not match target_sids {target_sids.shape}")
    if n == 0:
        return np.full(p, np.nan)
    ok = (pred == target_sids[:, None, :]) & (target_sids[:, None, :] >= 0)
    prefix_len = np.cumprod(ok, axis=2).sum(axis=2).max(axis=1)  # [n] longest right prefix
    return (prefix_len[:, None] > np.arange(p)[None, :]).mean(axis=0)


def ranked_sids(ranked: np.ndarray, sids: np.ndarray) -> np.ndarray:
    """int64[n, K, P] the SIDs of ranked items (`sids`: int64[n_items, P]); -1 for empty slots."""
    out = sids[np.where(ranked >= 0, ranked, 0)]
    out[ranked < 0] = -1
    return out


def compute_metrics(
    ranked: np.ndarray,
    targets: np.ndarray,
    cold: np.ndarray,
    is_new: np.ndarray,
    *,
    catalog_size: int | None = None,
    ks: tuple[int, ...] = KS,
    sids: np.ndarray | None = None,
    pos_acc_ks: tuple[int, ...] = (1, 10),
) -> Metrics:
    """Score ranked lists.

    ranked: int64[n, K_max] item indices best first, -1 for empty slots.
    targets: int64[n] target items. cold: bool[n] True when the target is new.
    is_new: bool[n_items]. catalog_size: the denominator of coverage (the size of the catalog
    the method ranked, e.g. the number of warm items); defaults to n_items.
    ks: cut-offs; each must be <= K_max (a shorter list cannot be scored at a larger K).
    sids: optional int64[n_items, P] SID table; adds per-position token accuracy for the top-1
    item and for the best-matching of the top-K, K in `pos_acc_ks`.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    cold = np.asarray(cold, dtype=bool)
    is_new = np.asarray(is_new, dtype=bool)
    n, k_max = ranked.shape if ranked.ndim == 2 else (-1, -1)
    if cold.shape != (n,):
        raise ConfigError(f"cold must be bool[{n}], got shape {cold.shape}")
    ks = tuple(sorted(ks))
    if ks and ks[-1] > k_max:
        raise ConfigError(f"cut-off K={ks[-1]} exceeds the {k_max} ranked items per request")
    if catalog_size is None:
        catalog_size = int(is_new.shape[0])
    if catalog_size <= 0:
        raise ConfigError("catalog_size must be positive")

    rank = hit_ranks(ranked, targets)
    everyone = np.ones(n, dtype=bool)
    subsets = {
        "overall": _subset(rank, everyone, ks),
        "warm": _subset(rank, ~cold, ks),
        "cold": _subset(rank, cold, ks),
    }
    filled = ranked >= 0
    new_slot = filled & is_new[np.where(filled, ranked, 0)]
    exposure, coverage = {}, {}
    for k in ks:
        exposure[k] = float(new_slot[:, :k].mean()) if n else float("nan")
        top = ranked[:, :k]
        coverage[k] = float(np.unique(top[top >= 0]).shape[0] / catalog_size)

    pos_acc: dict[str, list[float]] = {}
    if sids is not None:
        sids = np.asarray(sids, dtype=np.int64)
        target_sids = sids[targets]
        for k in pos_acc_ks:
            if k > k_max:
                continue
            pred = ranked_sids(ranked[:, :k], sids)
            pos_acc[f"top{k}"] = [float(v) for v in position_accuracy(target_sids, pred)]
    return Metrics(
        ks=ks,
        exposure=exposure,
        coverage=coverage,
        catalog_size=int(catalog_size),
        pos_acc=pos_acc,
        **subsets,
    )
