"""`SpecRanker`: speculative inductive recommendation (SpecGR, Ding et al., AAAI 2026).

Per batch of requests (all steps batched, loops only over the <= sid_len rounds):

1. Draft: the drafter scores every item; history items, items without a SID and items already
   drafted are masked; the top-δ (`n_drafts`) are this round's drafts, in drafter order.
2. Verify: each draft's score is the GR model's mean log-likelihood of its SID tokens
   (`verify.score_lengths`: new items skip the collision digit); accept when score >= gamma.
3. Guided re-drafting: between rounds the constrained beam search advances one SID position
   (`verify.BeamStepper`); from round `guide_from` on (prefix length r = round index), drafts
   must have their length-r SID prefix among the request's current beams.
4. Adaptive exit: a request stops once `top_k` drafts are accepted (its beams are dropped);
   after sid_len rounds the beam search is complete and the remaining slots are filled with
   its results (duplicates and history items excluded).

Final order ("score", as the SpecGR code): the first `top_k` accepted drafts plus the fill,
sorted by their mean log-likelihood (beam items: beam score / sid_len); "accept": accepted
drafts in acceptance order (round, then drafter rank), then the fill in beam order.

Simplifications vs the paper's code (documented in docs/SPEC.md): re-drafting is a hard
restriction to the beams' prefixes (the code's `torch_in` mask), the beam search is freshrec's
batched trie-constrained one (KV cache, exclusion of history items at the last level), and the
fill takes beam results only (the code also ranks rejected drafts into the fill), so gamma =
+inf reproduces plain beam search exactly.

A run with no early exit (`trace`) holds everything needed to finalize it at any gamma: the
drafts of round r do not depend on gamma (only on the beams and earlier drafts), so
`freshrec.evaluate.spec_tuning.tune_gamma` runs the model once and sweeps gamma for free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens
from freshrec.recommend.beam_search import NEG_INF
from freshrec.recommend.gr import drop_items
from freshrec.recommend.spec.drafters import Drafter
from freshrec.recommend.spec.verify import (
    BeamStepper,
    LengthMode,
    VerifyMethod,
    item_prefix_nodes,
    mean_log_probs,
    prefix_mask,
    score_lengths,
    verify_token_log_probs,
)
from freshrec.semid.table import SidTable
from freshrec.semid.trie import SidTrie

DEFAULT_GAMMA = -2.5
"""Mean log-likelihood per SID token. The paper's thresholds are about -1.4 to -1.8 for its
models; -2.5 is what `evaluate.spec_tuning.tune_gamma` picked (overall R@20, text drafter) for
tiger_cpu on MovieLens-small with the default 3x64 SIDs (docs/SPEC.md). Tune on validation for
any other model or tokenizer."""

Order = Literal["score", "accept"]


@dataclass
class SpecTrace:
    """What a speculative run computed for n requests (K = top_k, M = rounds * n_drafts).

    drafts Long[n, M]: drafted items, round-major and in drafter order within a round (-1 =
    not drafted); verify float[n, M]: their verification scores (-inf where not drafted);
    token_lp float[n, M, P]: the per-token log-probs behind them (0 where not drafted), so a
    full trace can be re-scored with other score lengths;
    beam_items Long[n, K] / beam_scores float[n, K]: beam search results with mean per-token
    log-prob (-1 / -inf where the request exited before the beam search finished).
    exit_gamma: the gamma early exit used (None: every round ran, any gamma can finalize).
    """

    drafts: torch.Tensor
    verify: torch.Tensor
    token_lp: torch.Tensor
    beam_items: torch.Tensor
    beam_scores: torch.Tensor
    rounds: int
    n_drafts: int
    top_k: int
    exit_gamma: float | None = None


@dataclass
class SpecOutput:
    """items Long[n, K] (-1 = empty slot), scores float[n, K], n_accepted Long[n] accepted
    drafts among the K, exit_round Long[n] rounds run (rounds = the beam search finished)."""

    items: torch.Tensor
    scores: torch.Tensor
    n_accepted: torch.Tensor
    exit_round: torch.Tensor


def finalize(
    trace: SpecTrace, gamma: float, order: Order = "score", lengths: torch.Tensor | None = None
) -> SpecOutput:
    """Accept drafts with verify >= gamma (first K in acceptance order), fill from the beam
    results, order the K slots. Vectorised over requests. lengths: Long[n_items] score
    lengths to re-score the drafts with (`score_lengths`; default: the trace's scores)."""
    early = trace.exit_gamma is not None
    if early and (gamma != trace.exit_gamma or lengths is not None):
        raise ConfigError(
            f"this trace exited early at gamma {trace.exit_gamma}; it can only be finalized "
            "at that gamma with its own scores (run `trace` without exit_gamma)"
        )
    if order not in ("score", "accept"):
        raise ConfigError(f"order must be 'score' or 'accept', got {order!r}")
    D, V, K = trace.drafts, trace.verify, trace.top_k
    n = D.shape[0]
    if lengths is not None:
        V = mean_log_probs(trace.token_lp, torch.where(D >= 0, lengths[D.clamp(min=0)], 0))
    acc = (D >= 0) & (gamma <= V)
    keep = acc & (acc.cumsum(1) <= K)
    items = torch.full((n, K + 1), -1, dtype=torch.long)
    scores = torch.full((n, K + 1), NEG_INF)
    col = torch.where(keep, acc.cumsum(1) - 1, K)  # column K collects everything dropped
    items.scatter_(1, col, torch.where(keep, D, -1))
    scores.scatter_(1, col, torch.where(keep, V, NEG_INF))
    n_acc = keep.sum(1)
    # fill the remaining slots with beam results not already accepted
    bi = trace.beam_items
    fill = (bi >= 0) & ~(bi[:, :, None] == items[:, None, :K]).any(-1)
    pos = n_acc[:, None] + fill.cumsum(1) - 1
    take = fill & (pos < K)
    col = torch.where(take, pos, K)
    items.scatter_(1, col, torch.where(take, bi, -1))
    scores.scatter_(1, col, torch.where(take, trace.beam_scores, NEG_INF))
    items, scores = items[:, :K], scores[:, :K]
    items = torch.where(torch.isfinite(scores), items, -1)
    if order == "score":
        scores, idx = torch.sort(scores, dim=1, descending=True, stable=True)
        items = items.gather(1, idx)
    per_round = acc.view(n, trace.rounds, trace.n_drafts).sum(-1).cumsum(1) >= K
    exit_round = torch.where(
        per_round.any(1), per_round.int().argmax(1) + 1, torch.tensor(trace.rounds)
    )
    return SpecOutput(items, scores, n_acc, exit_round)


@contextlib.contextmanager
def _eval_mode(model: GenerativeRecommender) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


class SpecRanker:
    """Speculative ranker over the full catalog (Ranker protocol): drafter proposals verified
    by a GR model, guided by and filled from its constrained beam search (module doc).

    model: the verifier and beam searcher (pass a model with an `EditStack` applied for the
    hybrid). table: SID table of the catalog, new items assigned. trie: the catalog to decode
    over (default: every item with a SID). gamma: acceptance threshold on the mean per-token
    log-likelihood. n_drafts: δ, drafts per round. guide_from: first round whose drafts are
    restricted to the beams' prefixes (SpecGR's code: 2). lengths: `score_lengths` mode.
    is_new: bool[n_items] (default: `split.is_new` at `rank`). verify: "cached" | "teacher".
    batch_size: requests per batch; verify_chunk: (request, draft) pairs per forward.
    prompt_new_items: False = the GR model (verifier, beams, self-drafter) reads only the items
    flagged not new (`drop_items`, as `GRRanker`); the drafter's history and the exclusion
    still cover every history item.
    """

    catalog = "full"

    def __init__(
        self,
        model: GenerativeRecommender,
        drafter: Drafter,
        table: SidTable,
        trie: SidTrie | None = None,
        *,
        gamma: float = DEFAULT_GAMMA,
        n_drafts: int = 50,
        beam_size: int = 50,
        guide_from: int = 2,
        order: Order = "score",
        lengths: LengthMode = "codes",
        is_new: np.ndarray | None = None,
        verify: VerifyMethod = "cached",
        batch_size: int = 64,
        verify_chunk: int = 2048,
        prompt_new_items: bool = True,
        name: str | None = None,
    ) -> None:
        if n_drafts < 1 or beam_size < 1 or batch_size < 1:
            raise ConfigError("n_drafts, beam_size and batch_size must be >= 1")
        if order not in ("score", "accept"):
            raise ConfigError(f"order must be 'score' or 'accept', got {order!r}")
        self.model, self.drafter = model, drafter
        vocab = model.vocab
        self.sids = table.sids
        self.sid_tokens = torch.from_numpy(table.tokens(vocab))
        self.trie = trie if trie is not None else SidTrie.from_table(table.sids, vocab)
        n_items = table.n_items
        self.in_trie = torch.zeros(n_items, dtype=torch.bool)
        self.in_trie[torch.from_numpy(self.trie.items())] = True
        self.prefix_nodes = item_prefix_nodes(self.trie, table.sids)
        self.gamma, self.n_drafts, self.beam_size = float(gamma), n_drafts, beam_size
        self.guide_from, self.order, self.lengths_mode = max(1, guide_from), order, lengths
        self.is_new = None if is_new is None else np.asarray(is_new, dtype=bool)
        self.verify, self.batch_size, self.verify_chunk = verify, batch_size, verify_chunk
        self.prompt_new_items = prompt_new_items
        self.name = name or f"SpecGR ({drafter.name} drafter)"
        self.history_len: int | None = model.config.max_history
        self.last_stats: dict[str, float] = {}
        self._lengths: dict[tuple[str, bytes], torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def lengths(
        self, is_new: np.ndarray | None = None, mode: LengthMode | None = None
    ) -> torch.Tensor:
        """Long[n_items] SID tokens the verifier averages per item (`score_lengths` with
        `mode`, default `self.lengths_mode`)."""
        mask = self.is_new if is_new is None else np.asarray(is_new, dtype=bool)
        if mask is None:
            raise ConfigError("SpecRanker needs is_new (constructor or rank argument)")
        mode = mode or self.lengths_mode
        key = (mode, np.packbits(mask).tobytes())
        if key not in self._lengths:
            self._lengths[key] = score_lengths(self.sids, mask, mode)
        return self._lengths[key]

    def _draft_scores(self, hist: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """float[b, n_items] drafter scores with history items and items off the trie -inf."""
        d = self.drafter.score(hist, tok).float().cpu().clone()
        if d.shape[1] != self.in_trie.shape[0]:
            raise ConfigError(f"drafter scores {d.shape[1]} items, catalog has {len(self.in_trie)}")
        d.masked_fill_(~self.in_trie, NEG_INF)
        rows, cols = torch.nonzero(hist >= 0, as_tuple=True)
        d[rows, hist[rows, cols]] = NEG_INF
        return d

    def _batch(
        self,
        hist: np.ndarray,
        prompt: np.ndarray,
        users: np.ndarray,
        top_k: int,
        lengths: torch.Tensor,
        exit_gamma: float | None,
    ) -> SpecTrace:
        """One batch: drafting rounds, verification, beam steps (see module doc). hist: the
        drafter's histories and the exclusion set; prompt: what the GR model reads."""
        model, vocab = self.model, self.model.vocab
        P = vocab.sid_len
        b = hist.shape[0]
        hist_t = torch.from_numpy(hist)
        tok = history_tokens(prompt, self.sid_tokens.numpy(), users, vocab)
        d = self._draft_scores(hist_t, tok)
        C = min(self.n_drafts, d.shape[1])
        drafts = torch.full((b, P * C), -1, dtype=torch.long)
        ver = torch.full((b, P * C), NEG_INF)
        token_lp = torch.zeros((b, P * C, P))
        beam_items = torch.full((b, top_k), -1, dtype=torch.long)
        beam_scores = torch.full((b, top_k), NEG_INF)
        n_acc = torch.zeros(b, dtype=torch.long)
        active = torch.arange(b)
        stepper: BeamStepper | None = None
        for r in range(P):
            da = d[active]
            if stepper is not None and r >= self.guide_from:
                n_nodes = self.trie.children[r].shape[0]
                allowed = prefix_mask(self.prefix_nodes[r], stepper.prefix_nodes(), n_nodes)
                da = da.masked_fill(~allowed, NEG_INF)
            top, cand = torch.topk(da, C, dim=1)
            valid = torch.isfinite(top)
            cand = torch.where(valid, cand, -1)
            rows = active[:, None].expand_as(cand)
            d[rows[valid], cand[valid]] = NEG_INF  # never drafted twice
            safe = cand.clamp(min=0)
            lens = torch.where(valid, lengths[safe], 0)
            lp = verify_token_log_probs(
                model,
                tok[active],
                self.sid_tokens[safe],
                valid,
                method=self.verify,
                chunk=self.verify_chunk,
            )
            v = mean_log_probs(lp, lens)
            drafts[active, r * C : (r + 1) * C] = cand
            ver[active, r * C : (r + 1) * C] = v
            token_lp[active, r * C : (r + 1) * C] = lp
            still = torch.ones(len(active), dtype=torch.bool)
            if exit_gamma is not None:
                n_acc[active] += (valid & (v >= exit_gamma)).sum(1)
                still = n_acc[active] < top_k
            active = active[still]
            if len(active) == 0:
                break
            if stepper is None:
                stepper = BeamStepper(
                    model, tok[active], self.trie, self.beam_size, top_k, hist_t[active]
                )
            else:
                stepper.keep(still)
            stepper.step()
        if stepper is not None and len(active):
            while not stepper.done:
                stepper.step()
            res = stepper.result()
            beam_items[active] = res.items.cpu()
            beam_scores[active] = res.scores.cpu() / P
        return SpecTrace(drafts, ver, token_lp, beam_items, beam_scores, P, C, top_k, exit_gamma)

    # ------------------------------------------------------------------ API
    def trace(
        self,
        histories: np.ndarray,
        users: np.ndarray,
        top_k: int = 50,
        *,
        is_new: np.ndarray | None = None,
        exit_gamma: float | None = None,
    ) -> SpecTrace:
        """Run drafting/verification/beam search for item histories int64[n, H] (-1 padded,
        right-aligned; also the exclusion set) of users int[n]. exit_gamma=None: no early
        exit, so `finalize` works at any gamma."""
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {top_k}")
        histories = np.asarray(histories, dtype=np.int64)
        users = np.asarray(users)
        lengths = self.lengths(is_new)
        prompts = histories
        if not self.prompt_new_items:
            prompts = drop_items(histories, self.is_new if is_new is None else is_new)
        parts = []
        with _eval_mode(self.model):
            for s in range(0, histories.shape[0], self.batch_size):
                sl = slice(s, s + self.batch_size)
                parts.append(
                    self._batch(histories[sl], prompts[sl], users[sl], top_k, lengths, exit_gamma)
                )
        P = self.model.vocab.sid_len
        C = parts[0].n_drafts if parts else min(self.n_drafts, len(self.in_trie))

        def cat(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            if not parts:
                return torch.zeros((0, *shape), dtype=dtype)
            return torch.cat([getattr(p, name) for p in parts])

        return SpecTrace(
            cat("drafts", (P * C,), torch.long),
            cat("verify", (P * C,), torch.float),
            cat("token_lp", (P * C, P), torch.float),
            cat("beam_items", (top_k,), torch.long),
            cat("beam_scores", (top_k,), torch.float),
            P,
            C,
            top_k,
            exit_gamma,
        )

    def rank_histories(
        self,
        histories: np.ndarray,
        users: np.ndarray,
        top_k: int = 50,
        *,
        is_new: np.ndarray | None = None,
        gamma: float | None = None,
    ) -> SpecOutput:
        """Speculative top-k (with early exit) for item histories int64[n, H] of users int[n];
        history items are never returned. Sets `last_stats`."""
        g = self.gamma if gamma is None else float(gamma)
        out = finalize(
            self.trace(histories, users, top_k, is_new=is_new, exit_gamma=g), g, self.order
        )
        self.last_stats = spec_stats(out, self.is_new if is_new is None else is_new)
        return out

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        hist = split.histories(requests, self.model.config.max_history)
        is_new = self.is_new if self.is_new is not None else split.is_new
        out = self.rank_histories(hist, np.asarray(requests.user), top_k, is_new=is_new)
        return out.items.numpy()

    def trace_requests(self, split: Split, requests: Requests, top_k: int = 50) -> SpecTrace:
        """`trace` (no early exit) of evaluation requests."""
        hist = split.histories(requests, self.model.config.max_history)
        is_new = self.is_new if self.is_new is not None else split.is_new
        return self.trace(hist, np.asarray(requests.user), top_k, is_new=is_new)


def spec_stats(out: SpecOutput, is_new: np.ndarray | None) -> dict[str, float]:
    """Mean accepted drafts per request, mean rounds run, share of requests that needed the
    full beam search, and (with is_new) the share of new items among the top-K slots."""
    stats = {
        "accepted_mean": float(out.n_accepted.float().mean()) if len(out.n_accepted) else 0.0,
        "exit_round_mean": float(out.exit_round.float().mean()) if len(out.exit_round) else 0.0,
    }
    if is_new is not None and out.items.numel():
        new = torch.from_numpy(np.asarray(is_new, dtype=bool))
        ok = out.items >= 0
        stats["new_share"] = float((new[out.items.clamp(min=0)] & ok).sum() / ok.sum().clamp(min=1))
    return stats
