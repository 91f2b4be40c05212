"""Beam search vs exhaustive scoring vs transformers' generate, validity, exclusion, restriction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.model.batches import history_tokens
from freshrec.recommend.beam_search import (
    beam_search,
    exclusion_mask,
    is_excluded,
    sorted_exclusions,
)
from freshrec.recommend.exhaustive import exhaustive_scores, exhaustive_topk, hf_generate_topk
from freshrec.semid.trie import SidTrie
from model_helpers import ARCHS, N_ITEMS, VOCAB, fresh_model, random_histories

B = 5


def _hist(sid_tokens: np.ndarray, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    items = random_histories(B, 5, seed=seed)
    return items, history_tokens(items, sid_tokens)


def _models(arch: str, trained: dict) -> list:
    return [fresh_model(arch), trained[arch]]


@pytest.mark.parametrize("arch", ARCHS)
def test_wide_beam_equals_exhaustive_topk(arch, sid_tokens, trie, trained):
    _, hist = _hist(sid_tokens)
    for model in _models(arch, trained):
        res = beam_search(model, hist, trie, beam_size=N_ITEMS, top_k=10)
        ref = exhaustive_topk(model, hist, trie, 10)
        assert torch.equal(res.items, ref.items)
        torch.testing.assert_close(res.scores, ref.scores)
        assert torch.equal(res.sids, ref.sids)
        # scores are sorted and are the sum of block-restricted log-probs
        assert (res.scores[:, :-1] >= res.scores[:, 1:]).all()
        full = exhaustive_scores(model, hist, trie)
        torch.testing.assert_close(res.scores, full.gather(1, res.items))


@pytest.mark.parametrize("arch", ARCHS)
def test_returned_items_are_valid(arch, sid_tokens, catalog, trie, trained):
    _, hist = _hist(sid_tokens, seed=1)
    for beam in (1, 3, 8):
        res = beam_search(trained[arch], hist, trie, beam_size=beam, top_k=beam)
        assert res.items.shape == (B, beam)
        assert res.sids.shape == (B, beam, VOCAB.sid_len)
        ok = res.items >= 0
        assert ok.all()  # the trie has far more than `beam` items
        flat = res.items.flatten().numpy()
        assert set(flat) <= set(trie.items().tolist())
        assert np.array_equal(catalog[flat], res.sids.reshape(-1, VOCAB.sid_len).numpy())
        for row in res.items:  # no duplicates within a request
            assert len(set(row.tolist())) == beam


@pytest.mark.parametrize("arch", ARCHS)
def test_exclusion_removes_history_items(arch, sid_tokens, trie, trained):
    items, hist = _hist(sid_tokens, seed=2)
    model = trained[arch]
    exclude = torch.as_tensor(items)
    res = beam_search(model, hist, trie, beam_size=N_ITEMS, top_k=N_ITEMS)
    ex = beam_search(model, hist, trie, beam_size=N_ITEMS, top_k=N_ITEMS, exclude=exclude)
    for b in range(B):
        banned = set(items[b][items[b] >= 0].tolist())
        got = [i for i in ex.items[b].tolist() if i >= 0]
        assert not banned & set(got)
        # the same ranking as without exclusion, minus the banned items, then -1 padding
        expect = [i for i in res.items[b].tolist() if i not in banned]
        assert got == expect
        assert (ex.items[b, len(got) :] == -1).all()
        assert torch.isneginf(ex.scores[b, len(got) :]).all()
    ref = exhaustive_topk(model, hist, trie, 10, exclude=exclude)
    assert torch.equal(ex.items[:, :10], ref.items)


@pytest.mark.parametrize("arch", ARCHS)
def test_small_trie_pads_with_minus_one(arch, sid_tokens, catalog):
    """Fewer valid SIDs than beams / top_k: dead beams never yield an item."""
    small = SidTrie.build(catalog[[3, 17, 40]], np.array([3, 17, 40]), VOCAB)
    _, hist = _hist(sid_tokens, seed=3)
    model = fresh_model(arch)
    res = beam_search(model, hist, small, beam_size=6, top_k=5)
    assert res.items.shape == (B, 5)
    assert (res.items[:, 3:] == -1).all()
    assert torch.isneginf(res.scores[:, 3:]).all()
    assert (res.sids[:, 3:] == -1).all()
    assert sorted(res.items[0, :3].tolist()) == [3, 17, 40]
    ref = exhaustive_topk(model, hist, small, 5)
    assert torch.equal(res.items, ref.items)
    torch.testing.assert_close(res.scores, ref.scores)


@pytest.mark.parametrize("arch", ARCHS)
def test_restricted_trie_returns_only_its_items(arch, sid_tokens, catalog, trie, trained):
    warm = np.zeros(N_ITEMS, dtype=bool)
    warm[::2] = True
    warm_trie = trie.restrict(warm)
    assert set(warm_trie.items().tolist()) == set(np.flatnonzero(warm).tolist())
    _, hist = _hist(sid_tokens, seed=4)
    res = beam_search(trained[arch], hist, warm_trie, beam_size=N_ITEMS, top_k=10)
    assert warm[res.items.numpy()].all()
    ref = exhaustive_topk(trained[arch], hist, warm_trie, 10)
    assert torch.equal(res.items, ref.items)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_one_by_one(arch, sid_tokens, trie, trained):
    _, hist = _hist(sid_tokens, seed=5)
    model = trained[arch]
    res = beam_search(model, hist, trie, beam_size=4, top_k=4)
    for b in range(B):
        one = beam_search(model, hist[b : b + 1], trie, beam_size=4, top_k=4)
        assert torch.equal(one.items[0], res.items[b])
        torch.testing.assert_close(one.scores[0], res.scores[b])


@pytest.mark.parametrize("arch", ARCHS)
def test_agrees_with_transformers_generate(arch, sid_tokens, trie, trained):
    """HF beam search (num_beams, prefix_allowed_tokens_fn) with the same block normalisation
    keeps the same beams: identical top items and scores, also for narrow beams."""
    _, hist = _hist(sid_tokens, seed=6)
    for model in _models(arch, trained):
        for beam, k in ((N_ITEMS, 10), (5, 5)):
            items, scores = hf_generate_topk(model, hist, trie, beam_size=beam, top_k=k)
            res = beam_search(model, hist, trie, beam_size=beam, top_k=k)
            assert torch.equal(items, res.items)
            torch.testing.assert_close(scores, res.scores, atol=1e-4, rtol=1e-4)


def test_bad_arguments(sid_tokens, trie):
    _, hist = _hist(sid_tokens)
    model = fresh_model("tiger")
    with pytest.raises(ConfigError):
        beam_search(model, hist, trie, beam_size=0, top_k=1)
    with pytest.raises(ConfigError):
        hf_generate_topk(model, hist, trie, beam_size=2, top_k=3)


def test_empty_batch(sid_tokens, trie):
    res = beam_search(fresh_model("causal"), torch.zeros((0, 10), dtype=torch.long), trie, 4, 3)
    assert res.items.shape == (0, 3)
    assert res.sids.shape == (0, 3, VOCAB.sid_len)


def test_sorted_exclusions_match_the_dense_mask():
    """The beam search's per-row binary search answers exactly what the dense
    Bool[B, n_items + 1] mask answers, for every valid item (padding, repeats and
    out-of-range exclusions included)."""
    rng = np.random.default_rng(0)
    n_items, B = 200, 7
    exclude = torch.from_numpy(rng.integers(-1, n_items + 20, (B, 12)))
    exclude[0] = -1  # a row excluding nothing
    exclude[1, :6] = exclude[1, 6:]  # repeats
    items = torch.from_numpy(rng.integers(-1, n_items, (B, 9, 11)))
    dense = exclusion_mask(exclude, n_items, B, torch.device("cpu"))
    sorted_ex = sorted_exclusions(exclude, B, torch.device("cpu"))
    got = is_excluded(items, sorted_ex)
    rows = torch.arange(B)[:, None, None]
    want = dense[rows, items.clamp(min=0)]
    valid = items >= 0
    assert torch.equal(got[valid], want[valid])
    assert sorted_exclusions(None, B, torch.device("cpu")) is None
    assert sorted_exclusions(torch.zeros((B, 0), dtype=torch.long), B, torch.device("cpu")) is None


@pytest.mark.parametrize("arch", ARCHS)
def test_narrow_beam_exclusion_matches_masking_the_last_step(arch, sid_tokens, trie, trained):
    """A narrow beam with exclusion: every returned item is allowed, and the list equals the
    plain (unexcluded) beam's last-step candidates minus the excluded ones."""
    items, hist = _hist(sid_tokens, seed=7)
    model = trained[arch]
    exclude = torch.as_tensor(items)
    wide = beam_search(model, hist, trie, beam_size=3, top_k=3 * VOCAB.max_collision)
    ex = beam_search(model, hist, trie, beam_size=3, top_k=5, exclude=exclude)
    for b in range(B):
        banned = set(items[b][items[b] >= 0].tolist())
        expect = [i for i in wide.items[b].tolist() if i >= 0 and i not in banned][:5]
        got = [i for i in ex.items[b].tolist() if i >= 0]
        assert got == expect
