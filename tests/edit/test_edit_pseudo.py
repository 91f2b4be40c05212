"""Pseudo-requests on the real MovieLens split: training-period contexts of warm text
neighbours only, seeded, capped per item, most similar neighbours first."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.edit.pseudo import nearest_warm, pseudo_requests, training_contexts
from freshrec.errors import ConfigError, UnknownItemError


@pytest.fixture(scope="module")
def new_items(ml_split) -> np.ndarray:
    new = np.flatnonzero(ml_split.is_new)
    return np.sort(np.random.default_rng(0).choice(new, 60, replace=False))


def test_contexts_are_training_period_and_warm_neighbours(ml_split, ml_emb, new_items) -> None:
    pr = pseudo_requests(ml_split, ml_emb, new_items, n_neighbors=10, n_contexts=10, seed=0)
    assert len(pr) > 0
    # every context lies inside the user's training period and has a history
    assert (pr.pos >= 1).all()
    assert (pr.pos < ml_split.train_len[pr.user]).all()
    # the borrowed context really was a training interaction with the (warm) neighbour
    target = ml_split.seq_items[ml_split.seq_offsets[pr.user] + pr.pos]
    np.testing.assert_array_equal(target, pr.neighbor)
    assert not ml_split.is_new[pr.neighbor].any()
    assert ml_split.is_new[pr.item].all()
    # histories built from these requests only contain training-period (warm) items
    hist = ml_split.histories(pr.requests(), 20)
    assert not ml_split.is_new[hist[hist >= 0]].any()
    # at most n_contexts per item, and rows grouped by item in the given order
    _, counts = np.unique(pr.item, return_counts=True)
    assert counts.max() <= 10
    np.testing.assert_array_equal(np.unique(pr.item), np.intersect1d(new_items, pr.item))
    assert (np.diff(np.searchsorted(new_items, pr.item)) >= 0).all()
    # neighbours are the items' nearest warm items by cosine (brute force on a few items)
    emb = ml_emb / np.linalg.norm(ml_emb, axis=1, keepdims=True)
    warm_ctx = np.flatnonzero(
        ~ml_split.is_new & (np.bincount(training_contexts(ml_split)[2], minlength=len(emb)) > 0)
    )
    for c in new_items[:5]:
        sims = emb[warm_ctx] @ emb[c]
        top10 = set(warm_ctx[np.argsort(-sims)[:10]].tolist())
        assert set(pr.neighbor[pr.item == c].tolist()) <= top10
        np.testing.assert_allclose(
            pr.sim[pr.item == c], emb[pr.neighbor[pr.item == c]] @ emb[c], rtol=1e-5
        )


def test_round_robin_prefers_most_similar_neighbours(ml_split, ml_emb, new_items) -> None:
    pr = pseudo_requests(ml_split, ml_emb, new_items, n_neighbors=10, n_contexts=4, seed=0)
    nbr, _ = nearest_warm(
        ml_emb,
        new_items,
        np.flatnonzero(
            ~ml_split.is_new
            & (np.bincount(training_contexts(ml_split)[2], minlength=len(ml_emb)) > 0)
        ),
        10,
    )
    for i, c in enumerate(new_items):
        # with 4 slots and 10 neighbours that all have contexts: the 4 most similar, one each
        np.testing.assert_array_equal(pr.neighbor[pr.item == c], nbr[i, :4])
    # with more slots than neighbours, each neighbour contributes before any repeats
    pr2 = pseudo_requests(ml_split, ml_emb, new_items, n_neighbors=3, n_contexts=7, seed=0)
    for c in new_items[:10]:
        got = pr2.neighbor[pr2.item == c]
        assert len(set(got[:3].tolist())) == min(3, len(got))


def test_seeded(ml_split, ml_emb, new_items) -> None:
    a = pseudo_requests(ml_split, ml_emb, new_items, seed=0)
    b = pseudo_requests(ml_split, ml_emb, new_items, seed=0)
    c = pseudo_requests(ml_split, ml_emb, new_items, seed=1)
    for f in ("user", "pos", "item", "neighbor"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert not (np.array_equal(a.user, c.user) and np.array_equal(a.pos, c.pos))
    np.testing.assert_array_equal(a.item, c.item)  # same items, different contexts
    np.testing.assert_array_equal(a.neighbor, c.neighbor)  # same neighbours (round-robin)


def test_random_contexts_and_input_checks(ml_split, ml_emb, new_items) -> None:
    pr = pseudo_requests(ml_split, ml_emb, new_items, n_contexts=5, contexts="random", seed=0)
    assert len(pr) == 5 * len(new_items)
    assert (pr.pos >= 1).all()
    assert (pr.pos < ml_split.train_len[pr.user]).all()
    assert (pr.neighbor == -1).all()
    warm = np.flatnonzero(~ml_split.is_new)[:2]
    with pytest.raises(ConfigError, match="warm"):
        pseudo_requests(ml_split, ml_emb, warm)
    with pytest.raises(UnknownItemError):
        pseudo_requests(ml_split, ml_emb, np.array([len(ml_emb)]))
    with pytest.raises(ConfigError, match="more than once"):
        pseudo_requests(ml_split, ml_emb, np.array([new_items[0], new_items[0]]))
