"""Protocol helpers and baselines on a tiny hand-made split (no data loader needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.data.schema import Requests, Split
from freshrec.errors import ConfigError
from freshrec.evaluate import evaluate_ranker, history_pairs, sample_requests, topk_excluding
from freshrec.evaluate.baselines import PopularityRanker, TextKNNRanker, train_item_counts


def test_history_pairs_are_full_histories(tiny_split: Split) -> None:
    rows, items = history_pairs(tiny_split, tiny_split.test)
    got = [sorted(items[rows == i].tolist()) for i in range(len(tiny_split.test))]
    assert got == [[0, 1, 2, 3], [1, 2, 6], [1, 2, 6, 7], [0, 1, 2, 3]]
    rows, items = history_pairs(tiny_split, tiny_split.test, max_len=2)
    got = [items[rows == i].tolist() for i in range(len(tiny_split.test))]
    assert got == [[2, 3], [2, 6], [6, 7], [1, 3]]


def test_topk_excluding_ties_and_neg_inf() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, float("-inf")], [0.0, 0.0, 0.0, 0.0]])
    exclude = torch.tensor([[False, False, False, False], [False, True, False, False]])
    out = topk_excluding(scores, exclude, top_k=5)
    assert out.tolist() == [[1, 2, 0, -1, -1], [0, 2, 3, -1, -1]]


def test_popularity_on_tiny_split(tiny_split: Split) -> None:
    counts = train_item_counts(tiny_split)
    # training items: u0 0 1 2, u1 1 2, u2 2 0 1 3
    assert counts.tolist() == [2, 3, 3, 1, 0, 0, 0, 0]
    ranked = PopularityRanker().rank(tiny_split, tiny_split.test, top_k=4)
    assert ranked.tolist() == [[-1] * 4, [0, 3, -1, -1], [0, 3, -1, -1], [-1] * 4]


class _Cheater:
    name = "cheater"
    catalog = "full"

    def rank(self, split: Split, requests: Requests, top_k: int = 50) -> np.ndarray:
        out = np.full((len(requests), top_k), -1, dtype=np.int64)
        out[:, 0] = split.seq_items[split.seq_offsets[requests.user]]  # first history item
        return out


def test_evaluate_ranker_rejects_history_items(tiny_split: Split) -> None:
    with pytest.raises(ConfigError, match="histories"):
        evaluate_ranker(_Cheater(), tiny_split, top_k=5, ks=(5,))


def test_evaluate_ranker_textknn_tiny(tiny_split: Split) -> None:
    emb = np.eye(8, dtype=np.float32)
    emb[6] = emb[3] + emb[6]  # new item 6 looks like item 3
    res = evaluate_ranker(TextKNNRanker(emb), tiny_split, "test", top_k=5, ks=(1, 5))
    assert res.n_requests == 4
    assert res.sample_seed is None
    assert res.metrics.cold.n == 2
    # u0's last items are 0 1 2 3 -> item 6 (shares item 3's direction) ranks first
    assert res.metrics.cold.recall[1] == pytest.approx(0.5)
    only_new = TextKNNRanker(emb, only_new=True).rank(tiny_split, tiny_split.test, top_k=5)
    assert set(only_new[only_new >= 0].tolist()) <= {6, 7}


def test_sample_requests_seeded(tiny_split: Split) -> None:
    a, ia = sample_requests(tiny_split.test, 2, seed=3)
    _, ib = sample_requests(tiny_split.test, 2, seed=3)
    assert ia.tolist() == ib.tolist()
    assert len(a) == 2
    assert list(ia) == sorted(ia)
    res = evaluate_ranker(PopularityRanker(), tiny_split, top_k=5, ks=(5,), max_requests=2)
    assert res.sample_seed == 0
    assert res.n_available == 4
