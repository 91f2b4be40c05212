"""Metrics against hand-computed values on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from freshrec.errors import ConfigError
from freshrec.evaluate.metrics import (
    Metrics,
    compute_metrics,
    hit_ranks,
    position_accuracy,
)


def _ranked() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # 4 requests, K_max = 5, catalog of 8 items, items 6 and 7 are new
    ranked = np.array(
        [
            [3, 1, 2, -1, -1],  # target 3 at rank 0
            [0, 1, 6, 4, 5],  # target 6 at rank 2 (cold)
            [-1, -1, -1, -1, -1],  # target 7: nothing ranked (cold)
            [0, 1, 2, 4, 5],  # target 7 not ranked (cold)
        ],
        dtype=np.int64,
    )
    targets = np.array([3, 6, 7, 7])
    cold = np.array([False, True, True, True])
    is_new = np.zeros(8, dtype=bool)
    is_new[[6, 7]] = True
    return ranked, targets, cold, is_new


def test_hit_ranks_and_empty_slots_never_hit() -> None:
    ranked, targets, _, _ = _ranked()
    assert hit_ranks(ranked, targets).tolist() == [0, 2, -1, -1]
    # a -1 target must not match -1 slots
    assert hit_ranks(np.array([[-1, -1]]), np.array([-1])).tolist() == [-1]


def test_recall_ndcg_by_subset() -> None:
    ranked, targets, cold, is_new = _ranked()
    m = compute_metrics(ranked, targets, cold, is_new, ks=(1, 3, 5))
    assert (m.overall.n, m.warm.n, m.cold.n) == (4, 1, 3)
    assert m.warm.recall == {1: 1.0, 3: 1.0, 5: 1.0}
    assert m.warm.ndcg[1] == 1.0
    assert m.cold.recall[1] == 0.0
    assert m.cold.recall[3] == pytest.approx(1 / 3)
    assert m.cold.ndcg[3] == pytest.approx((1 / math.log2(4)) / 3)
    assert m.overall.recall[3] == pytest.approx(2 / 4)
    assert m.overall.ndcg[5] == pytest.approx((1.0 + 1 / math.log2(4)) / 4)


def test_exposure_and_coverage() -> None:
    ranked, targets, cold, is_new = _ranked()
    m = compute_metrics(ranked, targets, cold, is_new, ks=(1, 3, 5), catalog_size=10)
    # new items in top-3 slots: only item 6 in row 1 -> 1 of 12 slots
    assert m.exposure[3] == pytest.approx(1 / 12)
    assert m.exposure[1] == 0.0
    # distinct items in top-1: {3, 0} ; top-3: {0,1,2,3,6} ; top-5: {0..6}
    assert m.coverage[1] == pytest.approx(2 / 10)
    assert m.coverage[3] == pytest.approx(5 / 10)
    assert m.coverage[5] == pytest.approx(7 / 10)


def test_to_dict_keys_and_roundtrip() -> None:
    ranked = np.tile(np.arange(50), (3, 1))
    targets = np.array([0, 19, 49])
    cold = np.array([False, False, True])
    is_new = np.zeros(60, dtype=bool)
    is_new[49:] = True
    sids = np.stack([np.arange(60) // 10, np.arange(60) % 10], axis=1)
    m = compute_metrics(ranked, targets, cold, is_new, sids=sids)
    d = m.to_dict()
    for key in ("overall/recall@20", "warm/ndcg@10", "cold/n", "exposure@10", "coverage@50"):
        assert key in d
    assert d["overall/recall@20"] == pytest.approx(2 / 3)
    assert d["cold/recall@50"] == 1.0
    assert d["cold/recall@20"] == 0.0
    assert d["warm/ndcg@20"] == pytest.approx((1.0 + 1 / math.log2(21)) / 2)
    # top-1 is item 0 (code 0) for all: right for target 0 only (19 -> code 1, 49 -> code 4)
    assert d["pos_acc/top1/p0"] == pytest.approx(1 / 3)
    assert d["exposure@50"] == pytest.approx(1 / 50)
    assert Metrics.from_dict(d).to_dict() == d


def test_empty_subset_is_nan_and_k_too_large_raises() -> None:
    ranked = np.array([[1, 2]])
    m = compute_metrics(ranked, np.array([1]), np.array([False]), np.zeros(3, bool), ks=(1, 2))
    assert m.cold.n == 0
    assert math.isnan(m.cold.recall[1])
    with pytest.raises(ConfigError):
        compute_metrics(ranked, np.array([1]), np.array([False]), np.zeros(3, bool), ks=(5,))


def test_position_accuracy_hand_made() -> None:
    target = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8, 9]])
    top1 = np.array([[1, 2, 3], [1, 2, 0], [4, 0, 6], [0, 8, 9]])
    # prefix lengths 3, 2, 1, 0
    assert position_accuracy(target, top1).tolist() == pytest.approx([3 / 4, 2 / 4, 1 / 4])
    # any of top-2: the second candidate of row 3 gets the first two tokens right
    top2 = np.stack([top1, np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [7, 8, 0]])], axis=1)
    assert position_accuracy(target, top2).tolist() == pytest.approx([1.0, 3 / 4, 1 / 4])
    # -1 rows (empty slots / no SID) never match
    assert position_accuracy(target[:1], -np.ones((1, 3), int)).tolist() == [0.0, 0.0, 0.0]


def test_pos_acc_from_ranked_items_uses_sid_table() -> None:
    sids = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    ranked = np.array([[1, 0], [2, -1], [-1, -1]])
    targets = np.array([0, 3, 2])
    m = compute_metrics(
        ranked,
        targets,
        np.zeros(3, bool),
        np.zeros(4, bool),
        ks=(1, 2),
        pos_acc_ks=(1, 2),
        sids=sids,
    )
    # top1: item1 (0,1) vs (0,0) -> 1 ; item2 (1,0) vs (1,1) -> 1 ; empty -> 0
    assert m.pos_acc["top1"] == pytest.approx([2 / 3, 0.0])
    # top2: row0 contains item 0 -> 2 ; row1 -> 1 ; row2 -> 0
    assert m.pos_acc["top2"] == pytest.approx([2 / 3, 1 / 3])
