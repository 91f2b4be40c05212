"""Prefix-scoped content mixture (ScopeRec-C style): training-free, on a frozen GR model.

Once the beam has generated a first SID code b, the probability of a path below b becomes
P0(b) [(1 - alpha_b) P0(y | b) + alpha_b R(y | b)], where R(. | b) = softmax(cos(q, e_j) / T)
over the new items whose SID starts with b (q = the last history item's text embedding) and
the branch budget alpha_b = alpha_max * sigmoid((max_j cos(q, e_j) - c) / w) is set by how well
the branch's best new item matches. Warm items keep P0(b) (1 - alpha_b) P0(y | b): a branch
without new items has alpha_b = 0 and keeps its probability. Vectorised over requests and
branches (one scatter over the new items).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens
from freshrec.recommend.fresh.fusion import Fused, _select
from freshrec.recommend.gr import model_window


class ScopeParams(BaseModel):
    """alpha_max, c, w: the branch budget; temperature: T of R; n_candidates: new items kept
    per request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha_max: float = Field(0.1, ge=0, le=1)
    center: float = 0.5
    width: float = Field(0.05, gt=0)
    temperature: float = Field(0.05, gt=0)
    n_candidates: int = Field(50, ge=1)


def scope_mix(
    first_log_probs: np.ndarray,
    beam_items: np.ndarray,
    beam_scores: np.ndarray,
    item_first_code: np.ndarray,
    query: np.ndarray,
    emb: torch.Tensor,
    new_items: np.ndarray,
    exclude: np.ndarray,
    params: ScopeParams,
    top_k: int,
) -> Fused:
    """first_log_probs float[n, C]: log P0(b) of every first code; beam_items/scores
    int64/float[n, K] the GR beam (log P0 of whole paths); item_first_code int64[n_items];
    query float32[n, d] unit text vectors; emb float32[n_items, d] unit item embeddings;
    new_items int64[m] live new items; exclude bool[n, m] new items in the history."""
    n, n_codes = first_log_probs.shape
    codes = torch.from_numpy(item_first_code[new_items])  # [m]
    cos = torch.from_numpy(query) @ emb[torch.from_numpy(new_items)].T  # [n, m]
    cos = cos.masked_fill(torch.from_numpy(exclude), float("-inf"))
    idx = codes[None, :].expand(n, -1)
    best = torch.full((n, n_codes), float("-inf")).scatter_reduce(1, idx, cos, "amax")
    logit = cos / params.temperature
    norm = torch.full((n, n_codes), float("-inf")).scatter_reduce(
        1, idx, logit, "amax"
    )  # stabiliser per branch
    shifted = torch.exp(logit - norm.gather(1, idx).nan_to_num(neginf=0.0))
    z = torch.zeros((n, n_codes)).scatter_add(1, idx, shifted.nan_to_num(0.0))
    log_r = logit - norm.gather(1, idx) - torch.log(z.gather(1, idx).clamp(min=1e-30))
    alpha = params.alpha_max * torch.sigmoid((best - params.center) / params.width)  # [n, C]
    alpha = alpha.nan_to_num(0.0)
    lp0 = torch.from_numpy(first_log_probs.astype(np.float32))
    new_score = lp0.gather(1, idx) + torch.log(alpha.gather(1, idx).clamp(min=1e-30)) + log_r
    new_score = new_score.masked_fill(alpha.gather(1, idx) <= 0, float("-inf")).numpy()
    m = min(params.n_candidates, new_score.shape[1])
    top = np.argsort(-new_score, axis=1, kind="stable")[:, :m]
    n_items = new_items[top]
    n_scores = np.take_along_axis(new_score, top, 1)
    b_code = item_first_code[np.clip(beam_items, 0, None)]
    b_alpha = np.take_along_axis(alpha.numpy(), b_code, 1)
    b_scores = np.where(beam_items >= 0, beam_scores + np.log1p(-b_alpha), -np.inf)
    items = np.concatenate([beam_items, n_items], 1)
    scores = np.concatenate([b_scores, n_scores], 1)
    from_new = np.zeros(scores.shape, dtype=bool)
    from_new[:, beam_items.shape[1] :] = True
    return _select(items, scores, scores, from_new, top_k)


@torch.no_grad()
def first_code_log_probs(
    model: GenerativeRecommender,
    histories: np.ndarray,
    sid_tokens: np.ndarray,
    users: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """float32[n, codebook_size] log P0(first SID code) for histories int64[n, H] (the model
    reads the last max_history): the beam search's first step (block-restricted
    log-softmax)."""
    vocab = model.vocab
    was_training = model.training
    model.eval()
    out = []
    try:
        for s in range(0, len(histories), batch_size):
            u = None if users is None else users[s : s + batch_size]
            window = model_window(histories[s : s + batch_size], model.config.max_history)
            tok = history_tokens(window, sid_tokens, u, vocab)
            state = model.decode_start(tok.to(model.device))
            root = torch.zeros(len(tok), dtype=torch.long, device=model.device)
            logits = model.decode_step(state, None, 0, root)[:, vocab.block(0)]
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, vocab.sizes[0]), np.float32)
