"""`pipeline.train` on the real MovieLens split with a tiny causal model: with weight EMA, the
weights validated each epoch are the ones saved as best/."""

from __future__ import annotations

import json

import pytest

from freshrec import pipeline
from freshrec.config import load_recipe
from freshrec.evaluate.protocol import evaluate_ranker
from freshrec.model.checkpoint import BEST, load_checkpoint
from model_helpers import TINY_CAUSAL

TINY = [
    *TINY_CAUSAL,
    "train.epochs=2",
    "train.warmup_steps=5",
    "train.valid_requests=60",
    "train.valid_beam=5",
    "train.ema_decay=0.9",
]


def test_ema_run_validates_the_weights_it_saves(ml_split, ml_sids, tmp_path):
    recipe = load_recipe("cpu", [f"work_dir={tmp_path}", *TINY])
    tok, table = ml_sids
    trained = pipeline.train(recipe, ml_split, tok, table, progress=False)
    log = json.loads((trained.folder / "train_log.json").read_text())
    best = load_checkpoint(trained.folder / BEST, expect_fingerprint=tok.fingerprint)
    ranker = pipeline.gr_ranker(recipe, best, table, ml_split, catalog="warm", beam_size=5)
    res = evaluate_ranker(ranker, ml_split, "valid", top_k=10, max_requests=60, seed=0)
    assert res.metrics.overall.ndcg[10] == pytest.approx(log["best_valid"], abs=1e-9)
    # the last (raw) weights are not the averaged ones
    last = load_checkpoint(trained.folder / "last" / "model")
    assert any(
        not (a == b).all()
        for a, b in zip(best.state_dict().values(), last.state_dict().values(), strict=True)
    )
