"""Baselines on the real MovieLens default time split, on small seeded samples of requests."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.data.schema import Split
from freshrec.evaluate import evaluate_ranker, history_pairs, sample_requests
from freshrec.evaluate.baselines import (
    PopularityRanker,
    SASRecConfig,
    SASRecRanker,
    TextKNNRanker,
)

N_REQ = 1000


def _assert_no_history_items(split: Split, ranker: object, ranked: np.ndarray, req) -> None:
    rows, items = history_pairs(split, req, ranker.history_len)
    n_items = split.dataset.n_items
    ranked_keys = np.nonzero(ranked >= 0)[0] * n_items + ranked[ranked >= 0]
    assert not np.isin(rows * n_items + items, ranked_keys).any()


def test_popularity_never_recommends_new_items(ml_split: Split) -> None:
    req, _ = sample_requests(ml_split.test, N_REQ, seed=0)
    ranker = PopularityRanker()
    ranked = ranker.rank(ml_split, req, top_k=50)
    assert (ranked >= 0).all()
    assert not ml_split.is_new[ranked].any()
    _assert_no_history_items(ml_split, ranker, ranked, req)
    res = evaluate_ranker(ranker, ml_split, "test", max_requests=N_REQ, seed=0)
    assert res.metrics.cold.n > 0
    assert res.metrics.cold.recall[50] == 0.0
    assert res.metrics.exposure[50] == 0.0
    assert res.metrics.warm.recall[20] > 0.02
    assert res.sample_seed == 0
    assert res.n_requests == N_REQ


def test_textknn_reaches_cold_items(ml_split: Split, ml_embeddings: np.ndarray) -> None:
    req, _ = sample_requests(ml_split.test, N_REQ, seed=0)
    ranker = TextKNNRanker(ml_embeddings)
    ranked = ranker.rank(ml_split, req, top_k=50)
    _assert_no_history_items(ml_split, ranker, ranked, req)
    res = evaluate_ranker(ranker, ml_split, "test", max_requests=N_REQ, seed=0)
    assert res.metrics.cold.recall[50] > 0
    assert res.metrics.warm.recall[50] > 0
    assert res.metrics.exposure[10] > 0

    only_new = TextKNNRanker(ml_embeddings, only_new=True)
    ranked_new = only_new.rank(ml_split, req, top_k=50)
    assert ml_split.is_new[ranked_new[ranked_new >= 0]].all()
    res_new = evaluate_ranker(only_new, ml_split, "test", max_requests=N_REQ, seed=0)
    assert res_new.metrics.warm.recall[50] == 0.0
    assert res_new.metrics.cold.recall[50] > res.metrics.cold.recall[50] / 2


@pytest.mark.slow
def test_sasrec_trains_and_beats_random_on_warm(ml_split: Split) -> None:
    cfg = SASRecConfig(
        max_len=20, history_len=20, dim=32, n_layers=1, n_heads=1, batch_size=64, max_steps=300,
        eval_every=100, valid_requests=300, time_budget_s=None, seed=0,
    )  # fmt: skip
    ranker = SASRecRanker(cfg).fit(ml_split)
    assert ranker.info["steps"] == 300
    res = evaluate_ranker(ranker, ml_split, "test", max_requests=N_REQ, seed=0)
    n_warm = int((~ml_split.is_new).sum())
    random_recall = 50 / n_warm  # expected Recall@50 of a random warm ranking
    assert res.metrics.warm.recall[50] > 3 * random_recall
    assert res.metrics.cold.recall[50] == 0.0  # new items are outside its embedding table
    assert res.metrics.exposure[50] == 0.0
    assert res.catalog == "warm"


def test_sasrec_is_seeded(ml_split: Split) -> None:
    req, _ = sample_requests(ml_split.valid, 50, seed=1)
    cfg = SASRecConfig(
        max_len=10,
        history_len=10,
        dim=16,
        n_layers=1,
        n_heads=1,
        max_steps=3,
        valid_requests=20,
        seed=3,
    )
    a = SASRecRanker(cfg).fit(ml_split).rank(ml_split, req, top_k=10)
    b = SASRecRanker(cfg).fit(ml_split).rank(ml_split, req, top_k=10)
    assert np.array_equal(a, b)
