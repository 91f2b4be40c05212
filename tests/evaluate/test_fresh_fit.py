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
    with pytest.raises(ConfigError, match="unknown objective 'recall'"):
        fit_fresh(ranker, ml_split, objective="recall")


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
    # the default objective: the best overall R@20 among the settings within the budget
    ok = [r for r in fit["frontier"] if within_budget(r, fit["gr"], 0.02)]
    if ok:
        assert fit["objective"] == "overall"
        assert fit["fresh"]["overall_recall20"] == max(r["overall_recall20"] for r in ok)
    assert 0 < params.content.temperature < 10
    # the warm expert's weight: the best warm quality of the grid on these requests
    rows = {r["warm_weight"]: r for r in fit["warm_expert"]}
    assert sorted(rows) == sorted(grid.warm_weight)

    def gain(r):
        return sum(r[k] / max(fit["gr"][k], 1e-12) for k in ("warm_recall20", "warm_ndcg10"))

    assert gain(rows[params.warm_weight]) == max(gain(r) for r in rows.values())
    assert rows[0.0]["warm_recall20"] == pytest.approx(fit["gr"]["warm_recall20"])
    assert np.isfinite(params.gate.coef).all()
