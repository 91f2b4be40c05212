"""The fused ranker's pieces against plain references: mixture and quota fusion, the
content channel's soft kNN, the freshness gate and the ScopeRec-style mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.errors import CheckpointError, ConfigError
from freshrec.recommend.fresh.content import ContentParams, ContentScorer, reference_items
from freshrec.recommend.fresh.fusion import mix, quota, warm_expert
from freshrec.recommend.fresh.gate import DEFAULT_FEATURES, FEATURES, LogisticGate, gate_features
from freshrec.recommend.fresh.params import FreshParams, GateParams
from freshrec.recommend.fresh.scope import ScopeParams, scope_mix


def _reference_mix(bi, bs, ni, nl, z, top_k, head):
    """One request at a time, with a dict: the mixture's definition."""
    out = []
    for r in range(len(bi)):
        lsig = -np.logaddexp(0, -z[r])
        lsig_neg = -np.logaddexp(0, z[r])
        best: dict[int, float] = {}
        for i, s in zip(bi[r], bs[r], strict=True):
            if i >= 0:
                best[i] = max(best.get(i, -np.inf), s + lsig_neg)
        for i, s in zip(ni[r], nl[r], strict=True):
            if i >= 0:
                best[i] = max(best.get(i, -np.inf), s + lsig)
        protected = [i for i in bi[r][:head] if i >= 0]
        rest = sorted((i for i in best if i not in protected), key=lambda i: -best[i])
        out.append((protected + rest)[:top_k])
    return out


def test_mix_matches_reference_with_duplicates_and_head() -> None:
    rng = np.random.default_rng(0)
    n, K, M = 30, 8, 6
    bi = np.stack([rng.choice(40, K, replace=False) for _ in range(n)])
    bs = np.sort(rng.normal(-5, 2, (n, K)), axis=1)[:, ::-1].copy()
    ni = np.stack([rng.choice(np.arange(30, 60), M, replace=False) for _ in range(n)])
    nl = rng.normal(-6, 2, (n, M))
    ni[0, 0] = -1  # an empty slot
    z = rng.normal(0, 2, n)
    for head in (0, 2):
        got = mix(bi, bs, ni, nl, z, top_k=10, head=head)
        want = _reference_mix(bi, bs, ni, nl, z, 10, head)
        for r in range(n):
            assert [i for i in got.items[r] if i >= 0] == want[r]
        for r in range(n):  # from_new: only items the beam does not hold
            want_new = np.isin(got.items[r], ni[r]) & ~np.isin(got.items[r], bi[r])
            assert (got.from_new[r] == (want_new & (got.items[r] >= 0))).all()


def test_mix_extreme_gate_keeps_the_beam_order() -> None:
    bi = np.array([[3, 1, 2]])
    bs = np.array([[-1.0, -2.0, -3.0]])
    ni = np.array([[7, 8]])
    nl = np.array([[-0.1, -0.2]])
    assert mix(bi, bs, ni, nl, np.array([-50.0]), 5).items.tolist() == [[3, 1, 2, 7, 8]]
    assert mix(bi, bs, ni, nl, np.array([50.0]), 5).items.tolist() == [[7, 8, 3, 1, 2]]
    assert mix(bi, bs, ni, nl, np.array([50.0]), 5, head=1).items.tolist() == [[3, 7, 8, 1, 2]]


def test_quota_fills_the_last_slots_and_skips_beam_items() -> None:
    bi = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    bs = -np.arange(1.0, 5.0)[None].repeat(2, 0)
    ni = np.array([[9, 8, 7], [2, 9, 8]])  # row 1's first new item is also in the beam
    ns = -np.arange(1.0, 4.0)[None].repeat(2, 0)
    out = quota(bi, bs, ni, ns, np.array([1, 2]), top_k=4)
    assert out.items.tolist() == [[1, 2, 3, 9], [1, 2, 9, 8]]
    assert out.from_new.tolist() == [[False] * 3 + [True], [False] * 2 + [True] * 2]
    assert quota(bi, bs, ni, ns, 0, top_k=4).items.tolist() == bi.tolist()


def test_content_scores_match_a_plain_loop(ml_emb: np.ndarray) -> None:
    params = ContentParams(n_last=4, decay=0.5, knn_temperature=0.1, temperature=0.05)
    scorer = ContentScorer(ml_emb, params)
    hist = np.array([[-1, -1, 5, 9, 14], [1, 2, 3, 4, 5], [-1, -1, -1, -1, -1]])
    items = np.array([0, 100, 2000, 7])
    got = scorer.scores(hist, items)
    e = ml_emb / np.linalg.norm(ml_emb, axis=1, keepdims=True)
    for r, row in enumerate(hist):
        recent = [i for i in row[-4:] if i >= 0]
        if not recent:
            assert (got[r] == 0).all()
            continue
        w = np.array([0.5 ** (len(row[-4:]) - 1 - k) for k, i in enumerate(row[-4:]) if i >= 0])
        w /= w.sum()
        for c, j in enumerate(items):
            want = 0.1 * np.log(
                sum(wk * np.exp(e[i] @ e[j] / 0.1) for wk, i in zip(w, recent, strict=True))
            )
            assert got[r, c] == pytest.approx(want, abs=1e-4)


def test_row_scores_and_the_normaliser_leave_out_history_items(ml_emb: np.ndarray) -> None:
    scorer = ContentScorer(ml_emb, ContentParams(n_last=4, temperature=0.05))
    hist = np.array([[-1, 5, 9, 14], [1, 2, 3, 4]])
    beam = np.array([[7, 100, -1], [2000, 5, 9]])
    got = scorer.row_scores(hist, beam)
    for r in range(2):
        want = scorer.scores(hist[r : r + 1], np.clip(beam[r], 0, None))[0]
        real = beam[r] >= 0
        assert got[r][real] == pytest.approx(want[real], abs=1e-5)
        assert np.isneginf(got[r][~real]).all()
    # a request's own history items are not in its normaliser: the catalog's log-probs sum
    # to one over the items that are not in the history
    every = np.arange(len(ml_emb))
    lp = scorer.log_probs(hist, every, every, len(every)).astype(np.float64)
    for r in range(2):
        rest = np.setdiff1d(every, hist[r][hist[r] >= 0])
        assert np.exp(lp[r, rest]).sum() == pytest.approx(1.0, abs=1e-3)


def test_warm_expert_reranks_by_content_and_keeps_the_beam_mass() -> None:
    items = np.array([[4, 5, 6, -1], [1, 2, 3, 7]])
    gr = np.log(np.array([[0.5, 0.3, 0.1, 1.0], [0.4, 0.3, 0.2, 0.1]]))
    content = np.array([[-3.0, 0.0, -1.0, 9.0], [0.0, 0.0, 0.0, 5.0]])
    same_items, same_scores = warm_expert(items, gr, content, 0.0)
    assert same_items is items
    assert same_scores is gr
    out_items, out_scores = warm_expert(items, gr, content, 1.0)
    # row 0: 0.5e-3 < 0.1e-1 < 0.3 -> 5, 6, 4, and the empty slot stays last
    assert out_items.tolist() == [[5, 6, 4, -1], [7, 1, 2, 3]]
    assert np.isneginf(out_scores[0, -1])
    for r in range(2):
        real = items[r] >= 0
        before = np.logaddexp.reduce(gr[r][real])
        assert np.logaddexp.reduce(out_scores[r][out_items[r] >= 0]) == pytest.approx(before)


def test_reference_sample_is_seeded_and_bounded() -> None:
    cand = np.arange(1000)
    assert (reference_items(cand, 2000) == cand).all()
    assert (reference_items(cand[::-1], 2000) == cand).all()  # sorted
    a, b = reference_items(cand, 100, seed=3), reference_items(cand, 100, seed=3)
    assert len(a) == 100
    assert (a == b).all()
    assert np.isin(a, cand).all()


def test_gate_fit_learns_the_signal_and_features_are_right() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, len(FEATURES)))
    y = rng.random(2000) < 1 / (1 + np.exp(-(2 * x[:, 0] - 1)))
    gate = LogisticGate.fit(x, y, l2=1e-4)
    assert gate.coef[0] > 1.5
    assert max(abs(c) for c in gate.coef[1:]) < 0.3
    with pytest.raises(ConfigError, match="both new and warm"):
        LogisticGate.fit(x, np.zeros(2000, bool))
    with pytest.raises(ConfigError, match="unknown gate features"):
        LogisticGate(features=("share_new_10", "bogus"), mean=[0, 0], std=[1, 1], coef=[0, 0])

    is_new = np.array([False, False, True, True])
    hist = np.array([[-1, 0, 2, 1], [2, 3, 3, 2]])
    ws = np.array([[-1.0, -2.0], [-3.0, -np.inf]])
    lp = np.log(np.array([[0.1, 0.2], [0.3, 0.1]]))
    f = dict(zip(FEATURES, gate_features(hist, is_new, ws, lp).T, strict=True))
    assert f["share_new_10"].tolist() == pytest.approx([1 / 3, 1.0])
    assert f["last_new"].tolist() == [0.0, 1.0]
    assert f["new_mass"].tolist() == pytest.approx(np.log([0.3, 0.4]).tolist())
    assert f["gr_top"].tolist() == [-1.0, -3.0]
    assert f["log_history"].tolist() == pytest.approx(np.log1p([3, 4]).tolist())


def test_params_round_trip_and_clear_errors(tmp_path) -> None:
    p = FreshParams(gate_bias=-1.5, head=2)
    p.save(tmp_path)
    assert FreshParams.load(tmp_path) == p
    assert FreshParams.load_or_default(tmp_path / "nowhere") == FreshParams()
    (tmp_path / "fresh.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        FreshParams.load(tmp_path)
    (tmp_path / "fresh.json").write_text('{"format": "freshrec-fresh/1", "head": -1}')
    with pytest.raises(CheckpointError, match="head"):
        FreshParams.load(tmp_path)
    # the default gate leaves out new_mass; a file fitted with it still loads and runs
    assert "new_mass" not in FreshParams().gate.features
    assert set(DEFAULT_FEATURES) == set(FEATURES) - {"new_mass"}
    old = FreshParams(
        gate=GateParams(
            features=list(FEATURES),
            mean=[0.0] * 8,
            std=[1.0] * 8,
            coef=[0.0, 0, 0, 1.0, 0, 0, 0, 0],
        )
    )
    old.save(tmp_path)
    gate = FreshParams.load(tmp_path).gate.build()
    assert gate.logit(np.arange(8.0)[None]).tolist() == [3.0]
    (tmp_path / "fresh.json").write_text('{"format": "other"}')
    with pytest.raises(CheckpointError, match="not a freshrec-fresh/1"):
        FreshParams.load(tmp_path)


def test_scope_mix_keeps_branches_without_new_items() -> None:
    # 2 first codes; warm items 0, 1 (code 0 and 1), new items 2, 3 (code 1)
    first_code = np.array([0, 1, 1, 1])
    emb = torch.eye(4)
    query = np.array([[0.0, 0.0, 1.0, 0.0]], dtype=np.float32)  # matches new item 2
    lp0 = np.log(np.array([[0.6, 0.4]]))
    bi, bs = np.array([[0, 1]]), np.log(np.array([[0.5, 0.3]]))
    p = ScopeParams(alpha_max=0.5, center=0.5, width=0.05, temperature=0.05)
    out = scope_mix(
        lp0, bi, bs, first_code, query, emb, np.array([2, 3]), np.zeros((1, 2), bool), p, 4
    )
    scores = dict(zip(out.items[0].tolist(), out.scores[0].tolist(), strict=True))
    assert scores[0] == pytest.approx(np.log(0.5))  # branch 0 has no new item: unchanged
    alpha = 0.5 / (1 + np.exp(-(1 - 0.5) / 0.05))
    assert scores[1] == pytest.approx(np.log(0.3 * (1 - alpha)), abs=1e-5)
    r2 = np.exp(1 / 0.05) / (np.exp(1 / 0.05) + 1)
    assert scores[2] == pytest.approx(np.log(0.4 * alpha * r2), abs=1e-4)
