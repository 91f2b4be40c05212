"""SpecRanker: the gamma extremes (drafter order / plain beam search), the prompt without new
items, finalize == early-exit run, history exclusion on real MovieLens data (gamma tuning:
tests/evaluate/test_spec_tuning.py, benchmark rows: tests/benchmarks/test_spec_rows.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.evaluate.protocol import evaluate_ranker, history_pairs
from freshrec.model.base import build_model
from freshrec.model.batches import history_tokens
from freshrec.recommend.beam_search import beam_search
from freshrec.recommend.gr import drop_items
from freshrec.recommend.spec import SpecRanker, TextDrafter, finalize
from freshrec.semid.table import SidTable
from model_helpers import ARCHS, N_ITEMS, VOCAB, random_histories, tiny_config

K = 10
INF = float("inf")


@pytest.fixture(scope="module")
def synth(catalog: np.ndarray) -> dict:
    """Catalog as a SidTable, 10 new items, random text embeddings, 7 histories."""
    is_new = np.zeros(N_ITEMS, dtype=bool)
    is_new[-10:] = True
    emb = np.random.default_rng(0).normal(size=(N_ITEMS, 8)).astype(np.float32)
    hist = random_histories(7, 5, seed=4)
    return {
        "table": SidTable(catalog, VOCAB.max_collision),
        "is_new": is_new,
        "drafter": TextDrafter(emb, n_last=3),
        "hist": hist,
        "users": np.arange(7),
    }


def _ranker(model, s: dict, **kw) -> SpecRanker:
    kw = {"n_drafts": 12, "beam_size": 5, "batch_size": 3, "is_new": s["is_new"], **kw}
    return SpecRanker(model, s["drafter"], s["table"], **kw)


def _drafter_topk(s: dict, k: int) -> torch.Tensor:
    d = s["drafter"].score(torch.from_numpy(s["hist"]), None)
    rows, cols = np.nonzero(s["hist"] >= 0)
    d[rows, s["hist"][rows, cols]] = -INF
    return torch.topk(d, k).indices


@pytest.mark.parametrize("arch", ARCHS)
def test_gamma_minus_inf_accepts_every_draft(arch, synth, trained):
    ranker = _ranker(trained[arch], synth, gamma=-INF, order="accept")
    out = ranker.rank_histories(synth["hist"], synth["users"], K)
    assert torch.equal(out.items, _drafter_topk(synth, K))  # the drafter's top-K, its order
    assert (out.n_accepted == K).all()
    assert (out.exit_round == 1).all()  # no beam search needed
    # order "score": the same K items, sorted by verification score
    ranker.order = "score"
    out2 = ranker.rank_histories(synth["hist"], synth["users"], K)
    assert torch.equal(out2.items.sort(1).values, out.items.sort(1).values)
    assert (out2.scores[:, :-1] >= out2.scores[:, 1:]).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("order", ["score", "accept"])
def test_gamma_plus_inf_is_plain_beam_search(arch, order, synth, sid_tokens, trie, trained):
    model = trained[arch]
    out = _ranker(model, synth, gamma=INF, order=order).rank_histories(
        synth["hist"], synth["users"], K
    )
    hist = synth["hist"]
    ref = beam_search(model, history_tokens(hist, sid_tokens), trie, 5, K, torch.from_numpy(hist))
    assert torch.equal(out.items, ref.items)
    assert (out.n_accepted == 0).all()
    torch.testing.assert_close(out.scores, ref.scores / VOCAB.sid_len)


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_without_new_items(arch, synth, sid_tokens, trie, trained):
    """prompt_new_items=False: the GR model reads the history without new items (as GRRanker);
    the drafter and the exclusion still see every history item."""
    model, hist, is_new = trained[arch], synth["hist"], synth["is_new"]
    hist = hist.copy()
    hist[:, -1] = np.flatnonzero(is_new)[: len(hist)]  # a new item last in every row
    prompt = drop_items(hist, is_new)
    assert not np.array_equal(prompt, hist)
    out = _ranker(model, synth, gamma=INF, prompt_new_items=False).rank_histories(
        hist, synth["users"], K
    )
    ref = beam_search(model, history_tokens(prompt, sid_tokens), trie, 5, K, torch.from_numpy(hist))
    assert torch.equal(out.items, ref.items)
    full = beam_search(model, history_tokens(hist, sid_tokens), trie, 5, K, torch.from_numpy(hist))
    assert not torch.equal(out.items, full.items) or not torch.equal(out.scores, full.scores)
    # gamma -inf: the drafter's top-K of the full history, whatever the model reads
    drafts = _ranker(model, synth, gamma=-INF, order="accept", prompt_new_items=False)
    items = drafts.rank_histories(hist, synth["users"], K).items
    assert torch.equal(items, _drafter_topk({**synth, "hist": hist}, K))


@pytest.mark.parametrize("arch", ARCHS)
def test_finalize_of_trace_equals_early_exit_run(arch, synth, trained):
    ranker = _ranker(trained[arch], synth)
    trace = ranker.trace(synth["hist"], synth["users"], K)
    for gamma in (-3.0, -2.0, -1.5, -1.0):
        run = ranker.rank_histories(synth["hist"], synth["users"], K, gamma=gamma)
        fin = finalize(trace, gamma, ranker.order)
        assert torch.equal(run.items, fin.items)
        assert torch.equal(run.n_accepted, fin.n_accepted)
        assert torch.equal(run.exit_round, fin.exit_round)
        # a full trace re-scores with other score lengths without running the model again
        ranker.lengths_mode = "in_sample"
        run2 = ranker.rank_histories(synth["hist"], synth["users"], K, gamma=gamma)
        ranker.lengths_mode = "codes"
        lengths = ranker.lengths(synth["is_new"], "in_sample")
        assert torch.equal(run2.items, finalize(trace, gamma, ranker.order, lengths).items)
        hist = synth["hist"]
        for row in range(len(hist)):  # never a history item, never a duplicate
            got = [i for i in run.items[row].tolist() if i >= 0]
            assert len(got) == len(set(got))
            assert len(got) >= int(run.n_accepted[row])
            assert not set(got) & set(hist[row][hist[row] >= 0].tolist())


@pytest.fixture(scope="module")
def real(ml_split, ml_emb, ml_sids) -> dict:
    """A fresh tiny tiger model over the real SID vocabulary, and the spec ranker on it."""
    tok, table = ml_sids
    torch.manual_seed(0)
    model = build_model(tiny_config("tiger", max_history=5), tok.vocab).eval()
    ranker = SpecRanker(model, TextDrafter(ml_emb), table, n_drafts=20, beam_size=5, batch_size=16)
    return {"model": model, "table": table, "ranker": ranker}


def test_real_data_protocol_no_history_items(real, ml_split):
    ranker = real["ranker"]
    reqs = ml_split.valid.subset(np.arange(48))
    trace = ranker.trace_requests(ml_split, reqs, top_k=20)
    ranker.gamma = float(trace.verify[trace.drafts >= 0].median())  # accept about half
    res = evaluate_ranker(ranker, ml_split, "valid", top_k=20, max_requests=48, seed=1)
    assert res.catalog == "full"
    assert res.n_requests == 48
    assert 0 < ranker.last_stats["accepted_mean"] < 20
    # evaluate_ranker already raised on history items; check the full ranking once more
    items = ranker.rank(ml_split, reqs, top_k=20)
    rows, hist = history_pairs(ml_split, reqs, ranker.history_len)
    assert not np.isin(
        rows * 10**6 + hist, np.nonzero(items >= 0)[0] * 10**6 + items[items >= 0]
    ).any()
