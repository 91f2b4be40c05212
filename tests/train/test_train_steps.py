"""`train_steps`: a fixed number of optimiser steps on real MovieLens examples with a tiny model
(incremental fine-tuning in a replay): it takes exactly the steps asked for, cycling through
small example sets, lowers the loss on what it trains on, and leaves the model in eval mode."""

from __future__ import annotations

import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.model.base import build_model
from freshrec.model.batches import iterate_batches, training_examples
from freshrec.model.config import ModelConfig
from freshrec.train.config import TrainConfig
from freshrec.train.steps import train_steps

TINY = ModelConfig(
    arch="causal", d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, max_history=10
)


def test_train_steps_cycles_and_learns(ml_split, ml_sids):
    tok, table = ml_sids
    ex = training_examples(TINY, ml_split, table.tokens(tok.vocab), tok.vocab)
    ex = {k: v[:40] for k, v in ex.items()}  # 40 rows: 30 steps of 16 cycle through them
    torch.manual_seed(0)
    model = build_model(TINY, tok.vocab)
    batch = next(iterate_batches(ex, 40, shuffle=False))
    with torch.no_grad():
        before = float(model.loss(batch))
    res = train_steps(model, ex, 30, lr=3e-3, cfg=TrainConfig(), batch_size=16, seed=0)
    assert res.steps == 30
    assert res.examples == 10 * 40  # 10 passes of 3 batches (16, 16, 8 rows)
    assert not model.training
    with torch.no_grad():
        assert float(model.loss(batch)) < before


def test_train_steps_edge_cases(ml_sids):
    tok, _ = ml_sids
    model = build_model(TINY, tok.vocab)
    empty = {"tokens": torch.zeros((0, 4), dtype=torch.int32).numpy()}
    assert train_steps(model, empty, 5, lr=1e-3).steps == 0
    with pytest.raises(ConfigError, match="n_steps"):
        train_steps(model, empty, -1, lr=1e-3)
