"""`Session`, the one recommend path, on a workspace made of the shared real MovieLens fixtures
and a tiny tiger checkpoint: the same top-K as `beam_search` / `SpecRanker` / `FreshRanker`
called directly (warm and full catalogs, with an edit pack, spec and fresh modes), the
service's wider-beam retry, per-row top_k, catalog swaps, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec import pipeline
from freshrec.errors import ConfigError, UnknownItemError
from freshrec.model.batches import history_tokens
from freshrec.model.checkpoint import checkpoint_identity, load_checkpoint
from freshrec.model.edit_packs import EditPack, EditStack
from freshrec.recommend import Catalog, Session, beam_search
from freshrec.recommend.gr import drop_items
from freshrec.recommend.session import user_history
from freshrec.recommend.spec import SpecRanker, TextDrafter
from freshrec.semid.trie import SidTrie
from model_helpers import N_ITEMS, make_split, tiny_workspace

BEAM, K = 10, 10


@pytest.fixture(scope="module")
def ws(tmp_path_factory, ml_split, ml_sids, ml_emb) -> dict:
    """recipe (eval beam 10) + workspace (split, tokenizer, embedding cache) + checkpoint."""
    tok, table = ml_sids
    work = tmp_path_factory.mktemp("sessionwork")
    recipe, _, ckpt = tiny_workspace(work, ml_split, tok, table, [f"eval.beam_size={BEAM}"])
    users = list(range(0, 600, 50))  # 12 dataset users
    hist = np.concatenate(
        [user_history(ml_split, ml_split.dataset.user_ids[u], 5)[1] for u in users]
    )
    return {"recipe": recipe, "ckpt": ckpt, "hist": hist, "users": np.asarray(users), "work": work}


def reference(model, table, hist, users, mask=None, beam=BEAM, k=K, is_new=None):
    """beam_search called directly (the old GRRanker path): history excluded; with `is_new`
    (bool[n_items]) those items are dropped from the prompt (the cpu recipe's
    eval.prompt_new_items=false)."""
    prompt = hist if is_new is None else drop_items(hist, is_new)
    tok = history_tokens(prompt, table.tokens(model.vocab), users, model.vocab)
    trie = SidTrie.from_table(table.sids, model.vocab, mask)
    out = beam_search(model, tok, trie, beam, k, torch.from_numpy(hist))
    return out.items.numpy(), out.scores.numpy()


@pytest.mark.parametrize("scope", ["warm", "full"])
def test_beam_equals_beam_search(scope, ws, ml_split, ml_sids):
    _, table = ml_sids
    with Session.open(ws["recipe"], ws["ckpt"]) as session:
        recs = session.recommend(ws["hist"], K, "beam", users=ws["users"], scope=scope)
        assert session.tokenizer_fingerprint == ml_sids[0].fingerprint
    model = load_checkpoint(ws["ckpt"])
    mask = ~ml_split.is_new if scope == "warm" else None
    is_new = None if ws["recipe"].eval.prompt_new_items else ml_split.is_new
    items, scores = reference(model, table, ws["hist"], ws["users"], mask, is_new=is_new)
    assert np.array_equal(recs.items, items)
    np.testing.assert_allclose(recs.scores, scores, rtol=1e-5)
    assert recs.scores.dtype == np.float32
    ok = recs.items >= 0
    assert np.array_equal(recs.is_new, ok & ml_split.is_new[recs.items.clip(min=0)])
    if scope == "warm":
        assert not recs.is_new.any()
    # the CLI's path (pipeline.recommend_user) is this session's first row
    user = ml_split.dataset.user_ids[ws["users"][0]]
    rows = pipeline.recommend_user(ws["recipe"], ws["work"] / "run", user, K, scope, mode="beam")
    index = ml_split.dataset.items.index_of()
    assert [index[r[0]] for r in rows] == [i for i in recs.items[0].tolist() if i >= 0]


def test_drop_items_right_aligns_the_rest_and_keeps_an_all_dropped_row():
    hist = np.array([[-1, 3, 5, 7], [2, 5, 4, 6], [-1, -1, 5, 6]])
    drop = np.zeros(8, dtype=bool)
    drop[[5, 6]] = True
    assert drop_items(hist, drop).tolist() == [[-1, -1, 3, 7], [-1, -1, 2, 4], [-1, -1, 5, 6]]


def test_prompt_without_new_items(ws, ml_split, ml_sids):
    """eval.prompt_new_items=false: the model reads the history minus the new items (the
    prompt of the beam search, and of the spec mode's), while the exclusion still covers every
    history item."""
    _, table = ml_sids
    new = np.flatnonzero(ml_split.is_new)
    hist = ws["hist"].copy()
    hist[::2, -1] = new[: len(hist[::2])]  # a new item last in every other row
    hist[1::4, -3] = new[-len(hist[1::4]) :]
    r = ws["recipe"]
    off = r.model_copy(update={"eval": r.eval.model_copy(update={"prompt_new_items": False})})
    on = r.model_copy(update={"eval": r.eval.model_copy(update={"prompt_new_items": True})})
    with Session.open(off, ws["ckpt"]) as session:
        recs = session.recommend(hist, K, "beam", users=ws["users"], scope="full")
        spec = session.recommend(  # gamma +inf: the spec mode is its beam search
            hist, K, "spec", users=ws["users"], scope="full", gamma=float("inf")
        )
    with Session.open(on, ws["ckpt"]) as session:
        plain = session.recommend(hist, K, "beam", users=ws["users"], scope="full")
    model = load_checkpoint(ws["ckpt"])
    items, _ = reference(model, table, hist, ws["users"], is_new=ml_split.is_new)
    assert np.array_equal(recs.items, items)
    assert np.array_equal(spec.items, items)
    for row, items in zip(hist, recs.items, strict=True):
        assert not set(items.tolist()) & set(row[row >= 0].tolist())
    has_new = ((hist >= 0) & ml_split.is_new[np.maximum(hist, 0)]).any(axis=1)
    assert 0 < has_new.sum() < len(hist)
    assert not np.array_equal(recs.items[has_new], plain.items[has_new])  # the prompt changed
    assert np.array_equal(recs.items[~has_new], plain.items[~has_new])


def random_pack(model, ckpt: Path, seed: int = 0) -> EditPack:
    """An edit pack with random deltas on every SID position, made 'on' `ckpt`."""
    base_hash, fingerprint = checkpoint_identity(ckpt)
    g = torch.Generator().manual_seed(seed)
    projs = model.ffn_out_projs()
    deltas = {
        (p, min(p, len(projs) - 1)): 0.5
        * torch.randn(projs[min(p, len(projs) - 1)].weight.shape, generator=g)
        for p in range(model.vocab.sid_len)
    }
    manifest = {
        "format": "freshrec-edit-pack",
        "version": 1,
        "pack_id": "",
        "base": {"checkpoint_hash": base_hash, "tokenizer_fingerprint": fingerprint},
        "items": {"index": [0], "id": ["0"]},
        "sites": [{"position": p, "layer": layer} for p, layer in sorted(deltas)],
        "method": "memit",
        "seed": seed,
        "config": {},
    }
    manifest["pack_id"] = EditPack.content_id(deltas, manifest)
    return EditPack(deltas, manifest)


def test_beam_with_edit_pack_equals_edited_beam_search(ws, ml_split, ml_sids, tmp_path):
    _, table = ml_sids
    is_new = None if ws["recipe"].eval.prompt_new_items else ml_split.is_new
    model = load_checkpoint(ws["ckpt"])
    folder = random_pack(model, ws["ckpt"]).save(tmp_path / "pack")
    with Session.open(ws["recipe"], ws["ckpt"], [folder]) as session:
        assert session.edit_stack is not None
        assert len(session.edit_stack) == 1
        recs = session.recommend(ws["hist"], K, "beam", users=ws["users"])
    base, _ = reference(model, table, ws["hist"], ws["users"], is_new=is_new)
    with EditStack(model, ws["ckpt"]) as stack:
        stack.push(EditPack.load(folder))
        items, scores = reference(model, table, ws["hist"], ws["users"], is_new=is_new)
    assert not np.array_equal(items, base)  # the pack changes the recommendations
    assert np.array_equal(recs.items, items)
    np.testing.assert_allclose(recs.scores, scores, rtol=1e-5)


def test_spec_equals_spec_ranker(ws, ml_split, ml_sids, ml_emb):
    _, table = ml_sids
    model = load_checkpoint(ws["ckpt"])
    ranker = SpecRanker(
        model,
        TextDrafter(ml_emb),
        table,
        n_drafts=10,
        beam_size=BEAM,
        is_new=ml_split.is_new,
        prompt_new_items=ws["recipe"].eval.prompt_new_items,  # the session follows the recipe
    )
    trace = ranker.trace(ws["hist"], ws["users"], 8)
    # accept the best 5% of the drafts: some slots are drafts, the others beam results
    gamma = float(torch.quantile(trace.verify[trace.drafts >= 0], 0.95))
    out = ranker.rank_histories(ws["hist"], ws["users"], 8, gamma=gamma)
    assert 0 < ranker.last_stats["accepted_mean"] < 8  # drafts and beam items both present
    with Session.open(ws["recipe"], ws["ckpt"]) as session:
        recs = session.recommend(ws["hist"], 8, "spec", users=ws["users"], gamma=gamma, n_drafts=10)
    assert np.array_equal(recs.items, out.items.numpy())
    np.testing.assert_allclose(recs.scores, out.scores.numpy(), rtol=1e-5)


def test_retry_widens_the_beam_for_short_rows(ws, ml_split, ml_sids):
    """Beam 1 keeps one SID prefix: its last level rarely holds k items (and the history is
    excluded). The retry searches short rows again with a 4x wider beam (as the service did)."""
    tok, table = ml_sids
    model = load_checkpoint(ws["ckpt"])
    catalog = Catalog.from_split(ml_split, table, tok.vocab)
    hist, users = ws["hist"], ws["users"]
    plain = Session(model, catalog, beam_size=1).recommend(hist, 5, "beam", users=users)
    wide = Session(model, catalog, beam_size=1, retries=3)
    wide = wide.recommend(hist, 5, "beam", users=users)
    assert ((plain.items >= 0).sum(1) < 5).any()
    assert ((wide.items >= 0).sum(1) == 5).all()
    # rows still short are searched again with beams 4, 16, 64 (the service's rule)
    expect = plain.items.copy()
    for beam in (4, 16, 64):
        short = np.flatnonzero((expect >= 0).sum(1) < 5)
        if short.size:
            expect[short] = reference(model, table, hist[short], users[short], beam=beam, k=5)[0]
    assert np.array_equal(wide.items, expect)


def test_per_row_top_k_scopes_and_catalog_swap(ws, ml_split, ml_sids):
    tok, table = ml_sids
    model = load_checkpoint(ws["ckpt"])
    catalog = Catalog.from_split(ml_split, table, tok.vocab)
    session = Session(model, catalog, beam_size=BEAM)
    hist = ws["hist"][:3]
    recs = session.recommend(hist, [2, 5, 3], "beam")
    assert recs.items.shape == (3, 5)
    assert ((recs.items >= 0).sum(1) == [2, 5, 3]).all()
    assert np.isneginf(recs.scores[0, 2:]).all()
    new = session.recommend(hist, 5, "beam", scope="new")
    assert recs.is_new.dtype == bool
    assert new.is_new[new.items >= 0].all()
    # a catalog where only 20 new items are recommendable: "new" returns only those
    live = np.flatnonzero(ml_split.is_new)[:20]
    rec = catalog.recommendable & ~catalog.is_new
    rec[live] = True
    session.set_catalog(Catalog(catalog.sids, tok.vocab, rec, catalog.is_new))
    got = session.recommend(hist, 5, "beam", scope="new").items
    assert set(got[got >= 0].tolist()) <= set(live.tolist())
    # grow: more items with SIDs (usable in histories), the same recommendable ones and tries
    grown = session.catalog.grow(
        np.concatenate([catalog.sids, catalog.sids[:1]]), np.append(catalog.is_new, True)
    )
    assert grown.trie("new") is session.catalog.trie("new")
    assert grown.n_items == catalog.n_items + 1
    assert not grown.recommendable[-1]


def test_clear_errors(ws, ml_split, ml_sids):
    with Session.open(ws["recipe"], ws["ckpt"]) as session:
        with pytest.raises(UnknownItemError, match="unknown user id 'nobody'"):
            session.recommend_user("nobody")
        with pytest.raises(ConfigError, match="unknown recommend mode 'greedy'"):
            session.recommend(ws["hist"], 5, mode="greedy")
        for bad in (0, -1, [3, 0]):
            with pytest.raises(ConfigError, match="top_k"):
                session.recommend(ws["hist"][:2], bad)
        with pytest.raises(ConfigError, match="catalog must be one of"):
            session.recommend(ws["hist"], 5, scope="old")
        with pytest.raises(UnknownItemError, match="history item 99999"):
            session.recommend(np.array([[1, 99999]]), 5)
        with pytest.raises(ConfigError, match="histories must be"):
            session.recommend(np.array([1, 2, 3]), 5)
        with pytest.raises(ConfigError, match="always excludes"):
            session.recommend(ws["hist"], 5, "spec", exclude_history=False)
        with pytest.raises(ConfigError, match="self_drafter_dir"):
            session.recommend(ws["hist"], 5, "spec", drafter="self")
    split = make_split([[1, 2, 3], []], [3, 0], N_ITEMS)
    with pytest.raises(ConfigError, match="empty history"):
        user_history(split, "u1", 5)


def test_fresh_is_the_default_and_equals_the_fused_ranker(ws, ml_split, ml_sids, ml_emb):
    from freshrec.recommend.fresh import FreshParams, FreshRanker
    from freshrec.recommend.gr import GRRanker

    _, table = ml_sids
    with Session.open(ws["recipe"], ws["ckpt"]) as session:
        recs = session.recommend(ws["hist"], 20, users=ws["users"])  # default mode: fresh
        catalog = Catalog.from_split(ml_split, table, session.model.vocab)
        prompt = ws["recipe"].eval.prompt_new_items
        beam = GRRanker(
            session.model, catalog, scope="warm", beam_size=BEAM, prompt_new_items=prompt
        )
        ref = FreshRanker(beam, ml_emb, ml_split.is_new, FreshParams())
        items, _ = ref.rank_histories(ws["hist"], ws["users"], 20)
        assert (recs.items == items).all()
        assert recs.is_new.any()  # new items reach the list...
        assert (~recs.is_new[recs.items >= 0]).any()  # ...next to warm ones
        for row, hist in zip(recs.items, ws["hist"], strict=True):
            got = row[row >= 0]
            assert len(set(got)) == len(got)
            assert not set(got) & set(hist[hist >= 0])
        only_new = session.recommend(ws["hist"], 5, scope="new", users=ws["users"])
        assert only_new.is_new[only_new.items >= 0].all()
        warm = session.recommend(ws["hist"], 5, scope="warm", users=ws["users"])
        assert not warm.is_new.any()
