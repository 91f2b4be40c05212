"""Speculative recommendation, GR side: verification scores vs exhaustive SID likelihood, the
step-wise beam search vs `beam_search`, score lengths, beam-prefix masks (synthetic, tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.model.batches import history_tokens
from freshrec.recommend.beam_search import beam_search
from freshrec.recommend.exhaustive import exhaustive_scores
from freshrec.recommend.spec.verify import (
    BeamStepper,
    item_prefix_nodes,
    prefix_mask,
    score_lengths,
    verify_scores,
)
from model_helpers import ARCHS, N_ITEMS, VOCAB, fresh_model, random_histories

B, C = 4, 9
P = VOCAB.sid_len


def _inputs(sid_tokens: np.ndarray, seed: int = 0) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    items = random_histories(B, 5, seed=seed)
    cand = torch.from_numpy(np.random.default_rng(seed).integers(0, N_ITEMS, size=(B, C)))
    return items, history_tokens(items, sid_tokens), cand


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["cached", "teacher"])
def test_verify_equals_exhaustive_mean_likelihood(arch, method, sid_tokens, trie, trained):
    _, hist, cand = _inputs(sid_tokens)
    tok = torch.from_numpy(sid_tokens)[cand]
    for model in (fresh_model(arch), trained[arch]):
        full = exhaustive_scores(model, hist, trie)  # sum of block-restricted log-probs
        v = verify_scores(model, hist, tok, torch.full((B, C), P), method=method, chunk=7)
        torch.testing.assert_close(v, full.gather(1, cand) / P)
        # new-item length (collision digit skipped): mean of the first P-1 token log-probs
        lens = torch.full((B, C), P - 1)
        lens[:, 0] = 0  # an invalid draft
        v = verify_scores(model, hist, tok, lens, method=method)
        ref = model.sid_log_probs(hist.repeat_interleave(C, 0), tok.reshape(B * C, P))
        ref = ref[:, : P - 1].mean(1).view(B, C)
        assert torch.isneginf(v[:, 0]).all()
        torch.testing.assert_close(v[:, 1:], ref[:, 1:])


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_stepper_equals_beam_search(arch, sid_tokens, trie, trained):
    items, hist, _ = _inputs(sid_tokens, seed=3)
    model = trained[arch]
    excl = torch.from_numpy(items)
    ref = beam_search(model, hist, trie, beam_size=4, top_k=12, exclude=excl)
    st = BeamStepper(model, hist, trie, beam_size=4, top_k=12, exclude=excl)
    while not st.done:
        st.step()
    res = st.result()
    assert torch.equal(res.items, ref.items)
    assert torch.equal(res.sids, ref.sids)
    torch.testing.assert_close(res.scores, ref.scores)
    # dropping requests between steps leaves the others' results unchanged
    st = BeamStepper(model, hist, trie, beam_size=4, top_k=12, exclude=excl)
    st.keep(torch.tensor([True, False, True, True]))
    st.step()
    assert st.prefix_nodes().shape == (3, min(4, VOCAB.sizes[0]))
    st.keep(torch.tensor([True, False, True]))
    while not st.done:
        st.step()
    keep = torch.tensor([0, 3])
    assert torch.equal(st.rows, keep)
    res = st.result()
    assert torch.equal(res.items, ref.items[keep])
    torch.testing.assert_close(res.scores, ref.scores[keep])


def test_prefix_mask_matches_brute_force(catalog, trie):
    nodes = item_prefix_nodes(trie, catalog)
    assert len(nodes) == P
    assert (nodes[0] == 0).all()
    for depth in range(1, P):
        n_nodes = trie.children[depth].shape[0]
        # request 0's beams: the prefixes of items 0 and 5 (+ a dead beam); request 1: item 7
        beams = torch.stack([nodes[depth][[0, 5, 0]], nodes[depth][[7, 7, 7]]])
        beams[0, 2] = -1
        got = prefix_mask(nodes[depth], beams, n_nodes).numpy()
        for row, refs in enumerate(([0, 5], [7])):
            want = [
                any((catalog[i, :depth] == catalog[r, :depth]).all() for r in refs)
                for i in range(N_ITEMS)
            ]
            assert got[row].tolist() == want


def test_score_lengths():
    sids = np.array([[0, 1, 0], [0, 1, 1], [0, 2, 0], [1, 0, 0], [-1, -1, -1]])
    is_new = np.array([False, True, True, True, False])
    assert score_lengths(sids, is_new, "full").tolist() == [3, 3, 3, 3, 0]
    assert score_lengths(sids, is_new, "codes").tolist() == [3, 2, 2, 2, 0]
    assert score_lengths(sids, is_new, "all_codes").tolist() == [2, 2, 2, 2, 0]
    # in-sample: longest prefix shared with a warm item (item 0), at least min_len
    assert score_lengths(sids, is_new, "in_sample", min_len=1).tolist() == [3, 2, 1, 1, 0]
    assert score_lengths(sids, is_new, "in_sample").tolist() == [3, 2, 2, 2, 0]
