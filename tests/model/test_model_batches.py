"""History tokens, tiger examples, causal windows (each target once, enough context), batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from freshrec.data.schema import Requests
from freshrec.errors import ConfigError
from freshrec.model.batches import (
    causal_windows,
    history_tokens,
    iterate_batches,
    n_batches,
    n_targets,
    request_history_tokens,
    tiger_examples,
    user_bucket_tokens,
    window_starts,
)
from freshrec.semid.vocab import BOS, PAD, SidVocab
from model_helpers import VOCAB, make_split

P = VOCAB.sid_len


def test_history_tokens_pads_and_flattens(sid_tokens):
    hist = np.array([[-1, -1, 4], [1, 2, 3]])
    tok = history_tokens(hist, sid_tokens)
    assert tok.dtype == torch.long
    assert tok.shape == (2, 3 * P)
    assert (tok[0, : 2 * P] == PAD).all()
    assert tok[0, 2 * P :].tolist() == sid_tokens[4].tolist()
    assert tok[1].tolist() == sid_tokens[[1, 2, 3]].reshape(-1).tolist()


def test_user_token_sits_before_the_history(sid_tokens):
    vocab = SidVocab(n_levels=2, codebook_size=6, max_collision=4, user_buckets=5)
    hist = np.array([[-1, -1, 4], [1, 2, 3]])
    tok = history_tokens(hist, sid_tokens, np.array([7, 8]), vocab)
    assert tok.shape == (2, 1 + 3 * P)
    buckets = user_bucket_tokens(np.array([7, 8]), vocab)
    assert tok[0, 2 * P] == buckets[0]
    assert (tok[0, : 2 * P] == PAD).all()
    assert tok[1, 0] == buckets[1]
    # deterministic, in range, spread over buckets
    b = user_bucket_tokens(np.arange(1000), vocab) - vocab.user_offset
    assert b.min() >= 0
    assert b.max() < 5
    assert len(np.unique(b)) == 5
    assert np.array_equal(b, user_bucket_tokens(np.arange(1000), vocab) - vocab.user_offset)
    with pytest.raises(ConfigError):
        user_bucket_tokens(np.arange(3), VOCAB)


def test_unassigned_history_item_is_an_error(sid_tokens):
    table = sid_tokens.copy()
    table[4] = -1
    with pytest.raises(ConfigError, match="item 4"):
        history_tokens(np.array([[3, 4]]), table)


def test_tiger_examples_cover_every_training_target(sid_tokens):
    # u0 train [5, 6, 7] (+ test 8), u1 train [9], u2 train [1, 2, 3, 4, 5, 6, 7, 8]
    split = make_split([[5, 6, 7, 8], [9], [1, 2, 3, 4, 5, 6, 7, 8]], [3, 1, 8], 60)
    ex = tiger_examples(split, sid_tokens, max_history=3)
    assert ex["history"].shape == (2 + 0 + 7, 3 * P)
    assert ex["target"].shape == (9, P)
    targets = [int(np.flatnonzero((sid_tokens == t).all(1))[0]) for t in ex["target"]]
    assert targets == [6, 7, 2, 3, 4, 5, 6, 7, 8]
    # u0's first example: history [5] right-aligned; u2's last: the 3 previous items
    assert (ex["history"][0, : 2 * P] == PAD).all()
    assert ex["history"][0, 2 * P :].tolist() == sid_tokens[5].tolist()
    assert ex["history"][-1].tolist() == sid_tokens[[5, 6, 7]].reshape(-1).tolist()
    assert n_targets(ex) == 9


def test_window_starts_scheme():
    assert window_starts(5, 21, 10) == [0]
    assert window_starts(21, 21, 10) == [0]
    assert window_starts(22, 21, 10) == [0, 1]
    assert window_starts(50, 21, 10) == [0, 11, 22, 29]
    for length in range(1, 80):
        starts = window_starts(length, 6, 3)
        assert starts[0] == 0
        assert starts[-1] == max(length - 6, 0)
        assert all(b - a <= 3 for a, b in itertools.pairwise(starts))


@pytest.mark.parametrize("min_context", [0, 2, 4])
def test_causal_windows_train_each_target_once_with_context(sid_tokens, min_context):
    rng = np.random.default_rng(0)
    lengths = [1, 2, 5, 6, 7, 13, 30]
    seqs = [rng.integers(0, 60, n).tolist() for n in lengths]
    H = 5
    split = make_split(seqs, lengths, 60)
    ex = causal_windows(split, sid_tokens, max_history=H, min_context=min_context)
    tokens, targets = ex["tokens"], ex["targets"]
    assert tokens.shape[1] == 1 + (H + 1) * P
    assert (tokens[:, 0] == BOS).all()
    assert not targets[:, 0].any()
    # reconstruct (user, position) of every trained target: each non-first item exactly once
    trained = []
    row = 0
    for u, seq in enumerate(seqs):
        if len(seq) < 2:
            continue
        for s in window_starts(len(seq), H + 1, min_context):
            items = tokens[row, 1:].reshape(-1, P)
            mask = targets[row, 1:].reshape(-1, P)
            assert mask.any()  # every window has a new target
            n = min(H + 1, len(seq) - s)
            assert items[:n].tolist() == sid_tokens[seq[s : s + n]].tolist()
            assert (items[n:] == PAD).all()
            assert (mask.all(1) == mask.any(1)).all()  # whole items are targets
            for j in np.flatnonzero(mask.all(1)):
                trained.append((u, s + j))
                if s > 0:
                    assert j >= min_context  # enough context outside the first window
            row += 1
    assert row == len(tokens)
    expect = [(u, t) for u, seq in enumerate(seqs) for t in range(1, len(seq))]
    assert sorted(trained) == expect
    assert n_targets(ex) == len(expect) * P


def test_causal_windows_with_user_token(sid_tokens):
    vocab = SidVocab(n_levels=2, codebook_size=6, max_collision=4, user_buckets=5)
    split = make_split([[1, 2, 3], [4, 5]], [3, 2], 60)
    ex = causal_windows(split, sid_tokens, max_history=3, vocab=vocab)
    assert ex["tokens"].shape == (2, 2 + 4 * P)
    assert ex["tokens"][:, 1].tolist() == user_bucket_tokens(np.array([0, 1]), vocab).tolist()
    assert not ex["targets"][:, :2].any()


def test_iterate_batches(sid_tokens):
    split = make_split([list(range(10)), list(range(20, 35))], [10, 15], 60)
    ex = tiger_examples(split, sid_tokens, max_history=4)
    n = len(ex["target"])
    batches = list(iterate_batches(ex, 8, shuffle=True, seed=3))
    assert len(batches) == n_batches(ex, 8) == -(-n // 8)
    assert all(b["history"].dtype == torch.long for b in batches)
    seen = torch.cat([b["target"] for b in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, ex["target"].tolist()))
    again = list(iterate_batches(ex, 8, shuffle=True, seed=3))
    assert all(torch.equal(a["target"], b["target"]) for a, b in zip(batches, again, strict=True))
    plain = next(iterate_batches(ex, 8, shuffle=False))
    assert plain["target"].tolist() == ex["target"][:8].tolist()
    cw = causal_windows(split, sid_tokens, max_history=4)
    b = next(iterate_batches(cw, 2, shuffle=False))
    assert b["targets"].dtype == torch.bool
    assert b["tokens"].dtype == torch.long


def test_request_history_tokens(sid_tokens):
    split = make_split([[1, 2, 3, 4]], [2], 60)
    req = Requests(np.array([0, 0]), np.array([2, 3]), np.array([3, 4]), np.zeros(2, bool))
    tok = request_history_tokens(split, req, sid_tokens, max_history=2)
    assert tok[0].tolist() == sid_tokens[[1, 2]].reshape(-1).tolist()
    assert tok[1].tolist() == sid_tokens[[2, 3]].reshape(-1).tolist()


def test_training_examples_dispatch_on_arch(sid_tokens):
    from freshrec.model.batches import training_examples
    from model_helpers import tiny_config

    split = make_split([list(range(12))], [12], 60)
    tiger = training_examples(tiny_config("tiger"), split, sid_tokens)
    assert set(tiger) == {"history", "target"}
    causal = training_examples(tiny_config("causal", window_min_context=1), split, sid_tokens)
    assert set(causal) == {"tokens", "targets"}
    assert n_targets(tiger) * P == n_targets(causal) == 11 * P
