"""Tuning speculative recommendation on validation: `tune_gamma` picks the acceptance threshold
(and the final order, the new items' score lengths) of a `SpecRanker` by an evaluation metric,
from one `trace` of a request sample (no model calls per grid point); `metric_value` reads a
metric off an `EvalResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.evaluate.protocol import EvalResult, Part, evaluate_ranker, sample_requests
from freshrec.recommend.beam_search import NEG_INF
from freshrec.recommend.spec.ranker import Order, SpecRanker, finalize, spec_stats
from freshrec.recommend.spec.verify import LengthMode

DEFAULT_GRID: tuple[float, ...] = (
    NEG_INF,
    *(round(g, 2) for g in np.arange(-6.0, 0.001, 0.25).tolist()),
    float("inf"),
)
"""Gamma grid of `tune_gamma`: -inf (accept every draft), -6 .. 0 step 0.25, +inf (plain
beam search)."""


class _Fixed:
    """A Ranker returning precomputed rankings of exactly the requests it was made for."""

    def __init__(self, ranker: SpecRanker, requests: Requests, items: np.ndarray) -> None:
        self.name, self.catalog, self.history_len = ranker.name, ranker.catalog, ranker.history_len
        self._requests, self._items = requests, items

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        same = (
            len(requests) == len(self._requests)
            and np.array_equal(requests.user, self._requests.user)
            and np.array_equal(requests.pos, self._requests.pos)
        )
        if not same:
            raise ConfigError("precomputed rankings asked for other requests")
        return self._items[:, :top_k]


def metric_value(result: EvalResult, metric: str) -> float:
    """`[subset:]R@K` or `[subset:]N@K` of an EvalResult; subset overall (default) | warm |
    cold | macro (the mean of the warm and cold values, so that the few cold requests weigh
    as much as the warm ones; NaN subsets count as 0)."""
    subset, _, name = metric.rpartition(":")
    kind, _, k = name.partition("@")
    subset = subset or "overall"
    if subset == "macro":
        vals = [metric_value(result, f"{s}:{name}") for s in ("warm", "cold")]
        return float(np.mean(np.nan_to_num(vals)))
    if subset not in ("overall", "warm", "cold") or kind.upper() not in ("R", "N"):
        raise ConfigError(f"unknown metric {metric!r} (use e.g. 'R@20', 'N@10', 'cold:R@20')")
    sub = getattr(result.metrics, subset)
    table = sub.recall if kind.upper() == "R" else sub.ndcg
    if not k.isdigit() or int(k) not in table:
        raise ConfigError(f"metric {metric!r}: K={k} was not computed (K in {sorted(table)})")
    return float(table[int(k)])


@dataclass
class GammaTuning:
    """best_gamma / best_order / best_lengths (highest metric; ties -> the first in (lengths,
    order, grid) order); results: one (gamma, EvalResult) per (lengths mode, order, grid
    point) on the tuning part, mode and order in each result's `extra`."""

    best_gamma: float
    best_order: Order
    best_lengths: LengthMode
    metric: str
    results: list[tuple[float, EvalResult]] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """[{gamma, order, metric value, accepted_mean, exit_round_mean, new_share}]."""
        return [
            {"gamma": g, self.metric: metric_value(r, self.metric), **r.extra}
            for g, r in self.results
        ]

    def best(self) -> EvalResult:
        """The EvalResult of the chosen (gamma, order)."""
        return next(
            r
            for g, r in self.results
            if g == self.best_gamma
            and r.extra["order"] == self.best_order
            and r.extra["lengths"] == self.best_lengths
        )


def tune_gamma(
    ranker: SpecRanker,
    split: Split,
    part: Part = "valid",
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    metric: str = "R@20",
    max_requests: int | None = 1000,
    seed: int = 0,
    top_k: int = 50,
    orders: Sequence[Order] | None = None,
    length_modes: Sequence[LengthMode] | None = None,
    apply: bool = True,
) -> GammaTuning:
    """Pick gamma (and, given several, the final order and the score-length mode) on `part`
    (validation) by `metric`: one `trace` of a seeded request sample, then `finalize` +
    `evaluate_ranker` per (lengths mode, order, gamma) -- no model calls per grid point.
    orders / length_modes: default the ranker's own. With `apply`, sets `ranker.gamma`,
    `ranker.order` and `ranker.lengths_mode` to the best values."""
    if part == "test":
        raise ConfigError("tune gamma on validation, not on the test split")
    if not grid:
        raise ConfigError("empty gamma grid")
    orders = tuple(orders) if orders else (ranker.order,)
    modes = tuple(length_modes) if length_modes else (ranker.lengths_mode,)
    requests, _ = sample_requests(getattr(split, part), max_requests, seed)
    is_new = ranker.is_new if ranker.is_new is not None else split.is_new
    trace = ranker.trace_requests(split, requests, top_k)
    results = []
    for mode in modes:
        lengths = ranker.lengths(is_new, mode)
        for order in orders:
            for g in grid:
                out = finalize(trace, float(g), order, lengths)
                fixed = _Fixed(ranker, requests, out.items.numpy())
                extra = {"gamma": float(g), "order": order, "lengths": mode}
                res = evaluate_ranker(
                    fixed,
                    split,
                    part,
                    top_k=top_k,
                    max_requests=max_requests,
                    seed=seed,
                    extra={**extra, **spec_stats(out, is_new)},
                )
                results.append((float(g), res))
    values = [metric_value(r, metric) for _, r in results]
    best_g, best_r = results[int(np.argmax(values))]
    tuning = GammaTuning(best_g, best_r.extra["order"], best_r.extra["lengths"], metric, results)
    if apply:
        ranker.gamma, ranker.order = tuning.best_gamma, tuning.best_order
        ranker.lengths_mode = tuning.best_lengths
    return tuning
