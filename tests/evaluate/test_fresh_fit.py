"""`fit_fresh` refuses what calibration must not do, and on a real split with an untrained
tiny model it picks settings within the warm budget (or switches the channel off)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.evaluate.fresh_fit import FitGrid, fit_fresh, quality, within_budget
from freshrec.model.base import build_model
from freshrec.recommend import Catalog, GRRanker
from freshrec.recommend.fresh import FreshParams, FreshRanker
from model_helpers import tiny_config


@pytest.fixture(scope="module")
def ranker(ml_split, ml_sids, ml_emb) -> FreshRanker:
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config("causal", max_history=5), tok.vocab).eval()
    catalog = Catalog.from_split(ml_split, table, tok.vocab)
    beam = GRRanker(model, catalog, scope="warm", beam_size=10)
    return FreshRanker(beam, ml_emb, ml_split.is_new, FreshParams())


def test_refuses_the_test_split_and_bad_budgets(ranker, ml_split) -> None:
    with pytest.raises(ConfigError, match="validation requests, not 'test'"):
        fit_fresh(ranker, ml_split, part="test")
    with pytest.raises(ConfigError, match="budget"):
        fit_fresh(ranker, ml_split, budget=1.5)


def test_fit_respects_the_budget_on_validation(ranker, ml_split) -> None:
    grid = FitGrid(n_last=(5,), decay=(0.7,), knn_temperature=(0.1,), gate_scale=(1.0,))
    params, ch, req = fit_fresh(ranker, ml_split, max_requests=600, budget=0.02, grid=grid)
    fit = params.fitted
    assert fit["part"] == "valid"
    assert fit["n_requests"] == len(req) == 600
    assert within_budget(fit["fresh"], fit["gr"], 0.02)
    assert fit["fresh"]["cold_recall20"] >= fit["gr"]["cold_recall20"]
    # the recorded validation figures are what the chosen params give on those requests
    got = ranker.fuse(ch, 20, params)
    assert quality(got.items, req) == pytest.approx(fit["fresh"])
    assert len(fit["frontier"]) == len(grid.gate_bias)
    assert 0 < params.content.temperature < 10
    assert np.isfinite(params.gate.coef).all()
