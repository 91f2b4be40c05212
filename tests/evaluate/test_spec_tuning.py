"""`tune_gamma` / `metric_value` (evaluate.spec_tuning) on real MovieLens data with a fresh tiny
tiger verifier and the text drafter."""

from __future__ import annotations

import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.evaluate.spec_tuning import metric_value, tune_gamma
from freshrec.model.base import build_model
from freshrec.recommend.spec import SpecRanker, TextDrafter
from model_helpers import tiny_config

INF = float("inf")


@pytest.fixture(scope="module")
def real(ml_split, ml_emb, ml_sids) -> dict:
    """A fresh tiny tiger model over the real SID vocabulary, and the spec ranker on it."""
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config("tiger", max_history=5), tok.vocab).eval()
    ranker = SpecRanker(model, TextDrafter(ml_emb), table, n_drafts=20, beam_size=5, batch_size=16)
    return {"model": model, "table": table, "ranker": ranker}


def test_tune_gamma_uses_validation(real, ml_split):
    ranker = real["ranker"]
    grid = (-INF, -4.5, -4.0, INF)
    tuning = tune_gamma(ranker, ml_split, "valid", grid, max_requests=32, metric="N@10")
    assert tuning.best_gamma in grid
    assert ranker.gamma == tuning.best_gamma
    assert [g for g, _ in tuning.results] == list(grid)
    assert all(r.part == "valid" and r.n_requests == 32 for _, r in tuning.results)
    accepted = [r.extra["accepted_mean"] for _, r in tuning.results]
    assert accepted[0] == 50  # -inf accepts every draft
    assert accepted[-1] == 0  # +inf none
    # both final orders from the same trace; the best one is applied to the ranker
    tuning = tune_gamma(
        ranker, ml_split, "valid", grid, max_requests=32, orders=("score", "accept")
    )
    assert [r.extra["order"] for _, r in tuning.results] == ["score"] * 4 + ["accept"] * 4
    assert ranker.order == tuning.best_order
    assert tuning.best().extra == {**tuning.best().extra, "gamma": tuning.best_gamma}
    best = tuning.best()
    warm, cold = best.metrics.warm.recall[20], best.metrics.cold.recall[20]
    assert metric_value(best, "macro:R@20") == pytest.approx((warm + cold) / 2)
    assert metric_value(best, "cold:N@10") == best.metrics.cold.ndcg[10]
    with pytest.raises(ConfigError):
        metric_value(best, "R@7")
    with pytest.raises(ConfigError, match="validation"):
        tune_gamma(ranker, ml_split, "test", grid)
