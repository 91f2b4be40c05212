"""Calibrating the fused fresh-item ranker on validation requests (docs/FRESH.md).

`fit_fresh` runs the GR beam once on the validation requests, then chooses, in order:
1. the content channel's history window, recency decay and soft-max temperature, by new-only
   Recall@20 on the requests whose target is new;
2. its catalog temperature tau, by the likelihood of those targets;
   then the warm expert's content weight (`fusion.warm_expert`), by the warm Recall@20 and
   NDCG@10 of the re-ranked beam (their summed ratios to the plain GR model's);
3. the freshness gate, a logistic model of "the target is new" on `gate_features`;
4. the gate's scale a and bias b (and the pinned head, `FitGrid.head`, 1 by default), by the
   largest overall Recall@20 (`objective="overall"`, the default; ties: cold Recall@20) or
   the largest cold Recall@20 (`objective="cold"`; ties: overall) among the settings whose
   warm Recall@20 and warm NDCG@10 stay within `budget` of the plain GR model's on the same
   requests; when no setting keeps warm quality, the new-item channel is switched off.
   Maximising overall recall keeps the choice away from the budget's edge, where warm recall
   falls steeply with the gate's bias and a shift between validation and test (test
   histories hold more new items) costs most.
Nothing here reads the test split. The returned `FreshParams.fitted` records the choice, the
validation metrics and the frontier of every (a, b, head) tried.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.evaluate.metrics import hit_ranks
from freshrec.evaluate.protocol import sample_requests
from freshrec.recommend.fresh.content import ContentParams
from freshrec.recommend.fresh.fusion import Fused, warm_expert
from freshrec.recommend.fresh.gate import LogisticGate
from freshrec.recommend.fresh.params import FreshParams, GateParams
from freshrec.recommend.fresh.ranker import Channels, FreshRanker, exclude_items

# what the mixture maximises within the warm budget: the metrics compared, in order
OBJECTIVES: dict[str, tuple[str, str]] = {
    "overall": ("overall_recall20", "cold_recall20"),
    "cold": ("cold_recall20", "overall_recall20"),
}


@dataclass(frozen=True)
class FitGrid:
    """The values `fit_fresh` tries."""

    n_last: tuple[int, ...] = (5, 10, 20)
    decay: tuple[float, ...] = (1.0, 0.85, 0.7, 0.5)
    knn_temperature: tuple[float, ...] = (0.05, 0.1, 0.2)
    gate_scale: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    gate_bias: tuple[float, ...] = tuple(np.round(np.arange(-6.0, 4.01, 0.25), 2))
    head: tuple[int, ...] = (1,)
    warm_weight: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


def quality(items: np.ndarray, requests: Requests) -> dict[str, float]:
    """R@20 and N@10 on overall / warm / cold requests of a ranked list int64[n, >= 20]."""
    rank = hit_ranks(items, np.asarray(requests.target))
    cold = np.asarray(requests.cold, dtype=bool)
    gain = np.where((rank >= 0) & (rank < 10), 1.0 / np.log2(np.maximum(rank, 0) + 2.0), 0.0)
    r20 = (rank >= 0) & (rank < 20)
    out = {}
    for name, m in (("overall", np.ones_like(cold)), ("warm", ~cold), ("cold", cold)):
        out[f"{name}_recall20"] = float(r20[m].mean()) if m.any() else float("nan")
        out[f"{name}_ndcg10"] = float(gain[m].mean()) if m.any() else float("nan")
    return out


def within_budget(q: dict[str, float], base: dict[str, float], budget: float) -> bool:
    """Warm R@20 and warm N@10 at least (1 - budget) x the plain GR model's."""
    return all(q[k] >= (1.0 - budget) * base[k] for k in ("warm_recall20", "warm_ndcg10"))


def _new_only_recall(
    ranker: FreshRanker, hist: np.ndarray, targets: np.ndarray, content: ContentParams
) -> float:
    scores = ranker.content(FreshParams(content=content)).scores(hist, ranker.new_items)
    exclude_items(scores, hist, ranker.column)
    k = min(20, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((ranker.new_items[top] == targets[:, None]).any(1).mean())


def _fit_temperature(
    ranker: FreshRanker, hist: np.ndarray, targets: np.ndarray, content: ContentParams
) -> float:
    """tau maximising the mean log-likelihood of new targets among the new items."""
    c = ranker.content(FreshParams(content=content)).scores(hist, ranker.new_items)
    exclude_items(c, hist, ranker.column)
    c = torch.from_numpy(np.where(np.isfinite(c), c, -5.0).astype(np.float64))
    tgt = torch.from_numpy(ranker.column[targets])
    log_tau = torch.tensor(np.log(content.temperature), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_tau], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(c / log_tau.exp(), tgt)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(np.exp(log_tau.item()), 1e-3, 10.0))


def fit_fresh(
    ranker: FreshRanker,
    split: Split,
    *,
    part: str = "valid",
    max_requests: int | None = None,
    seed: int = 0,
    budget: float = 0.01,
    grid: FitGrid | None = None,
    beam: tuple[np.ndarray, np.ndarray] | None = None,
    objective: str = "overall",
) -> tuple[FreshParams, Channels, Requests]:
    """Fit `ranker`'s parameters on a seeded sample of `max_requests` requests of `part`
    (all by default). `beam`: the GR beam's (items, scores) on exactly those requests, if
    already computed. Returns (params, the channels under them, the requests used)."""
    if part != "valid":
        raise ConfigError(f"the fresh ranker is calibrated on validation requests, not {part!r}")
    if not 0 <= budget < 1:
        raise ConfigError(f"budget must be in [0, 1), got {budget}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    grid = grid or FitGrid()
    t0 = time.perf_counter()
    requests, _ = sample_requests(split.valid, max_requests, seed)
    cold = np.asarray(requests.cold, dtype=bool)
    if not cold.any() or cold.all():
        raise ConfigError("calibration needs validation requests with new and warm targets")
    hist = split.histories(requests, ranker.history_len or 20)
    users = np.asarray(requests.user)
    if beam is None:
        beam = ranker.beam.rank_histories(hist, users, 50)
    beam_s = time.perf_counter() - t0
    base = quality(beam[0], requests)

    # 1-2: the content channel (or the ranker's own scorer), on requests whose target is new
    targets = np.asarray(requests.target)[cold]
    new_only_r20, content = _fit_content(ranker, hist[cold], targets, grid)
    if ranker.scorer is not None and hasattr(ranker.scorer, "temperature"):
        ranker.scorer.temperature = content.temperature
    params = ranker.params.model_copy(update={"content": content})
    warm_weight, warm_rows = _fit_warm_weight(ranker, hist, beam, requests, base, params, grid)
    params = params.model_copy(update={"warm_weight": warm_weight})

    # 3: the gate
    ch = ranker.channels(hist, users, beam=beam, params=params)
    gate = LogisticGate.fit(ch.features, cold)
    params = params.model_copy(update={"gate": GateParams.of(gate)})

    # 4: the mixture's scale / bias / head under the warm budget
    chosen, frontier = _choose_mixture(
        ranker, ch, params, gate.logit(ch.features), requests, base, budget, grid, objective
    )
    params = params.model_copy(
        update={
            "gate_scale": chosen["gate_scale"],
            "gate_bias": chosen["gate_bias"],
            "head": chosen["head"],
            "fitted": {
                "part": part,
                "n_requests": len(requests),
                "n_cold": int(cold.sum()),
                "sample_seed": seed if max_requests is not None else None,
                "budget": budget,
                "objective": objective,
                "new_only_cold_recall20": new_only_r20,
                "warm_expert": warm_rows,
                "gr": base,
                "fresh": {k: chosen[k] for k in base},
                "frontier": frontier,
                "beam_seconds": beam_s,
                "fit_seconds": time.perf_counter() - t0,
            },
        }
    )
    return params, ranker.channels(hist, users, beam=beam, params=params), requests


def _fit_content(
    ranker: FreshRanker, hist: np.ndarray, targets: np.ndarray, grid: FitGrid
) -> tuple[float, ContentParams]:
    """(new-only Recall@20, content settings) of the best history window / decay / soft-max
    temperature of the grid (the ranker's own settings when it has a scorer of its own), with
    the catalog temperature tau then fitted by likelihood. hist: int64[n, H] histories of the
    requests whose target is new; targets: int64[n] those targets."""
    best: tuple[float, ContentParams] | None = None
    settings = (
        itertools.product(grid.n_last, grid.decay, grid.knn_temperature)
        if ranker.scorer is None
        else [(0, 1.0, 1.0)]  # a given scorer has no content settings
    )
    for n_last, decay, knn_t in settings:
        c = ranker.params.content
        if ranker.scorer is None:
            c = ContentParams(n_last=n_last, decay=decay, knn_temperature=knn_t)
        r = _new_only_recall(ranker, hist, targets, c)
        if best is None or r > best[0] + 1e-12:
            best = (r, c)
    assert best is not None
    tau = _fit_temperature(ranker, hist, targets, best[1])
    return best[0], best[1].model_copy(update={"temperature": tau})


def _fit_warm_weight(
    ranker: FreshRanker,
    hist: np.ndarray,
    beam: tuple[np.ndarray, np.ndarray],
    requests: Requests,
    base: dict[str, float],
    params: FreshParams,
    grid: FitGrid,
) -> tuple[float, list[dict[str, float]]]:
    """(weight, rows): the warm expert's content weight with the largest warm R@20 / GR +
    warm N@10 / GR on `requests` (ties: the smaller weight), and every weight's quality."""
    content = ranker.warm_content(hist, beam[0], params)
    rows, best = [], (-np.inf, 0.0)
    for w in sorted(grid.warm_weight):
        q = quality(warm_expert(beam[0], beam[1], content, w)[0], requests)
        rows.append({"warm_weight": w, **q})
        gain = sum(q[k] / max(base[k], 1e-12) for k in ("warm_recall20", "warm_ndcg10"))
        if gain > best[0] + 1e-12:
            best = (gain, w)
    return best[1], rows


def _choose_mixture(
    ranker: FreshRanker,
    ch: Channels,
    params: FreshParams,
    logit: np.ndarray,
    requests: Requests,
    base: dict[str, float],
    budget: float,
    grid: FitGrid,
    objective: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(chosen, frontier): every (gate scale a, bias b, head) of the grid fused and scored
    (`quality`) on `requests` (logit: float[n] the gate's logit per request); chosen = the
    best by `objective` (see the module docstring) whose warm quality stays within `budget`
    of `base`, or the new channel switched off (scale 0, bias -1e3, head 0) when none does."""
    keys = OBJECTIVES[objective]
    frontier: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    for a, b, head in itertools.product(grid.gate_scale, grid.gate_bias, grid.head):
        p = params.model_copy(update={"gate_scale": a, "gate_bias": b, "head": head})
        q = quality(_fuse(ranker, ch, p, logit).items, requests)
        row = {"gate_scale": a, "gate_bias": float(b), "head": head, **q}
        frontier.append(row)
        if within_budget(q, base, budget) and (
            chosen is None or tuple(q[k] for k in keys) > tuple(chosen[k] for k in keys)
        ):
            chosen = row
    if chosen is None:  # no mixture keeps warm quality: the new channel is switched off
        chosen = {"gate_scale": 0.0, "gate_bias": -1e3, "head": 0, **base}
    return chosen, frontier


def _fuse(ranker: FreshRanker, ch: Channels, params: FreshParams, logit: np.ndarray) -> Fused:
    return ranker.fuse(ch, 20, params, gate_logit=logit)
