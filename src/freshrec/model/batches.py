"""Model inputs: history token tensors, training examples/windows, and batch iteration.

`sid_tokens` everywhere is the catalog's SID table as **token ids**: int64[n_items, sid_len] =
`vocab.to_tokens(sids)`. History item indices use -1 for padding (right-aligned, as
`Split.histories` returns them); token tensors use PAD (= 0) and are left-padded.

Batch dicts (all tensors batched along dim 0, so a trainer can shard them):
- tiger: {"history": Long[B, T] encoder tokens, "target": Long[B, sid_len] SID tokens}
- causal: {"tokens": Long[B, S] = [BOS, (user), sid(i1), sid(i2), ...] right-padded with PAD,
  "targets": Bool[B, S] True where that token is a trained target (predicted from t-1)}
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.model.config import ModelConfig
from freshrec.semid.vocab import BOS, PAD, SidVocab

Examples = dict[str, np.ndarray]

# Knuth's multiplicative constant: a fixed, platform-independent hash for user buckets.
_HASH_MUL = np.uint64(2654435761)


def user_bucket_tokens(users: np.ndarray, vocab: SidVocab) -> np.ndarray:
    """int64[n] user bucket token of each user index int[n]: (user * 2654435761 mod 2^32)
    mod user_buckets, offset into the vocabulary. Deterministic across runs and machines."""
    if vocab.user_buckets <= 0:
        raise ConfigError("vocab has no user buckets (user_buckets = 0)")
    u = np.asarray(users, dtype=np.uint64)
    h = (u * _HASH_MUL) % np.uint64(2**32)
    return (h % np.uint64(vocab.user_buckets)).astype(np.int64) + vocab.user_offset


def history_tokens(
    histories: np.ndarray,
    sid_tokens: np.ndarray,
    users: np.ndarray | None = None,
    vocab: SidVocab | None = None,
) -> torch.Tensor:
    """Item histories int64[B, H] (-1 pad, right-aligned) -> Long[B, H*sid_len] SID tokens,
    PAD where padded. With `users` and a vocab with user buckets, a user bucket token is put
    right before each row's first history token: Long[B, 1 + H*sid_len]."""
    return torch.from_numpy(_history_tokens_np(histories, sid_tokens, users, vocab))


def _history_tokens_np(
    histories: np.ndarray,
    sid_tokens: np.ndarray,
    users: np.ndarray | None = None,
    vocab: SidVocab | None = None,
) -> np.ndarray:
    hist = np.asarray(histories, dtype=np.int64)
    table = np.asarray(sid_tokens, dtype=np.int64)
    B, H = hist.shape
    P = table.shape[1]
    pad = hist < 0
    if (~pad).any() and (table[hist[~pad]] <= BOS).any():
        bad = hist[~pad][(table[hist[~pad]] <= BOS).any(axis=1)][0]
        raise ConfigError(f"history item {bad} has no SID (unassigned row in the SID table)")
    tok = table[np.where(pad, 0, hist)]  # [B, H, P]
    tok[pad] = PAD
    tok = tok.reshape(B, H * P)
    if users is None or vocab is None or vocab.user_buckets <= 0:
        return tok
    out = np.concatenate([np.full((B, 1), PAD, dtype=np.int64), tok], axis=1)
    n_real = (~pad).sum(axis=1) * P
    out[np.arange(B), H * P - n_real] = user_bucket_tokens(users, vocab)
    return out


def request_history_tokens(
    split: Split,
    requests: Requests,
    sid_tokens: np.ndarray,
    max_history: int,
    vocab: SidVocab | None = None,
) -> torch.Tensor:
    """Encoder/prompt tokens Long[n, T] of evaluation requests (last `max_history` items,
    plus a user token when `vocab.user_buckets > 0`)."""
    hist = split.histories(requests, max_history)
    return history_tokens(hist, sid_tokens, requests.user, vocab)


def _train_positions(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(user int64[n], pos int64[n]) of every training-period target with non-empty
    history: pos = 1..train_len[u]-1 within the user's sequence."""
    n_t = np.maximum(np.asarray(split.train_len, dtype=np.int64) - 1, 0)
    users = np.repeat(np.arange(len(n_t), dtype=np.int64), n_t)
    starts = np.repeat(np.cumsum(n_t) - n_t, n_t)
    pos = np.arange(int(n_t.sum()), dtype=np.int64) - starts + 1
    return users, pos


def tiger_examples(
    split: Split, sid_tokens: np.ndarray, max_history: int, vocab: SidVocab | None = None
) -> Examples:
    """One example per training-period target with non-empty history; its history is the
    previous training items of the user (last `max_history`). Returns
    {"history": int32[n, T], "target": int32[n, sid_len]} (token ids, see module doc)."""
    users, pos = _train_positions(split)
    target = split.seq_items[split.seq_offsets[users] + pos]
    req = Requests(users.astype(np.int32), pos.astype(np.int32), target, np.zeros(len(users), bool))
    hist = split.histories(req, max_history)
    table = np.asarray(sid_tokens, dtype=np.int64)
    return {
        "history": _history_tokens_np(hist, table, users, vocab).astype(np.int32),
        "target": table[target].astype(np.int32),
    }


def window_starts(length: int, window: int, min_context: int) -> list[int]:
    """Start indices of the training windows over a sequence of `length` items.

    Windows hold `window` items; stride = window - min_context. The last window is aligned to
    the sequence end. Each target item is trained in exactly one window (the first that
    contains it), with >= min_context items of context outside the first window.
    """
    stride = max(window - min_context, 1)
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def causal_windows(
    split: Split,
    sid_tokens: np.ndarray,
    max_history: int,
    min_context: int | None = None,
    vocab: SidVocab | None = None,
) -> Examples:
    """Training windows for the causal model over each user's training sequence.

    Scheme: windows of W = max_history + 1 items, stride S = W - min_context (default
    min_context = max_history // 2), last window aligned to the sequence end. A window's
    targets are its items not trained by an earlier window, so every training item except the
    user's first (no history) is a target exactly once; outside the first window each target
    sees >= min_context previous items (and at most max_history, as at inference). Loss is on
    all sid_len tokens of each target item. Returns {"tokens": int32[n, S], "targets":
    bool[n, S]} with S = 1 (+1 user token) + W*sid_len.
    """
    table = np.asarray(sid_tokens, dtype=np.int64)
    P = table.shape[1]
    W = max_history + 1
    c = max_history // 2 if min_context is None else min_context
    if not 0 <= c <= max_history:
        raise ConfigError(f"min_context must be in [0, {max_history}], got {c}")
    with_user = vocab is not None and vocab.user_buckets > 0
    head = 2 if with_user else 1
    rows_items: list[np.ndarray] = []
    rows_first: list[int] = []  # in-window index of the first target item
    rows_user: list[int] = []
    for u in range(len(split.train_len)):
        seq = split.train_sequence(u).astype(np.int64)
        if len(seq) < 2:
            continue
        prev_end = 1  # item 0 has no history: never a target
        for s in window_starts(len(seq), W, c):
            end = min(s + W, len(seq))
            first = max(prev_end, s) - s
            if first < end - s:
                rows_items.append(seq[s:end])
                rows_first.append(first)
                rows_user.append(u)
            prev_end = end
    n = len(rows_items)
    items = np.full((n, W), -1, dtype=np.int64)
    lengths = np.fromiter((len(r) for r in rows_items), dtype=np.int64, count=n)
    if n:
        mask = np.arange(W)[None, :] < lengths[:, None]
        items[mask] = np.concatenate(rows_items)
    tok = table[np.maximum(items, 0)]
    tok[items < 0] = PAD
    tokens = np.full((n, head + W * P), PAD, dtype=np.int64)
    tokens[:, 0] = BOS
    if with_user:
        tokens[:, 1] = user_bucket_tokens(np.asarray(rows_user, dtype=np.int64), vocab)
    tokens[:, head:] = tok.reshape(n, W * P)
    is_target_item = (np.arange(W)[None, :] >= np.asarray(rows_first)[:, None]) & (items >= 0)
    targets = np.zeros((n, head + W * P), dtype=bool)
    targets[:, head:] = np.repeat(is_target_item, P, axis=1)
    return {"tokens": tokens.astype(np.int32), "targets": targets}


def training_examples(
    config: ModelConfig, split: Split, sid_tokens: np.ndarray, vocab: SidVocab | None = None
) -> Examples:
    """The training examples of `config.arch`: `tiger_examples` or `causal_windows` (with
    config.max_history and config.min_context)."""
    if config.example_layout == "targets":
        return tiger_examples(split, sid_tokens, config.max_history, vocab)
    return causal_windows(split, sid_tokens, config.max_history, config.min_context, vocab)


def n_targets(examples: Examples) -> int:
    """Number of target items in `examples` (tiger: rows; causal: target items)."""
    if "target" in examples:
        return int(examples["target"].shape[0])
    return int(examples["targets"].sum())


def iterate_batches(
    examples: Examples, batch_size: int, shuffle: bool = True, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batch dicts of up to `batch_size` rows (ints -> Long, bools stay Bool). The row
    order is a seeded permutation when `shuffle` (pass e.g. base_seed + epoch)."""
    n = next(iter(examples.values())).shape[0]
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        batch = {}
        for key, arr in examples.items():
            t = torch.from_numpy(np.ascontiguousarray(arr[idx]))
            batch[key] = t if t.dtype == torch.bool else t.long()
        yield batch


def n_batches(examples: Examples, batch_size: int) -> int:
    """Batches per epoch of `iterate_batches`."""
    n = next(iter(examples.values())).shape[0]
    return -(-n // batch_size)
