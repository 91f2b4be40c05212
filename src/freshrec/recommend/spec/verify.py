"""Verification and guided re-drafting: the GR model's side of speculative recommendation.

- `verify_scores`: mean block-restricted log-likelihood of each drafted item's first
  `length` SID tokens under the GR model, batched over (request, draft) pairs. The default
  "cached" path runs the encoder/prompt once per request, expands the KV cache to the drafts
  and teacher-forces the SID tokens with `decode_step` -- the beam search's own computation,
  so a draft scored over all positions gets exactly its beam-search score / sid_len; "teacher"
  uses `sid_log_probs` (full recompute per pair).
- `score_lengths`: how many leading SID tokens are averaged per item (new items skip the
  collision digit, whose value the model never saw for them).
- `BeamStepper`: `beam_search` one SID position at a time, with requests that stop early
  dropped between steps, so the current beams' prefixes can guide the drafter.
- `item_prefix_nodes` / `prefix_mask`: which items' SID prefixes are among the beams'.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.recommend.beam_search import NEG_INF, BeamResult, is_excluded, sorted_exclusions
from freshrec.semid.trie import SidTrie

VerifyMethod = Literal["cached", "teacher"]
LengthMode = Literal["codes", "full", "in_sample", "all_codes"]


# --------------------------------------------------------------------------- verification
@torch.no_grad()
def sid_token_log_probs(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    cand_tokens: torch.Tensor,
    method: VerifyMethod = "cached",
) -> torch.Tensor:
    """float[B, C, P] block-restricted log-prob of every SID token of C candidates per request.

    history_tokens Long[B, T]; cand_tokens Long[B, C, P] token ids (all valid).
    """
    B, C, P = cand_tokens.shape
    device = model.device
    hist = history_tokens.to(device)
    cand = cand_tokens.to(device).reshape(B * C, P)
    if method == "teacher":
        return model.sid_log_probs(hist.repeat_interleave(C, dim=0), cand).view(B, C, P)
    if method != "cached":
        raise ConfigError(f"verify method must be 'cached' or 'teacher', got {method!r}")
    vocab = model.vocab
    state = model.decode_start(hist)
    model.reorder(state, torch.arange(B, device=device).repeat_interleave(C))
    out = torch.empty((B * C, P), device=device)
    prefixes = vocab.prefix_keys(vocab.from_tokens(cand))
    prev: torch.Tensor | None = None
    for p in range(P):  # sid_len steps, each batched over every (request, candidate) pair
        logits = model.decode_step(state, prev, p, prefixes[:, p])[:, vocab.block(p)]
        logp = torch.log_softmax(logits.float(), dim=-1)
        out[:, p] = logp.gather(1, (cand[:, p] - vocab.offsets[p]).unsqueeze(1)).squeeze(1)
        prev = cand[:, p]
    return out.view(B, C, P)


def mean_log_probs(token_lp: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """float[...]: mean of the first `lengths[...]` entries of token_lp float[..., P]; -inf
    where lengths == 0."""
    P = token_lp.shape[-1]
    keep = torch.arange(P, device=token_lp.device) < lengths.unsqueeze(-1)
    mean = (token_lp * keep).sum(-1) / lengths.clamp(min=1)
    return torch.where(lengths > 0, mean, NEG_INF)


@torch.no_grad()
def verify_token_log_probs(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    cand_tokens: torch.Tensor,
    valid: torch.Tensor,
    *,
    method: VerifyMethod = "cached",
    chunk: int = 2048,
) -> torch.Tensor:
    """float[B, C, P] per-token log-probs of C candidates per request, computed in chunks of
    at most `chunk` (request, candidate) pairs (bounds the expanded KV cache); 0 where
    Bool[B, C] valid is False (those rows of cand_tokens Long[B, C, P] may be -1)."""
    B, C, P = cand_tokens.shape
    out = torch.zeros((B, C, P))
    if B == 0 or C == 0:
        return out
    valid = valid.cpu()
    offsets = torch.as_tensor(model.vocab.offsets)
    # invalid rows get a harmless valid SID (each position's first token); zeroed below
    safe = torch.where(valid.unsqueeze(-1), cand_tokens.cpu(), offsets)
    per = max(1, chunk // C)
    for s in range(0, B, per):
        lp = sid_token_log_probs(model, history_tokens[s : s + per], safe[s : s + per], method)
        out[s : s + per] = lp.cpu()
    return out * valid.unsqueeze(-1)


def verify_scores(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    cand_tokens: torch.Tensor,
    lengths: torch.Tensor,
    *,
    method: VerifyMethod = "cached",
    chunk: int = 2048,
) -> torch.Tensor:
    """float[B, C]: mean log-prob of the first `lengths[b, c]` SID tokens of candidate c of
    request b (`-inf` where lengths == 0, e.g. an invalid draft).

    history_tokens Long[B, T]; cand_tokens Long[B, C, P] token ids (-1 rows allowed where
    lengths == 0); lengths Long[B, C] in 0..P. `chunk` bounds the (request, candidate) pairs
    per forward (memory of the expanded KV cache).
    """
    lengths = lengths.cpu().long()
    lp = verify_token_log_probs(
        model, history_tokens, cand_tokens, lengths > 0, method=method, chunk=chunk
    )
    return mean_log_probs(lp, lengths)


def score_lengths(
    sids: np.ndarray,
    is_new: np.ndarray,
    mode: LengthMode = "codes",
    *,
    min_len: int = 2,
) -> torch.Tensor:
    """Long[n_items]: SID tokens averaged by the verifier for each item of a SID table
    int64[n_items, P] (0 for items without a SID).

    "full": all P tokens for every item. "codes" (default): warm items P, new items P-1 (the
    collision digit of a new item was never a training target). "all_codes": every item P-1
    (warm drafts get no bonus from their usually near-certain collision digit). "in_sample"
    (the SpecGR code): new items average only their longest SID prefix shared with some warm
    item, at least `min_len` tokens.
    """
    sids = np.asarray(sids, dtype=np.int64)
    n, P = sids.shape
    is_new = np.asarray(is_new, dtype=bool)
    if is_new.shape != (n,):
        raise ConfigError(f"is_new must be bool[{n}], got shape {is_new.shape}")
    assigned = (sids >= 0).all(axis=1)
    out = np.where(assigned, P, 0).astype(np.int64)
    if mode == "full":
        return torch.from_numpy(out)
    if mode in ("codes", "all_codes"):
        out[assigned & (is_new | (mode == "all_codes"))] = P - 1
        return torch.from_numpy(out)
    if mode != "in_sample":
        raise ConfigError(
            f"length mode must be 'codes', 'all_codes', 'full' or 'in_sample', got {mode!r}"
        )
    key = np.zeros(n, dtype=np.int64)  # dense id of each item's prefix so far
    warm_rows = assigned & ~is_new
    shared = np.zeros(n, dtype=np.int64)  # longest prefix present among warm items
    alive = assigned.copy()
    for p in range(P):
        pairs = np.stack([key, sids[:, p]], axis=1)
        key = np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
        alive &= np.isin(key, key[warm_rows])
        shared[alive] = p + 1
    new = assigned & is_new
    out[new] = np.clip(shared[new], min(min_len, P), P)
    return torch.from_numpy(out)


# --------------------------------------------------------------------------- guided drafting
def item_prefix_nodes(trie: SidTrie, sids: np.ndarray) -> list[torch.Tensor]:
    """[Long[n_items]] * P: the trie node (depth p) of each item's length-p SID prefix, for
    p = 0..P-1 (depth 0 = the root, 0); -1 where the prefix is not in the trie."""
    sids_t = torch.as_tensor(np.asarray(sids, dtype=np.int64))
    P = sids_t.shape[1]
    node = torch.where((sids_t >= 0).all(dim=1), 0, -1)
    out = [node]
    for p in range(P - 1):
        table = trie.children[p].cpu()
        if table.shape[0] == 0:
            node = torch.full_like(node, -1)
        else:
            child = table[node.clamp(min=0), sids_t[:, p].clamp(0, table.shape[1] - 1)]
            node = torch.where(node >= 0, child, -1)
        out.append(node)
    return out


def prefix_mask(item_nodes: torch.Tensor, beam_nodes: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Bool[B, n_items]: True where the item's prefix node (item_nodes Long[n_items], -1 =
    none) is one of the request's beam nodes (beam_nodes Long[B, K], -1 = dead beam).
    n_nodes = nodes at that trie depth."""
    B = beam_nodes.shape[0]
    beams = torch.where(beam_nodes >= 0, beam_nodes, n_nodes).cpu()
    hit = torch.zeros((B, n_nodes + 1), dtype=torch.bool)
    hit.scatter_(1, beams, True)
    hit[:, n_nodes] = False
    cols = torch.where(item_nodes >= 0, item_nodes, n_nodes)
    return hit[:, cols]


# --------------------------------------------------------------------------- beams
class BeamStepper:
    """`beam_search` (same scores, same tie-breaking, same result) advanced one SID position
    per `step()`; `keep(mask)` drops requests between steps (their beams and KV cache rows).

    After p steps `prefix_nodes()` gives each kept request's beams as trie nodes at depth p;
    after sid_len steps `result()` is the BeamResult of the kept requests, equal to
    `beam_search(model, history_tokens[rows], trie, beam_size, top_k, exclude[rows])`.
    `rows` Long[B'] maps current rows to the requests given at construction.
    """

    def __init__(
        self,
        model: GenerativeRecommender,
        history_tokens: torch.Tensor,
        trie: SidTrie,
        beam_size: int,
        top_k: int,
        exclude: torch.Tensor | None = None,
    ) -> None:
        if beam_size < 1 or top_k < 1:
            raise ConfigError(f"beam_size and top_k must be >= 1, got {beam_size}, {top_k}")
        if trie.vocab.sizes != model.vocab.sizes:
            raise ConfigError(f"trie vocab {trie.vocab} does not match model vocab {model.vocab}")
        self.model, self.beam_size, self.top_k = model, beam_size, top_k
        device = model.device
        history_tokens = history_tokens.to(device)
        B = history_tokens.shape[0]
        self.children = [c.to(device) for c in trie.children]
        self.excl = sorted_exclusions(exclude, B, device)  # Long[B, E], sorted per row
        self.rows = torch.arange(B, device=device)
        self.state = model.decode_start(history_tokens) if B else {}
        self.node = torch.zeros((B, 1), dtype=torch.long, device=device)
        self.scores = torch.zeros((B, 1), device=device)
        self.codes = torch.zeros((B, 1, 0), dtype=torch.long, device=device)
        self.prev: torch.Tensor | None = None
        self.p = 0

    @property
    def done(self) -> bool:
        return self.p == self.model.vocab.sid_len

    def prefix_nodes(self) -> torch.Tensor:
        """Long[B', K] trie nodes at depth p of the current beams (-1 for dead beams)."""
        return torch.where(torch.isfinite(self.scores), self.node, -1)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the current rows where Bool[B'] mask is True."""
        mask = mask.to(self.rows.device)
        if bool(mask.all()):
            return
        sel = torch.nonzero(mask).squeeze(1)
        B, K = self.node.shape
        self.rows, self.node, self.scores, self.codes = (
            t[sel] for t in (self.rows, self.node, self.scores, self.codes)
        )
        if self.excl is not None:
            self.excl = self.excl[sel]
        if self.prev is not None:
            self.prev = self.prev.view(B, K)[sel].reshape(-1)
        if len(sel):
            index = (sel[:, None] * K + torch.arange(K, device=sel.device)).reshape(-1)
            self.model.reorder(self.state, index)
        else:
            self.state = {}

    def step(self) -> None:
        """Advance every kept request's beams by one SID position (as in `beam_search`)."""
        model, vocab, p = self.model, self.model.vocab, self.p
        P = vocab.sid_len
        if p >= P:
            raise ConfigError("the beam search is already complete")
        B, K = self.node.shape
        self.p += 1
        if B == 0:
            self.codes = self.codes.new_zeros((0, K, p + 1))
            return
        size = vocab.sizes[p]
        prefixes = vocab.prefix_key(self.codes).view(-1)
        logits = model.decode_step(self.state, self.prev, p, prefixes)[:, vocab.block(p)]
        logp = torch.log_softmax(logits.float(), dim=-1).view(B, K, size)
        child = self.children[p][self.node]
        valid = child >= 0
        if p == P - 1 and self.excl is not None:
            valid &= ~is_excluded(child, self.excl)
        cand = torch.where(valid, self.scores[:, :, None] + logp, NEG_INF).view(B, K * size)
        k = min(self.top_k if p == P - 1 else self.beam_size, K * size)
        self.scores, flat = torch.topk(cand, k, dim=1)
        beam, code = flat // size, flat % size
        node = child.view(B, K * size).gather(1, flat)
        self.codes = torch.cat(
            [self.codes.gather(1, beam[:, :, None].expand(B, k, p)), code[:, :, None]], 2
        )
        if p < P - 1:
            node = torch.where(torch.isfinite(self.scores), node, 0)
            rows = torch.arange(B, device=node.device)[:, None]
            model.reorder(self.state, (rows * K + beam).view(-1))
            self.prev = (code + vocab.offsets[p]).view(-1)
        self.node = node

    def result(self) -> BeamResult:
        """BeamResult of the kept requests (requires all sid_len steps)."""
        if not self.done:
            raise ConfigError(f"beam search at step {self.p} of {self.model.vocab.sid_len}")
        B, P, top_k = self.node.shape[0], self.model.vocab.sid_len, self.top_k
        ok = torch.isfinite(self.scores)
        items = torch.where(ok, self.node, -1)
        scores = self.scores
        sids = torch.where(ok[:, :, None], self.codes, -1)
        if items.shape[1] < top_k:
            pad = top_k - items.shape[1]
            items = torch.cat([items, items.new_full((B, pad), -1)], 1)
            scores = torch.cat([scores, scores.new_full((B, pad), NEG_INF)], 1)
            sids = torch.cat([sids, sids.new_full((B, pad, P), -1)], 1)
        return BeamResult(items, scores, sids)
