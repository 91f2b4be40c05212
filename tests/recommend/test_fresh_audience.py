"""The audience slot: closest items, audience shares and the promotion against plain
references, and the fused ranker placing an added film in the top-10 of a history made of
its closest films even with the freshness gate shut."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freshrec.errors import CheckpointError
from freshrec.recommend.fresh import AudienceParams, FreshParams, FreshRanker
from freshrec.recommend.fresh.audience import audience_radii, audience_share, promote
from freshrec.recommend.fresh.content import normalise_rows
from freshrec.recommend.fresh.fusion import Fused


def test_radii_and_shares_match_the_k_closest_items(ml_emb: np.ndarray) -> None:
    emb = normalise_rows(ml_emb[:400])
    e = emb.numpy()
    catalog = np.arange(0, 400, 2)  # the recommendable items (0 is also a candidate)
    items = np.array([0, 5, 399])
    radii = audience_radii(emb, items, catalog, 7, len(catalog), chunk=2)
    closest = []
    for r, i in zip(radii, items, strict=True):
        sims = e[catalog] @ e[i]
        sims[catalog == i] = -np.inf
        closest.append(set(catalog[np.argsort(-sims, kind="stable")[:7]].tolist()))
        assert r == pytest.approx(np.sort(sims)[-7], abs=1e-6)
    # a history with 6 of item 5's closest items after 4 unrelated ones; a one-item history
    near = sorted(closest[1])[:6]
    far = [x for x in catalog.tolist() if all(x not in c for c in closest)][:4]
    hist = np.array([far + near, [-1] * 9 + [near[0]]])
    cand = np.array([[0, 5, 399, -1], [5, 399, -1, -1]])
    rad = np.full(cand.shape, np.inf, dtype=np.float32)
    for col, i in enumerate(items):
        rad[cand == i] = radii[col]
    got = audience_share(emb, hist, cand, rad, last=8, chunk=1)
    want = np.zeros(cand.shape)
    for r in range(len(hist)):
        for j, c in enumerate(cand[r]):
            if c >= 0:
                members = closest[items.tolist().index(c)]
                want[r, j] = sum(h in members for h in hist[r, -8:] if h >= 0) / 8
    assert np.allclose(got, want)
    assert got[0, 1] == 6 / 8
    assert got[1, 0] == 1 / 8  # a short history is not "full"
    # a sample of the catalog: the k-th closest of the catalog ~ the (k r / n)-th of the sample
    sample = catalog[::2]
    half = audience_radii(emb, items, sample, 14, len(catalog))
    for r, i in zip(half, items, strict=True):
        sims = e[sample] @ e[i]
        sims[sample == i] = -np.inf
        assert r == pytest.approx(np.sort(sims)[-7], abs=1e-6)


def _fused(items: list[list[int]]) -> Fused:
    it = np.array(items)
    scores = -np.arange(it.shape[1], dtype=np.float32)[None, :].repeat(len(it), 0)
    return Fused(it, scores, np.zeros(it.shape, dtype=bool))


def test_promote_moves_the_item_up_to_the_slot_and_keeps_the_rest() -> None:
    f = _fused([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 9, 4, 5]])
    item = np.array([9, 5, 9, 9])
    fire = np.array([True, True, False, True])
    out = promote(f, item, np.full(4, -7.0), fire, slot=2)
    assert out.items.tolist() == [
        [1, 9, 2, 3, 4],  # absent: inserted at position 2, the last item drops
        [1, 5, 2, 3, 4],  # below the slot: moved up, not duplicated
        [1, 2, 3, 4, 5],  # not fired
        [1, 9, 2, 4, 5],  # 9 was at position 3
    ]
    assert out.scores[0].tolist() == [0, -7, -1, -2, -3]
    assert out.scores[1][1] == -4  # a listed item keeps its score
    assert out.from_new.tolist()[0] == [False, True, False, False, False]
    # at or above the slot already, an empty candidate or slot 0: unchanged
    same = promote(f, np.array([1, -1, 2, 9]), np.zeros(4), np.ones(4, bool), slot=2)
    assert same.items.tolist()[:3] == f.items.tolist()[:3]
    assert promote(f, item, np.zeros(4), fire, slot=0) is f


class FixedBeam:
    """A GR side that always proposes the same warm items, confidently."""

    history_len = 20

    def __init__(self, items: np.ndarray) -> None:
        self.items = items

    def rank_histories(self, histories, users=None, top_k=50, *, exclude_history=True):
        n = len(histories)
        scores = np.log(np.linspace(0.2, 0.001, len(self.items)))
        return np.tile(self.items, (n, 1)), np.tile(scores, (n, 1)).astype(np.float32)


def test_an_added_film_reaches_the_top10_of_its_audience_with_the_gate_shut(
    ml_split, ml_emb
) -> None:
    is_new = np.asarray(ml_split.is_new, dtype=bool)
    films = np.random.default_rng(3).choice(np.flatnonzero(is_new), 8, replace=False)
    recommendable = ~is_new
    recommendable[films] = True
    e = ml_emb / np.linalg.norm(ml_emb, axis=1, keepdims=True)
    sims = e[films] @ e.T
    sims[:, ~recommendable] = -np.inf
    sims[np.arange(len(films)), films] = -np.inf
    hist = np.argsort(-sims, axis=1)[:, :10][:, ::-1].copy()  # each film's 10 closest items
    warm = np.flatnonzero(~is_new)
    beam = FixedBeam(warm[~np.isin(warm, hist)][:50])
    shut = FreshParams(gate_bias=-30.0)  # P(next is new) ~ 1e-13
    ranker = FreshRanker(beam, ml_emb, is_new, shut, recommendable=recommendable)
    top = ranker.rank_histories(hist, None, 10)[0]
    assert (top[:, 9] == films).all()  # exactly at the slot: the beam's top-9 stay
    assert (top[:, :9] == beam.items[:9]).all()
    off = shut.model_copy(update={"audience": AudienceParams(slot=0)})
    ranker = FreshRanker(beam, ml_emb, is_new, off, recommendable=recommendable)
    assert not np.isin(films, ranker.rank_histories(hist, None, 10)[0]).any()
    # a history of unrelated items is not the film's audience
    far = np.tile(beam.items[40:50], (len(films), 1))
    ranker = FreshRanker(beam, ml_emb, is_new, shut, recommendable=recommendable)
    assert not np.isin(films, ranker.rank_histories(far, None, 10)[0]).any()


def test_audience_params_load_with_defaults_and_bad_values_are_refused(tmp_path) -> None:
    old = FreshParams().model_dump(mode="json")
    del old["audience"]  # a calibration written before the audience slot existed
    (tmp_path / "fresh.json").write_text(json.dumps(old))
    assert FreshParams.load(tmp_path).audience == AudienceParams()
    old["audience"] = {"k": 10, "last": 10, "share": 0.0, "slot": 10}
    (tmp_path / "fresh.json").write_text(json.dumps(old))
    with pytest.raises(CheckpointError, match="share"):
        FreshParams.load(tmp_path)
