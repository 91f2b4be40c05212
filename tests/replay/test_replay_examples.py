"""Training examples of a time window: every interaction of the window is a target exactly once,
in the model's own layout, and the whole training period reproduces the pipeline's examples."""

from __future__ import annotations

import math

import numpy as np
import torch

from freshrec.model.base import build_model
from freshrec.model.batches import iterate_batches, n_targets, tiger_examples, training_examples
from freshrec.model.config import ModelConfig
from freshrec.replay.examples import concat, n_rows, sample_rows, window_examples
from freshrec.replay.timeline import DAY, window_interactions


def _config(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)


def test_training_period_matches_the_pipeline(ml_split, ml_sids):
    tok, table = ml_sids
    tokens = table.tokens(tok.vocab)
    cut1, _ = ml_split.cutoffs
    causal = _config("causal")
    ours = window_examples(causal, ml_split, tokens, tok.vocab, -math.inf, cut1)
    theirs = training_examples(causal, ml_split, tokens, tok.vocab)
    assert n_targets(ours) == n_targets(theirs)  # every training target once
    tiger = _config("tiger")
    ours = window_examples(tiger, ml_split, tokens, tok.vocab, -math.inf, cut1)
    theirs = tiger_examples(ml_split, tokens, tiger.max_history, tok.vocab)
    for key in ("history", "target"):
        assert np.array_equal(ours[key], theirs[key])


def test_a_window_trains_exactly_its_interactions(ml_split, ml_sids):
    tok, table = ml_sids
    tokens = table.tokens(tok.vocab)
    _, cut2 = ml_split.cutoffs
    t0, t1 = cut2, cut2 + 14 * DAY
    idx = window_interactions(ml_split, t0, t1)
    users = np.searchsorted(ml_split.seq_offsets, idx, side="right") - 1
    with_history = int((idx - ml_split.seq_offsets[users] > 0).sum())
    cfg = _config("causal")
    ex = window_examples(cfg, ml_split, tokens, tok.vocab, t0, t1)
    P = tok.vocab.sid_len
    assert n_targets(ex) == with_history * P
    # the targeted tokens are exactly the SIDs of the window's items, as a multiset
    target_tokens = np.sort(ex["tokens"][ex["targets"]])
    items = ml_split.seq_items[idx][idx - ml_split.seq_offsets[users] > 0]
    assert np.array_equal(target_tokens, np.sort(tokens[items].reshape(-1)))
    model = build_model(cfg, tok.vocab)
    batch = next(iterate_batches(ex, 8, shuffle=False))
    assert torch.isfinite(model.loss(batch))
    tiger = window_examples(_config("tiger"), ml_split, tokens, tok.vocab, t0, t1)
    assert n_rows(tiger) == with_history


def test_concat_and_sampling(ml_split, ml_sids):
    tok, table = ml_sids
    _, cut2 = ml_split.cutoffs
    ex = window_examples(
        _config("causal"), ml_split, table.tokens(tok.vocab), tok.vocab, cut2, cut2 + 7 * DAY
    )
    both = concat([ex, ex])
    assert n_rows(both) == 2 * n_rows(ex)
    rng = np.random.default_rng(0)
    assert n_rows(sample_rows(both, 3, rng)) == 3
    assert n_rows(sample_rows(ex, 10**6, rng)) == n_rows(ex)
