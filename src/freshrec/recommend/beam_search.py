"""Trie-constrained beam search over semantic IDs, batched over requests and beams.

At step p the model's logits are sliced to `vocab.block(p)` and log-softmaxed (the same
normalisation as `sid_log_probs`), invalid children (`trie.children[p][node] < 0`) are masked,
scores are summed along the beam and the best (beam, code) pairs over all beams of a request are
kept with one `torch.topk`; `model.reorder` then gathers the KV cache. The only Python loop is
over the sid_len positions. At the last level the child value is the item, so excluded items
(e.g. the history) are masked there and the top_k results are read off directly: each
request's excluded items are sorted once and the [B, K, size] candidate items are looked up in
them with `torch.searchsorted` (memory O(B x E), independent of the catalog size).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.semid.trie import SidTrie

NEG_INF = float("-inf")


class BeamResult(NamedTuple):
    """items Long[B, top_k] (-1 where fewer valid items), scores float[B, top_k] (sum of
    block-restricted log-probs, -inf where invalid), sids Long[B, top_k, sid_len] (SID codes,
    -1 where invalid). Sorted by score, best first."""

    items: torch.Tensor
    scores: torch.Tensor
    sids: torch.Tensor


def exclusion_mask(
    exclude: torch.Tensor | None, n_items: int, B: int, device: torch.device
) -> torch.Tensor | None:
    """Bool[B, n_items + 1] True at excluded items (last column = sentinel for -1). Dense:
    B x n_items bytes (256 MB for 256 requests over 1M items); the exhaustive reference's.
    The beam searches use `sorted_exclusions` + `is_excluded`, which give the same answers."""
    if exclude is None or exclude.numel() == 0:
        return None
    exclude = exclude.to(device).long()
    mask = torch.zeros((B, n_items + 1), dtype=torch.bool, device=device)
    idx = torch.where((exclude >= 0) & (exclude < n_items), exclude, n_items)
    mask.scatter_(1, idx, True)
    mask[:, n_items] = False
    return mask


def sorted_exclusions(
    exclude: torch.Tensor | None, B: int, device: torch.device
) -> torch.Tensor | None:
    """Long[B, E]: each request's excluded items exclude Long[B, E] (-1 = padding) sorted
    ascending, for `is_excluded`; None when there is nothing to exclude."""
    if exclude is None or exclude.numel() == 0:
        return None
    return torch.sort(exclude.to(device).long().reshape(B, -1), dim=1).values.contiguous()


def is_excluded(items: torch.Tensor, excl_sorted: torch.Tensor) -> torch.Tensor:
    """Bool of items' shape [B, ...]: whether items[b, ...] is one of request b's excluded
    items (excl_sorted Long[B, E] from `sorted_exclusions`). A binary search per item, no
    [B, n_items] mask. Only meaningful where items >= 0 (-1 may match -1 padding)."""
    B, E = excl_sorted.shape
    flat = items.reshape(B, -1)
    pos = torch.searchsorted(excl_sorted, flat).clamp_(max=E - 1)
    return (excl_sorted.gather(1, pos) == flat).view(items.shape)


@torch.no_grad()
def beam_search(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    trie: SidTrie,
    beam_size: int,
    top_k: int,
    exclude: torch.Tensor | None = None,
) -> BeamResult:
    """Top-k items for each of B requests (histories Long[B, T]) by trie-constrained beam search.

    exclude: Long[B, E] item indices never returned (-1 = padding), e.g. the history.
    Beams: min(beam_size, #valid) survive each step; dead beams carry -inf and never yield an
    item. The last step ranks all (beam x last-code) candidates, so top_k may exceed beam_size.
    """
    if beam_size < 1 or top_k < 1:
        raise ConfigError(f"beam_size and top_k must be >= 1, got {beam_size}, {top_k}")
    vocab = model.vocab
    if trie.vocab.sizes != vocab.sizes:
        raise ConfigError(f"trie vocab {trie.vocab} does not match model vocab {vocab}")
    device = model.device
    history_tokens = history_tokens.to(device)
    B, P = history_tokens.shape[0], vocab.sid_len
    if B == 0:
        empty = torch.zeros((0, top_k), dtype=torch.long, device=device)
        return BeamResult(empty, empty.float(), empty[:, :, None].expand(0, top_k, P))
    children = [c.to(device) for c in trie.children]
    excl = sorted_exclusions(exclude, B, device)

    node = torch.zeros((B, 1), dtype=torch.long, device=device)  # trie node per beam
    scores = torch.zeros((B, 1), device=device)
    codes = torch.zeros((B, 1, 0), dtype=torch.long, device=device)
    state = model.decode_start(history_tokens)
    prev_tokens: torch.Tensor | None = None
    rows = torch.arange(B, device=device)[:, None]
    for p in range(P):
        K = node.shape[1]
        size = vocab.sizes[p]
        # the decode context carries each beam's decoded prefix (read by prefix-gated edits)
        prefixes = vocab.prefix_key(codes).view(-1)
        logits = model.decode_step(state, prev_tokens, p, prefixes)[:, vocab.block(p)]
        logp = torch.log_softmax(logits.float(), dim=-1).view(B, K, size)
        child = children[p][node]  # [B, K, size]: next node (item at the last level)
        valid = child >= 0
        if p == P - 1 and excl is not None:
            valid &= ~is_excluded(child, excl)
        cand = torch.where(valid, scores[:, :, None] + logp, NEG_INF).view(B, K * size)
        k = min(top_k if p == P - 1 else beam_size, K * size)
        scores, flat = torch.topk(cand, k, dim=1)  # sorted, best first
        beam, code = flat // size, flat % size
        node = child.view(B, K * size).gather(1, flat)
        codes = torch.cat([codes.gather(1, beam[:, :, None].expand(B, k, p)), code[:, :, None]], 2)
        if p < P - 1:
            alive = torch.isfinite(scores)
            node = torch.where(alive, node, 0)
            model.reorder(state, (rows * K + beam).view(-1))
            prev_tokens = (code + vocab.offsets[p]).view(-1)

    ok = torch.isfinite(scores)
    items = torch.where(ok, node, -1)
    sids = torch.where(ok[:, :, None], codes, -1)
    if items.shape[1] < top_k:  # fewer candidates than top_k at the last level
        pad = top_k - items.shape[1]
        items = torch.cat([items, items.new_full((B, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((B, pad), NEG_INF)], 1)
        sids = torch.cat([sids, sids.new_full((B, pad, P), -1)], 1)
    return BeamResult(items, scores, sids)
