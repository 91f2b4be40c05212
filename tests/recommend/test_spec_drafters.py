"""Drafters score new items without any training step: text retrieval, and the self-drafter
whose item vectors come from SID tokens (real MovieLens split, tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.evaluate.baselines.textknn import TextKNNRanker
from freshrec.model.base import build_model
from freshrec.model.batches import request_history_tokens
from freshrec.recommend.spec import SelfDrafter, TextDrafter, train_self_drafter
from model_helpers import ARCHS, tiny_config

H = 5


def _snapshot(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _requests(split, n: int = 16):
    return split.valid.subset(np.arange(n))


def test_text_drafter_scores_new_items_like_text_knn(ml_split, ml_emb):
    reqs = _requests(ml_split)
    hist = torch.from_numpy(ml_split.histories(reqs, H))
    scores = TextDrafter(ml_emb, n_last=5).score(hist, None)
    new = torch.from_numpy(np.asarray(ml_split.is_new))
    assert scores.shape == (len(reqs), ml_split.dataset.n_items)
    assert torch.isfinite(scores[:, new]).all()
    # same ranking as the text-kNN baseline with the same history
    base = TextKNNRanker(ml_emb, n_last=5, history_len=H).rank(ml_split, reqs, top_k=10)
    rows, cols = torch.nonzero(hist >= 0, as_tuple=True)
    scores[rows, hist[rows, cols]] = float("-inf")
    assert np.array_equal(torch.topk(scores, 10).indices.numpy(), base)


@pytest.fixture(scope="module", params=ARCHS)
def self_drafter(request, ml_split, ml_sids) -> tuple[SelfDrafter, list[torch.Tensor], list]:
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config(request.param, max_history=H), tok.vocab).eval()
    before = _snapshot(model)
    log: list[dict] = []
    drafter = train_self_drafter(model, ml_split, table, steps=4, batch_size=64, log=log)
    return drafter, before, log


def test_self_drafter_trains_heads_only(self_drafter):
    drafter, before, log = self_drafter
    assert _same(before, _snapshot(drafter.model))  # the GR model is untouched
    assert log[-1]["step"] == 4
    assert np.isfinite(log[-1]["loss"])


def test_self_drafter_scores_new_items_from_sids(self_drafter, ml_split, ml_sids):
    drafter, _, _ = self_drafter
    tok, table = ml_sids
    model = drafter.model
    reqs = _requests(ml_split)
    hist = request_history_tokens(ml_split, reqs, table.tokens(tok.vocab), H, tok.vocab)
    params = _snapshot(model, drafter.heads)
    scores = drafter.score(torch.from_numpy(ml_split.histories(reqs, H)), hist)
    assert _same(params, _snapshot(model, drafter.heads))  # scoring changes nothing
    new = np.asarray(ml_split.is_new, dtype=bool)
    assert torch.isfinite(scores[:, torch.from_numpy(new & table.assigned_mask)]).all()
    # an item's vector is a function of its SID codes only: a new item sharing the codes of
    # a warm item (another collision digit) gets exactly that item's vector
    codes = {tuple(c): i for i, c in enumerate(table.codes.tolist()) if not new[i]}
    pair = next(
        (codes[tuple(c)], j)
        for j, c in enumerate(table.codes.tolist())
        if new[j] and tuple(c) in codes
    )
    vec = drafter.item_vectors()
    torch.testing.assert_close(vec[pair[0]], vec[pair[1]])
    # the user side is the GR model's own history representation
    assert model.history_states(hist).shape == (len(reqs), model.config.d_model)


def test_self_drafter_new_catalog_rows_and_save_load(self_drafter, ml_split, ml_sids, tmp_path):
    drafter, _, _ = self_drafter
    tok, table = ml_sids
    new = np.flatnonzero(np.asarray(ml_split.is_new) & table.assigned_mask)[:5]
    # the catalog before the new items got SIDs: they are not draftable ...
    older = table.tokens(tok.vocab).copy()
    older[new] = -1
    reqs = _requests(ml_split, 4)
    hist_items = torch.from_numpy(ml_split.histories(reqs, H))
    hist = request_history_tokens(ml_split, reqs, table.tokens(tok.vocab), H, tok.vocab)
    other = SelfDrafter(drafter.model, drafter.heads, older)
    assert torch.isneginf(other.score(hist_items, hist)[:, new]).all()
    # ... and are scored as soon as they have SIDs, with no training step in between
    other.set_items(table.tokens(tok.vocab))
    fresh = other.score(hist_items, hist)
    assert torch.isfinite(fresh[:, new]).all()
    drafter.save(tmp_path / "heads")
    loaded = SelfDrafter.load(tmp_path / "heads", drafter.model, table.tokens(tok.vocab))
    torch.testing.assert_close(loaded.score(hist_items, hist), fresh)


def test_self_drafter_finetune_changes_model(ml_split, ml_sids):
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config("tiger", max_history=H), tok.vocab).eval()
    before = _snapshot(model)
    drafter = train_self_drafter(
        model, ml_split, table, steps=2, batch_size=32, negatives="catalog", finetune_model=True
    )
    assert not _same(before, _snapshot(model))
    assert not model.training
    assert drafter.model is model
