"""`FreshRanker`: the GR model's constrained beam over the warm catalog fused with a
content-based new-item channel under a per-request freshness gate (docs/FRESH.md).

Per batch of requests: (1) the GR beam's top items and log-probs over the items the model
was trained on, re-ranked by content agreement (`fusion.warm_expert`); (2) every live new
item's content log-prob over the whole catalog (`ContentScorer`), history items excluded,
and the best `n_candidates` of them; (3) the gate's log-odds that the next item is new, from
`gate_features`; (4) `fusion.mix`; (5) the audience slot (`audience`): a new item whose
closest catalog items fill the recent history moves up to a top-10 position. A new item is
recommendable the moment it has a text embedding: nothing is trained or edited.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.recommend.fresh.audience import audience_radii, audience_share, promote
from freshrec.recommend.fresh.content import ContentScorer, normalise_rows, reference_items
from freshrec.recommend.fresh.fusion import Fused, log_sigmoid, mix, warm_expert
from freshrec.recommend.fresh.gate import gate_features
from freshrec.recommend.fresh.params import FreshParams


class BeamRanker(Protocol):
    """What the fused ranker needs from the GR side (e.g. `GRRanker` over the warm items)."""

    history_len: int | None

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: int | np.ndarray = 50,
        *,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]: ...


class ItemScorer(Protocol):
    """Scores candidate items for histories (`ContentScorer`, `dense.DenseScorer`)."""

    def scores(self, histories: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def log_probs(
        self, histories: np.ndarray, items: np.ndarray, reference: np.ndarray, n_total: int
    ) -> np.ndarray: ...


class Channels(NamedTuple):
    """Both channels of a batch of requests, before fusion (reused by calibration).

    beam_items int64[n, K] / beam_scores float32[n, K]: the warm expert (the GR beam, re-ranked
    by content when `warm_weight` > 0; log-scores);
    new_items int64[n, M] / new_log_probs float32[n, M]: the best new items by content
    log-prob over the whole catalog; features float64[n, F]: the gate's inputs;
    new_audience float32[n, M]: the share of the recent history in each new item's audience
    (`audience.audience_share`; None when the audience slot is off).
    """

    beam_items: np.ndarray
    beam_scores: np.ndarray
    new_items: np.ndarray
    new_log_probs: np.ndarray
    features: np.ndarray
    new_audience: np.ndarray | None = None


def exclude_items(scores: np.ndarray, items: np.ndarray, column: np.ndarray) -> None:
    """Set scores[r, column[item]] = -inf for every item of items int64[n, E] (-1 padded) of
    row r that has a column (column int64[n_items], -1 = none), in place."""
    h = np.clip(items, 0, None)
    r, c = np.nonzero((items >= 0) & (column[h] >= 0))
    scores[r, column[h[r, c]]] = -np.inf


class FreshRanker:
    """Ranks warm and new items in one list (evaluate's `Ranker` protocol, catalog "full").

    beam: the GR ranker over warm items; emb float32[n_items, d] text embeddings of every
    catalog item; is_new bool[n_items]: items the model was not trained on;
    recommendable bool[n_items] (default: all): items that may be returned.
    """

    catalog = "full"

    def __init__(
        self,
        beam: BeamRanker,
        emb: np.ndarray,
        is_new: np.ndarray,
        params: FreshParams,
        *,
        recommendable: np.ndarray | None = None,
        name: str = "FRESH",
        scorer: ItemScorer | None = None,
    ) -> None:
        self.beam = beam
        self.emb = normalise_rows(emb)
        self.is_new = np.asarray(is_new, dtype=bool)
        n = self.emb.shape[0]
        if self.is_new.shape != (n,):
            raise ConfigError(f"is_new has shape {self.is_new.shape}, expected ({n},)")
        self.recommendable = (
            np.ones(n, dtype=bool) if recommendable is None else np.asarray(recommendable, bool)
        )
        self.params = params
        self.name = name
        self.scorer = scorer
        self.history_len = beam.history_len
        self.new_items = np.flatnonzero(self.is_new & self.recommendable)
        self.column = np.full(n, -1, dtype=np.int64)
        self.column[self.new_items] = np.arange(len(self.new_items))
        self.reference = reference_items(np.flatnonzero(self.recommendable), params.max_reference)
        self.n_catalog = int(self.recommendable.sum())
        self._radii: dict[int, np.ndarray] = {}

    def audience_radii(self, k: int) -> np.ndarray:
        """float32[n_items]: the cosine of every live new item's k-th closest recommendable
        item (other items: inf), computed once per k against the `reference` items."""
        if k not in self._radii:
            radii = np.full(len(self.is_new), np.inf, dtype=np.float32)
            radii[self.new_items] = audience_radii(
                self.emb, self.new_items, self.reference, k, self.n_catalog
            )
            self._radii[k] = radii  # one assignment: safe to share between threads
        return self._radii[k]

    def content(self, params: FreshParams | None = None) -> ItemScorer:
        """The new-item scorer: `scorer` if one was given (e.g. a `DenseScorer`), else the
        content channel with `params.content`."""
        if self.scorer is not None:
            return self.scorer
        return ContentScorer(self.emb, (params or self.params).content)

    def new_log_probs(
        self,
        histories: np.ndarray,
        params: FreshParams | None = None,
        exclude_history: bool = True,
    ) -> np.ndarray:
        """float32[n, m] content log-probs of every live new item (history items -inf unless
        `exclude_history` is False)."""
        scorer = self.content(params)
        lp = scorer.log_probs(histories, self.new_items, self.reference, self.n_catalog)
        if exclude_history:
            exclude_items(lp, histories, self.column)
        return lp

    def channels(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        beam_k: int = 50,
        beam: tuple[np.ndarray, np.ndarray] | None = None,
        params: FreshParams | None = None,
        exclude_history: bool = True,
    ) -> Channels:
        """Both channels for histories int64[n, H] (right-aligned, -1 padded, most recent
        last). `beam`: precomputed (items, scores) of the GR ranker, else it is run with
        top_k=beam_k."""
        params = params or self.params
        if beam is None:
            beam = self.beam.rank_histories(
                histories, users, beam_k, exclude_history=exclude_history
            )
        b_items, b_scores = beam
        lp = self.new_log_probs(histories, params, exclude_history)
        m = min(params.n_candidates, lp.shape[1])
        if m:
            top = np.argpartition(-lp, m - 1, axis=1)[:, :m]
            order = np.argsort(-np.take_along_axis(lp, top, 1), axis=1, kind="stable")
            top = np.take_along_axis(top, order, 1)
            n_lp = np.take_along_axis(lp, top, 1)
            n_items = np.where(np.isfinite(n_lp), self.new_items[top], -1)
        else:
            n_lp = np.zeros((len(histories), 0), np.float32)
            n_items = np.zeros((len(histories), 0), np.int64)
        feats = gate_features(histories, self.is_new, b_scores, lp)  # the beam as generated
        if params.warm_weight > 0:
            content = self.warm_content(histories, b_items, params)
            b_items, b_scores = warm_expert(b_items, b_scores, content, params.warm_weight)
        aud = params.audience
        audience = None
        if aud.slot > 0:
            radii = self.audience_radii(aud.k)[np.clip(n_items, 0, None)]
            audience = audience_share(self.emb, histories, n_items, radii, aud.last)
        return Channels(b_items, b_scores, n_items, n_lp, feats, audience)

    def warm_content(
        self, histories: np.ndarray, items: np.ndarray, params: FreshParams | None = None
    ) -> np.ndarray:
        """float32[n, K] text-content log-scores c / tau of each request's beam items
        int64[n, K] (-inf at empty slots), for the warm expert."""
        content = (params or self.params).content
        scorer = ContentScorer(self.emb, content)
        return scorer.row_scores(histories, items) / np.float32(content.temperature)

    def fuse(
        self,
        ch: Channels,
        top_k: int,
        params: FreshParams | None = None,
        gate_logit: np.ndarray | None = None,
    ) -> Fused:
        """The fused top_k of `ch`: `fusion.mix` under the gate, then the audience slot.
        gate_logit float[n]: the gate's logit if already computed (calibration)."""
        params = params or self.params
        if gate_logit is None:
            gate_logit = params.gate.build().logit(ch.features)
        z = params.gate_scale * gate_logit + params.gate_bias
        out = mix(
            ch.beam_items, ch.beam_scores, ch.new_items, ch.new_log_probs, z, top_k, params.head
        )
        aud = params.audience
        if aud.slot == 0 or ch.new_audience is None or ch.new_items.shape[1] == 0:
            return out
        col = np.argmax(ch.new_audience, axis=1)  # ties: the better content log-prob
        rows = np.arange(len(col))
        share = ch.new_audience[rows, col]
        score = ch.new_log_probs[rows, col] + log_sigmoid(z)
        return promote(out, ch.new_items[rows, col], score, share >= aud.share, aud.slot)

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: int | np.ndarray = 50,
        *,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items int64[n, K], scores float32[n, K]) fused, K = max(top_k) (int or int[n])."""
        k = int(np.max(top_k)) if np.size(top_k) else 1
        if k < 1 or np.min(top_k) < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        ch = self.channels(histories, users, beam_k=max(k, 50), exclude_history=exclude_history)
        out = self.fuse(ch, k)
        return out.items, out.scores

    def rank_new(
        self,
        histories: np.ndarray,
        users: np.ndarray | None = None,
        top_k: int | np.ndarray = 50,
        *,
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The new-item channel alone: (items, content log-probs) of the best live new items."""
        top_k = int(np.max(top_k))
        lp = self.new_log_probs(histories, None, exclude_history)
        k = min(top_k, lp.shape[1])
        order = np.argsort(-lp, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(lp, order, 1)
        items = np.where(np.isfinite(scores), self.new_items[order], -1)
        pad = ((0, 0), (0, top_k - k))
        return (
            np.pad(items, pad, constant_values=-1),
            np.pad(scores, pad, constant_values=-np.inf).astype(np.float32),
        )

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        """int64[n, top_k] for evaluation requests (evaluate's `Ranker` protocol)."""
        hist = split.histories(requests, self.history_len or 20)
        return self.rank_histories(hist, np.asarray(requests.user), top_k)[0]
