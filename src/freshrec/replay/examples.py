"""Training examples for the interactions of a time window (fine-tuning, merging, retraining in a
replay), in the model's own layout (`freshrec.model.batches`), vectorised over users.

Causal layout: windows of W = max_history + 1 items ending at a chunk of the window's targets
(chunks of W - min_context targets), so each target is trained once with at least
min(min_context, its position) earlier items as context, as in `causal_windows`; only the
window's interactions are targets. Targets layout (TIGER): one example per target.
"""

from __future__ import annotations

import numpy as np

from freshrec.data.schema import Requests, Split
from freshrec.model.batches import Examples, history_tokens, user_bucket_tokens
from freshrec.model.config import ModelConfig
from freshrec.replay.timeline import count_before
from freshrec.semid.vocab import BOS, PAD, SidVocab


def target_ranges(split: Split, t0: int | float, t1: int | float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) int64[n_users]: user u's interactions in [t0, t1) are sequence positions a..b-1;
    a >= 1 (a user's first interaction has no history and is never a target)."""
    a = np.maximum(count_before(split, t0), 1)
    b = count_before(split, t1)
    return a, np.maximum(a, b)


def window_examples(
    config: ModelConfig,
    split: Split,
    sid_tokens: np.ndarray,
    vocab: SidVocab,
    t0: int | float,
    t1: int | float,
) -> Examples:
    """Examples whose targets are exactly the interactions with time in [t0, t1) (t0 = -inf:
    everything before t1). sid_tokens: int64[n_items, sid_len] token ids (every item that
    occurs before t1 must have a SID)."""
    a, b = target_ranges(split, t0, t1)
    if config.example_layout == "targets":
        return _target_examples(config, split, sid_tokens, vocab, a, b)
    return _causal_examples(config, split, sid_tokens, vocab, a, b)


def _target_examples(
    config: ModelConfig,
    split: Split,
    sid_tokens: np.ndarray,
    vocab: SidVocab,
    a: np.ndarray,
    b: np.ndarray,
) -> Examples:
    n = b - a
    users = np.repeat(np.arange(n.size, dtype=np.int64), n)
    pos = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n) + a[users]
    offsets = np.asarray(split.seq_offsets, dtype=np.int64)
    target = np.asarray(split.seq_items, dtype=np.int64)[offsets[users] + pos]
    req = Requests(users.astype(np.int32), pos.astype(np.int32), target, np.zeros(users.size, bool))
    hist = split.histories(req, config.max_history)
    table = np.asarray(sid_tokens, dtype=np.int64)
    tokens = history_tokens(hist, table, users, vocab).numpy()
    return {"history": tokens.astype(np.int32), "target": table[target].astype(np.int32)}


def _causal_examples(
    config: ModelConfig,
    split: Split,
    sid_tokens: np.ndarray,
    vocab: SidVocab,
    a: np.ndarray,
    b: np.ndarray,
) -> Examples:
    W = config.max_history + 1
    c = config.max_history // 2 if config.min_context is None else config.min_context
    S = max(W - c, 1)
    n_chunks = -(-(b - a) // S)  # ceil; 0 for users without targets
    users = np.repeat(np.arange(a.size, dtype=np.int64), n_chunks)
    k = np.arange(int(n_chunks.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(n_chunks) - n_chunks, n_chunks
    )
    cs = a[users] + k * S  # first target of the chunk
    ce = np.minimum(cs + S, b[users])  # end (exclusive) of the chunk and of its window
    ws = np.maximum(ce - W, 0)  # window start
    cols = np.arange(W)[None, :]
    valid = cols < (ce - ws)[:, None]
    idx = np.asarray(split.seq_offsets, dtype=np.int64)[users][:, None] + ws[:, None] + cols
    items = np.where(
        valid, np.asarray(split.seq_items, dtype=np.int64)[np.where(valid, idx, 0)], -1
    )
    table = np.asarray(sid_tokens, dtype=np.int64)
    P = table.shape[1]
    with_user = vocab.user_buckets > 0
    head = 2 if with_user else 1
    tok = table[np.maximum(items, 0)]
    tok[items < 0] = PAD
    n = items.shape[0]
    tokens = np.full((n, head + W * P), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    if with_user:
        tokens[:, 1] = user_bucket_tokens(users, vocab)
    tokens[:, head:] = tok.reshape(n, W * P)
    is_target = valid & ((ws[:, None] + cols) >= cs[:, None])
    targets = np.zeros((n, head + W * P), dtype=bool)
    targets[:, head:] = np.repeat(is_target, P, axis=1)
    return {"tokens": tokens.astype(np.int32), "targets": targets}


def n_rows(examples: Examples) -> int:
    return int(next(iter(examples.values())).shape[0])


def concat(parts: list[Examples]) -> Examples:
    """Row-wise concatenation of examples of one layout (empty parts skipped)."""
    parts = [p for p in parts if n_rows(p)]
    if not parts:
        raise ValueError("no examples to concatenate")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def sample_rows(examples: Examples, n: int, rng: np.random.Generator) -> Examples:
    """`n` rows drawn uniformly without replacement (all rows when there are fewer)."""
    total = n_rows(examples)
    idx = np.arange(total) if n >= total else np.sort(rng.choice(total, size=n, replace=False))
    return {key: value[idx] for key, value in examples.items()}
