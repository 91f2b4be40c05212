"""Keys: inputs of the FFN output projection at the decoder token that predicts SID token p.

Two ways to get them, both teacher-forced on the target SID (edit requests: the new item's SID;
preservation statistics and probes: the true training target):

- `iter_keys` / `capture_keys`: one `model.sid_log_probs` forward per batch with forward
  pre-hooks on the projections that read `decode_context.positions`; any set of (p, L) sites at
  once. Uses only the public model API and the exact trigger semantics of decoding.
- `TeacherForcedBatch.scorer(p)` -> `PositionScorer`: logits of SID position p for a fixed
  batch, with everything that does not depend on position p's decoder token computed once
  (tiger: the encoder; causal: the KV cache of the prompt and the SID prefix) by the model's
  `prompt_states` / `position_inputs` / `position_logits`. The target optimisation calls it
  ~30 times per batch; tests/edit check that it agrees with `sid_log_probs`.

Installed edit hooks fire in both (keys of later positions see earlier positions' edits, as at
decoding time); wrap calls in `trigger.suspend_edits` for base-model keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from freshrec.data.schema import Requests, Split
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import request_history_tokens
from freshrec.model.edit_hooks import Site


def request_tokens(
    model: GenerativeRecommender,
    split: Split,
    requests: Requests,
    sid_tokens: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(history tokens Long[n, T], target SID tokens Long[n, P]) of `requests` (history = the
    last `model.config.max_history` items, plus the user token if the vocab has buckets)."""
    hist = request_history_tokens(
        split, requests, sid_tokens, model.config.max_history, model.vocab
    )
    tgt = torch.from_numpy(np.asarray(sid_tokens, dtype=np.int64)[np.asarray(requests.target)])
    return hist, tgt


def iter_keys(
    model: GenerativeRecommender,
    history: torch.Tensor,
    sid_tokens: torch.Tensor,
    sites: Sequence[Site],
    batch_size: int = 512,
) -> Iterator[tuple[slice, dict[Site, torch.Tensor]]]:
    """Yield (rows, {(p, L): keys float32[b, d_in]}) batch by batch: the input of
    `ffn_out_projs()[L]` at the decoder token predicting SID token p, teacher-forced on
    `sid_tokens` Long[n, P] given `history` Long[n, T]."""
    projs = model.ffn_out_projs()
    by_layer: dict[int, list[int]] = {}
    for p, layer in sites:
        by_layer.setdefault(layer, []).append(p)
    store: dict[Site, torch.Tensor] = {}

    def pre_hook(layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            trig = model.decode_context.positions
            if trig is None:
                return
            x = args[0]
            for p in by_layer[layer]:
                store[(p, layer)] = x[trig == p].detach().float()

        return hook

    handles = [projs[layer].register_forward_pre_hook(pre_hook(layer)) for layer in by_layer]
    try:
        with torch.no_grad():
            for s in range(0, history.shape[0], batch_size):
                rows = slice(s, min(s + batch_size, history.shape[0]))
                store.clear()
                model.sid_log_probs(history[rows], sid_tokens[rows])
                b = rows.stop - rows.start
                out = {}
                for site in sites:
                    k = store[site]
                    if k.shape[0] != b:
                        raise RuntimeError(f"captured {k.shape[0]} keys for {b} requests at {site}")
                    out[site] = k
                yield rows, out
    finally:
        for h in handles:
            h.remove()


def capture_keys(
    model: GenerativeRecommender,
    history: torch.Tensor,
    sid_tokens: torch.Tensor,
    sites: Sequence[Site],
    batch_size: int = 512,
) -> dict[Site, torch.Tensor]:
    """{(p, L): keys float32[n, d_in]} for all n requests (see `iter_keys`)."""
    parts: dict[Site, list[torch.Tensor]] = {s: [] for s in sites}
    for _, keys in iter_keys(model, history, sid_tokens, sites, batch_size):
        for s, k in keys.items():
            parts[s].append(k.cpu())
    d_in = {layer: model.ffn_out_projs()[layer].in_features for _, layer in sites}
    return {s: torch.cat(v) if v else torch.zeros(0, d_in[s[1]]) for s, v in parts.items()}


class _RowSubsets:
    """Row subsets (dim 0) of a list of tensors for a shrinking set of active rows: a new subset
    is gathered from the previous one, and only when the rows change."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.full = tensors
        self.rows: torch.Tensor | None = None
        self.sub = tensors

    def get(self, rows: torch.Tensor) -> list[torch.Tensor]:
        n = self.full[0].shape[0]
        if (
            self.rows is None
            and rows.numel() == n
            and bool((rows == torch.arange(n, device=rows.device)).all())
        ):
            return self.full
        if self.rows is not None and rows.shape == self.rows.shape and torch.equal(rows, self.rows):
            return self.sub
        src, idx = self.full, rows
        if (
            self.rows is not None
            and bool((rows[1:] > rows[:-1]).all())
            and bool(torch.isin(rows, self.rows).all())
        ):
            src, idx = self.sub, torch.searchsorted(self.rows, rows)
        self.sub = [t.index_select(0, idx) for t in src]
        self.rows = rows.clone()
        return self.sub


class TeacherForcedBatch:
    """n edit requests prepared once for scoring any SID position (see `scorer`).

    history: Long[n, T] encoder/prompt tokens; sid_tokens: Long[n, P] target SID tokens.
    `model.prompt_states` (what no gated edit changes: tiger the encoder states and
    cross-attention K/V, causal the prompt's KV cache; make a new batch when ungated edits
    change them, `model.prompt_states_see_ffn_edits`) are computed once per distinct history
    (edit requests of different new items often share a context) and expanded to the n
    requests by `expand` when a position is scored."""

    def __init__(
        self, model: GenerativeRecommender, history: torch.Tensor, sid_tokens: torch.Tensor
    ) -> None:
        self.model = model
        dev = model.device
        history, self.sid = history.to(dev), sid_tokens.to(dev)
        self.n = history.shape[0]
        uniq, inv = torch.unique(history, dim=0, return_inverse=True)
        # inv: Long[n] row of each request's history among the distinct ones (None: all distinct)
        self.inv: torch.Tensor | None = inv if uniq.shape[0] < self.n else None
        history = uniq if self.inv is not None else history
        with torch.no_grad():
            self.states = model.prompt_states(history)

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """Per-distinct-history tensor [u, ...] -> per-request [n, ...]."""
        return t if self.inv is None else t.index_select(0, self.inv)

    @property
    def nbytes(self) -> int:
        """Bytes of the cached states."""
        return sum(t.numel() * t.element_size() for t in self.states)

    def scorer(self, position: int) -> PositionScorer:
        """A scorer of SID position `position` (prefix states computed now, with the edit
        hooks installed at this moment)."""
        return PositionScorer(self, position)


class PositionScorer:
    """Block logits float[b, sizes[p]] of SID position p for the requests of a
    `TeacherForcedBatch`, teacher-forced on the SID prefix, recomputing only what depends on
    position p's decoder token (`model.position_inputs` once, then `model.position_logits`
    per call: tiger runs the (p+1)-token decoder on the cached encoder states, causal only the
    token that predicts t_p). Forward hooks (edits, the target optimisation's delta) see
    decode position p exactly at the scored token; rows index the batch's requests (Long[b];
    pass them ascending -- e.g. from torch.nonzero -- so shrinking subsets are gathered
    cheaply)."""

    def __init__(self, batch: TeacherForcedBatch, position: int) -> None:
        self.batch = batch
        self.model = batch.model
        self.p = position
        self.n = batch.n
        self.block = self.model.vocab.block(position)
        states = [batch.expand(t) for t in batch.states]
        self._rows = _RowSubsets(self.model.position_inputs(states, batch.sid, position))

    def block_logits(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits float[b, sizes[p]] of the rows (all rows if None); differentiable w.r.t.
        anything a forward hook adds."""
        m = self.model
        if rows is None:
            rows = torch.arange(self.n, device=m.device)
        rows = rows.to(m.device)
        return m.position_logits(self._rows.get(rows), self.p)[:, self.block]
