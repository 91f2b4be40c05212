"""Keys: inputs of the FFN output projection at the decoder token that predicts SID token p.

Two ways to get them, both teacher-forced on the target SID (edit requests: the new item's SID;
preservation statistics and probes: the true training target):

- `iter_keys` / `capture_keys`: one `model.sid_log_probs` forward per batch with forward
  pre-hooks on the projections that read `decode_context.positions`; any set of (p, L) sites at
  once. Uses only the public model API and the exact trigger semantics of decoding.
- `TeacherForcedBatch.scorer(p)` -> `PositionScorer`: logits of SID position p for a fixed
  batch, with everything that does not depend on position p's decoder token computed once
  (tiger: the encoder; causal: the KV cache of the prompt and the SID prefix). The target
  optimisation calls it ~30 times per batch; it reaches into the tiger/causal wrappers (`t5`,
  `_prompt`, `_positions`, `_forward`), and tests/edit check that it agrees with
  `sid_log_probs`.

Installed edit hooks fire in both (keys of later positions see earlier positions' edits, as at
decoding time); wrap calls in `trigger.suspend_edits` for base-model keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from freshrec.data.schema import Requests, Split
from freshrec.edit.trigger import Site
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender, compact_left
from freshrec.model.batches import request_history_tokens
from freshrec.semid.vocab import BOS, PAD


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


def _filled_cache(config: object, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache whose layers hold `kv` as they are (no copy; the next forward appends)."""
    cache = DynamicCache(config=config)  # type: ignore[arg-type]
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache


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
    tiger: the encoder states and every decoder layer's cross-attention K/V (edits never touch
    them). causal: the KV cache of the prompt minus its last token (tokens with trigger -1,
    untouched by gated edits; make a new batch when ungated edits change). Both are computed
    once per distinct history (edit requests of different new items often share a context)
    and expanded to the n requests by `expand` when a position is scored."""

    def __init__(
        self, model: GenerativeRecommender, history: torch.Tensor, sid_tokens: torch.Tensor
    ) -> None:
        if model.arch not in ("tiger", "causal"):
            raise ConfigError(f"editing does not support arch {model.arch!r}")
        self.model = model
        dev = model.device
        history, self.sid = history.to(dev), sid_tokens.to(dev)
        self.n = history.shape[0]
        uniq, inv = torch.unique(history, dim=0, return_inverse=True)
        # inv: Long[n] row of each request's history among the distinct ones (None: all distinct)
        self.inv: torch.Tensor | None = inv if uniq.shape[0] < self.n else None
        history = uniq if self.inv is not None else history
        with torch.no_grad():
            if model.arch == "tiger":
                t5 = model.t5  # type: ignore[attr-defined]
                self.cfg = t5.config
                hist = compact_left(history)
                self.mask = hist != PAD
                with model.decoding(None):
                    self.enc = t5.encoder(
                        input_ids=hist, attention_mask=self.mask
                    ).last_hidden_state
                    cache = EncoderDecoderCache(
                        DynamicCache(config=self.cfg), DynamicCache(config=self.cfg)
                    )
                    t5(
                        encoder_outputs=(self.enc,),
                        attention_mask=self.mask,
                        decoder_input_ids=torch.full_like(hist[:, :1], BOS),
                        past_key_values=cache,
                        use_cache=True,
                    )
                self.kv = [(la.keys, la.values) for la in cache.cross_attention_cache.layers]
            else:
                prompt, pmask = model._prompt(history)  # type: ignore[attr-defined]
                self.prompt, self.pmask = prompt, pmask
                positions = model._positions(pmask)  # type: ignore[attr-defined]
                self.cfg = model.llama.config  # type: ignore[attr-defined]
                trig = torch.full_like(prompt[:, :-1], -1)
                with model.decoding(trig):
                    out = model._forward(  # type: ignore[attr-defined]
                        prompt[:, :-1],
                        pmask[:, :-1],
                        positions[:, :-1],
                        DynamicCache(config=self.cfg),
                        1,
                    )
                self.kv = [(la.keys, la.values) for la in out.past_key_values.layers]

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """Per-distinct-history tensor [u, ...] -> per-request [n, ...]."""
        return t if self.inv is None else t.index_select(0, self.inv)

    @property
    def nbytes(self) -> int:
        """Bytes of the cached states."""
        extra = self.enc.numel() * self.enc.element_size() if self.model.arch == "tiger" else 0
        return extra + sum(k.numel() * k.element_size() * 2 for k, _ in self.kv)

    def scorer(self, position: int) -> PositionScorer:
        """A scorer of SID position `position` (prefix states computed now, with the edit
        hooks installed at this moment)."""
        return PositionScorer(self, position)


class PositionScorer:
    """Block logits float[b, sizes[p]] of SID position p for the requests of a
    `TeacherForcedBatch`, teacher-forced on the SID prefix, recomputing only what depends on
    position p's decoder token: tiger runs the (p+1)-token decoder on the cached encoder states
    and cross-attention K/V; causal extends the prompt cache with [last prompt token, t_0 ..
    t_{p-2}] once and then runs only the token that predicts t_p. `block_logits(rows)` runs
    under `decode_context.positions`, so forward hooks (edits, the target optimisation's delta) see
    value p exactly at the scored token; rows index the batch's requests (Long[b]; pass them
    ascending -- e.g. from torch.nonzero -- so shrinking subsets are gathered cheaply)."""

    def __init__(self, batch: TeacherForcedBatch, position: int) -> None:
        self.batch = batch
        self.model = batch.model
        self.p = position
        self.n = batch.n
        self.block = self.model.vocab.block(position)
        if self.model.arch == "tiger":
            sid = batch.sid
            dec = torch.cat([torch.full_like(sid[:, :1], BOS), sid[:, :position]], dim=1)
            flat = [batch.expand(t) for kv in batch.kv for t in kv]
            self._rows = _RowSubsets(
                [batch.expand(batch.enc), batch.expand(batch.mask), dec, *flat]
            )
        else:
            self._init_causal()

    def _init_causal(self) -> None:
        b, m, p = self.batch, self.model, self.p
        T = b.prompt.shape[1]
        prompt, pmask = b.expand(b.prompt), b.expand(b.pmask)
        tokens = torch.cat([prompt, b.sid[:, :p]], dim=1)  # the last token predicts t_p
        mask = torch.cat([pmask, torch.ones_like(b.sid[:, :p], dtype=torch.bool)], dim=1)
        positions = m._positions(mask)  # type: ignore[attr-defined]
        kv = [(b.expand(k), b.expand(v)) for k, v in b.kv]
        if p > 0:  # run [last prompt token, t_0 .. t_{p-2}] (triggers 0 .. p-1) on the prompt cache
            cache = _filled_cache(b.cfg, kv)
            trig = torch.arange(p, device=tokens.device).expand(b.n, p)
            ext = slice(T - 1, T - 1 + p)
            with torch.no_grad(), m.decoding(trig):
                out = m._forward(  # type: ignore[attr-defined]
                    tokens[:, ext], mask[:, : T - 1 + p], positions[:, ext], cache, 1
                )
            kv = [(la.keys, la.values) for la in out.past_key_values.layers]
        flat = [t for pair in kv for t in pair]
        self._rows = _RowSubsets([tokens[:, -1:], mask, positions[:, -1:], *flat])

    def block_logits(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits float[b, sizes[p]] of the rows (all rows if None); differentiable w.r.t.
        anything a forward hook adds."""
        m = self.model
        if rows is None:
            rows = torch.arange(self.n, device=m.device)
        rows = rows.to(m.device)
        b = rows.shape[0]
        if m.arch == "tiger":
            enc, mask, dec, *flat = self._rows.get(rows)
            cross = _filled_cache(self.batch.cfg, list(zip(flat[::2], flat[1::2], strict=True)))
            cache = EncoderDecoderCache(DynamicCache(config=self.batch.cfg), cross)
            trig = torch.arange(self.p + 1, device=rows.device).expand(b, self.p + 1)
            with m.decoding(trig):
                out = m.t5(  # type: ignore[attr-defined]
                    encoder_outputs=(enc,),
                    attention_mask=mask,
                    decoder_input_ids=dec,
                    past_key_values=cache,
                    use_cache=True,
                )
            return out.logits[:, -1, self.block]
        last, mask, pos, *flat = self._rows.get(rows)
        cache = _filled_cache(self.batch.cfg, list(zip(flat[::2], flat[1::2], strict=True)))
        trig = torch.full((b, 1), self.p, dtype=torch.long, device=rows.device)
        with m.decoding(trig):
            out = m._forward(last, mask, pos, cache, 1)  # type: ignore[attr-defined]
        return out.logits[:, -1, self.block]
