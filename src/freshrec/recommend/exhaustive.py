"""Reference decoders: exhaustive scoring of every catalog SID, and transformers' `generate`.

Both exist to check `beam_search` (and, for `hf_generate_topk`, to benchmark it): exhaustive
scoring gives the exact top-k under the same block-restricted normalisation; the HF path runs
`generate(num_beams=..., prefix_allowed_tokens_fn=...)` on the wrapped transformers model
(`model.generate_inputs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.recommend.beam_search import NEG_INF, BeamResult, exclusion_mask
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import BOS, PAD


def _catalog(
    trie_or_sids: SidTrie | tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(trie_or_sids, SidTrie):
        return trie_or_sids.sids_items()
    sids, items = trie_or_sids
    return np.asarray(sids, dtype=np.int64), np.asarray(items, dtype=np.int64)


@torch.no_grad()
def exhaustive_scores(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    catalog: SidTrie | tuple[np.ndarray, np.ndarray],
    chunk: int = 4096,
) -> torch.Tensor:
    """float[B, n_items] = sum over positions of block-restricted log-probs of each catalog
    item's SID (`sid_log_probs`, full recompute), -inf for item indices not in the catalog.
    n_items = max catalog item + 1. `chunk` = (request, item) pairs per forward."""
    sids, items = _catalog(catalog)
    device = model.device
    history_tokens = history_tokens.to(device)
    B = history_tokens.shape[0]
    n = int(items.max()) + 1 if len(items) else 0
    out = torch.full((B, n), NEG_INF, device=device)
    if not len(items):
        return out
    sid_tok = model.vocab.to_tokens(torch.as_tensor(sids, device=device))
    items_t = torch.as_tensor(items, device=device)
    N = len(items)
    pairs = B * N
    for start in range(0, pairs, chunk):
        idx = torch.arange(start, min(start + chunk, pairs), device=device)
        b, i = idx // N, idx % N
        lp = model.sid_log_probs(history_tokens[b], sid_tok[i]).sum(dim=1)
        out[b, items_t[i]] = lp
    return out


def exhaustive_topk(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    trie: SidTrie,
    top_k: int,
    exclude: torch.Tensor | None = None,
) -> BeamResult:
    """Exact top-k items by full SID log-prob (the beam search's target), as a BeamResult."""
    scores = exhaustive_scores(model, history_tokens, trie)
    B, n = scores.shape
    excl = exclusion_mask(exclude, n, B, scores.device)
    if excl is not None:
        scores = scores.masked_fill(excl[:, :n], NEG_INF)
    k = min(top_k, n)
    top, items = torch.topk(scores, k, dim=1)
    items = torch.where(torch.isfinite(top), items, -1)
    sids, cat_items = trie.sids_items()
    table = torch.full((max(n, 1), model.vocab.sid_len), -1, dtype=torch.long)
    table[torch.as_tensor(cat_items)] = torch.as_tensor(sids)
    table = table.to(scores.device)
    out_sids = torch.where(items[:, :, None] >= 0, table[items.clamp(min=0)], -1)
    if k < top_k:
        pad = top_k - k
        items = torch.cat([items, items.new_full((B, pad), -1)], 1)
        top = torch.cat([top, top.new_full((B, pad), NEG_INF)], 1)
        out_sids = torch.cat([out_sids, out_sids.new_full((B, pad, out_sids.shape[2]), -1)], 1)
    return BeamResult(items, top, out_sids)


# --- transformers generate ---------------------------------------------------------------------
@contextlib.contextmanager
def _block_restricted_head(model: GenerativeRecommender, lm_head: nn.Module) -> Iterator[None]:
    """While active, the k-th lm_head call of a generation (k = SID position) emits -inf
    outside `vocab.block(k)`, so HF's full-vocabulary log-softmax equals our block-restricted
    one. One lm_head call per generated token (KV cache on)."""
    vocab = model.vocab
    step = [0]

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        p = min(step[0], vocab.sid_len - 1)
        step[0] += 1
        sl = vocab.block(p)
        out = torch.full_like(output, NEG_INF)
        out[..., sl] = output[..., sl]
        return out

    handle = lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _prefix_table(trie: SidTrie) -> dict[tuple[int, ...], list[int]]:
    """SID token prefix (tuple, length 0..sid_len-1) -> allowed next token ids."""
    sids, _ = trie.sids_items()
    tokens = trie.vocab.to_tokens(sids)
    table: dict[tuple[int, ...], list[int]] = {}
    for p in range(trie.vocab.sid_len):
        uniq = np.unique(tokens[:, : p + 1], axis=0)
        for row in uniq.tolist():
            table.setdefault(tuple(row[:p]), []).append(row[p])
    return table


@torch.no_grad()
def hf_generate_topk(
    model: GenerativeRecommender,
    history_tokens: torch.Tensor,
    trie: SidTrie,
    beam_size: int,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k (items Long[B, top_k], scores float[B, top_k]) with transformers'
    `generate(num_beams=beam_size, prefix_allowed_tokens_fn=...)` on the wrapped HF model.

    Same scoring as `beam_search`: the lm_head is block-restricted for the call (see
    `_block_restricted_head`), length_penalty=0 so sequence scores are plain sums, and the
    prefix function walks a dict of trie prefixes (one Python call per beam per step, as HF
    requires). top_k must be <= beam_size (HF returns at most num_beams sequences).
    """
    if top_k > beam_size:
        raise ConfigError("hf_generate_topk needs top_k <= beam_size")
    gen = model.generate_inputs(history_tokens)
    vocab = model.vocab
    P = vocab.sid_len
    table = _prefix_table(trie)
    dead = [PAD]  # an unsatisfiable prefix continues with PAD; its score is -inf-like anyway
    start = gen.start

    def allowed(batch_id: int, seq: torch.Tensor) -> list[int]:
        return table.get(tuple(seq[start:].tolist()), dead)

    fn: Callable[[int, torch.Tensor], list[int]] = allowed
    with _block_restricted_head(model, gen.hf.lm_head):
        out = gen.hf.generate(
            input_ids=gen.input_ids,
            attention_mask=gen.attention_mask.long(),
            num_beams=beam_size,
            num_return_sequences=top_k,
            max_new_tokens=P,
            min_new_tokens=P,
            do_sample=False,
            early_stopping=True,
            length_penalty=0.0,
            prefix_allowed_tokens_fn=fn,
            output_scores=True,
            return_dict_in_generate=True,
            use_cache=True,
            pad_token_id=PAD,
            eos_token_id=BOS,
            decoder_start_token_id=gen.decoder_start_token_id,
        )
    seqs = out.sequences[:, start : start + P]
    B = history_tokens.shape[0]
    items = torch.full((seqs.shape[0],), -1, dtype=torch.long)
    if seqs.shape[1] == P:
        codes = vocab.from_tokens(seqs.cpu())
        items = torch.as_tensor(trie.lookup(codes))
    scores = out.sequences_scores.float().cpu()
    scores = torch.where(items >= 0, scores, NEG_INF)
    return items.view(B, top_k), scores.view(B, top_k)
