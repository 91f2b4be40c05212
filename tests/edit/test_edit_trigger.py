"""The one-to-one trigger on trained tiny models: exactly one delta per decoding step (the right
one), removal restores the base model bit-for-bit, ungated deltas equal merged weights, and the
scorer/key capture agree with the model's own teacher-forced scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.data.schema import Requests
from freshrec.edit.keys import TeacherForcedBatch, capture_keys, request_tokens
from freshrec.edit.locate import fixed_localisation
from freshrec.edit.pseudo import training_contexts
from freshrec.errors import ConfigError
from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import history_tokens
from freshrec.model.edit_hooks import EditHooks, active_hooks, suspend_edits
from freshrec.recommend.beam_search import beam_search
from freshrec.semid.trie import SidTrie

ARCHS = ("tiger", "causal")


def random_deltas(model: GenerativeRecommender, scale: float = 0.5, seed: int = 0) -> dict:
    """{(p, L_p): random DeltaW} for every position (fixed localisation)."""
    g = torch.Generator().manual_seed(seed)
    projs = model.ffn_out_projs()
    layers = fixed_localisation(model.vocab.sid_len, len(projs)).layers
    return {
        (p, layer): scale * torch.randn(projs[layer].weight.shape, generator=g)
        for p, layer in enumerate(layers)
    }


def some_requests(split, n: int = 24, seed: int = 0) -> Requests:
    """n training contexts (with their true targets)."""
    users, pos, target = training_contexts(split)
    idx = np.sort(np.random.default_rng(seed).choice(users.size, n, replace=False))
    return Requests(users[idx], pos[idx], target[idx], np.zeros(n, bool))


def _beam(model, split, table, req, trie):
    hist = split.histories(req, model.config.max_history)
    tok = history_tokens(hist, table.tokens(model.vocab), req.user, model.vocab)
    return beam_search(model, tok, trie, beam_size=8, top_k=8, exclude=torch.from_numpy(hist))


@pytest.mark.parametrize("arch", ARCHS)
def test_one_delta_per_decoding_step(arch, load_model, ml_split, ml_sids) -> None:
    model = load_model(arch)
    _, table = ml_sids
    trie = SidTrie.from_table(table.sids, model.vocab)
    req = some_requests(ml_split)
    deltas = random_deltas(model)
    base = _beam(model, ml_split, table, req, trie)
    with EditHooks(model, deltas, record=True) as hooks:
        edited = _beam(model, ml_split, table, req, trie)
        # one forward per SID position (causal: position 0 is the prompt forward); in each,
        # exactly the delta of that position fired, on its own layer
        assert hooks.fired == sorted(deltas)
        assert active_hooks(model) == [hooks]
    assert active_hooks(model) == []
    assert not torch.equal(base.scores, edited.scores)
    again = _beam(model, ml_split, table, req, trie)
    assert torch.equal(again.items, base.items)
    assert torch.equal(again.scores, base.scores)  # bit-for-bit


@pytest.mark.parametrize("arch", ARCHS)
def test_trigger_only_touches_its_position(arch, load_model, ml_split, ml_sids) -> None:
    """A delta for position 2 changes log-probs of positions >= 2 only (teacher forcing)."""
    model = load_model(arch)
    req = some_requests(ml_split)
    hist, tgt = request_tokens(model, ml_split, req, ml_sids[1].tokens(model.vocab))
    with torch.no_grad():
        base = model.sid_log_probs(hist, tgt)
        site = next(s for s in random_deltas(model) if s[0] == 2)
        with EditHooks(model, {site: random_deltas(model)[site]}):
            edited = model.sid_log_probs(hist, tgt)
            with suspend_edits(model):
                suspended = model.sid_log_probs(hist, tgt)
    assert torch.equal(edited[:, :2], base[:, :2])
    assert not torch.allclose(edited[:, 2], base[:, 2])
    assert torch.equal(suspended, base)


@pytest.mark.parametrize("arch", ARCHS)
def test_ungated_deltas_equal_merged_weights(arch, load_model, ml_split, ml_sids) -> None:
    model = load_model(arch)
    merged = load_model(arch)
    req = some_requests(ml_split)
    hist, tgt = request_tokens(model, ml_split, req, ml_sids[1].tokens(model.vocab))
    deltas = random_deltas(model, scale=0.05)
    with torch.no_grad():
        for (_, layer), d in deltas.items():
            merged.ffn_out_projs()[layer].weight += d
        want = merged.sid_log_probs(hist, tgt)
        with EditHooks(model, ungated=deltas):
            got = model.sid_log_probs(hist, tgt)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_scorer_and_keys_agree_with_sid_log_probs(arch, load_model, ml_split, ml_sids) -> None:
    """The cached-prefix scorer gives the same position-p log-probs as the model's full
    teacher-forced scoring, with edits installed, and the same keys as `capture_keys`; rows
    4..7 repeat the contexts of rows 0..3 with other targets (states computed once, expanded)."""
    model = load_model(arch)
    req = some_requests(ml_split, n=16, seed=3)
    hist, tgt = request_tokens(model, ml_split, req, ml_sids[1].tokens(model.vocab))
    hist[4:8] = hist[0:4]
    deltas = random_deltas(model, scale=0.2)
    with EditHooks(model, deltas), torch.no_grad():
        want = model.sid_log_probs(hist, tgt)
        batch = TeacherForcedBatch(model, hist, tgt)
        assert batch.inv is not None
        assert int(batch.inv.max()) + 1 <= 12
        keys = capture_keys(model, hist, tgt, sorted(deltas), batch_size=7)
        for p in range(model.vocab.sid_len):
            scorer = batch.scorer(p)
            # all rows, then shrinking subsets (gathered from the previous subset), then others
            for rows in ([*range(16)], [1, 3, 5, 6, 9, 15], [3, 6, 15], [3, 6, 15], [0, 2, 4]):
                r = torch.tensor(rows)
                lp = torch.log_softmax(scorer.block_logits(r), -1)
                got = lp.gather(1, (tgt[r, p] - model.vocab.offsets[p])[:, None])[:, 0]
                torch.testing.assert_close(got, want[r, p], rtol=1e-4, atol=1e-4)
    for (_, layer), k in keys.items():
        assert k.shape == (16, model.ffn_out_projs()[layer].in_features)


def test_prefix_keys_match_mixed_radix() -> None:
    from freshrec.semid.vocab import SidVocab

    vocab = SidVocab(n_levels=2, codebook_size=4, max_collision=3)
    sids = torch.tensor([[1, 2, 0], [1, 3, 2], [0, 2, 1]])
    keys = vocab.prefix_keys(sids)
    assert keys[:, 0].tolist() == [0, 0, 0]  # the empty prefix
    assert keys[:, 1].tolist() == [1, 1, 0]
    assert keys[:, 2].tolist() == [1 * 4 + 2, 1 * 4 + 3, 0 * 4 + 2]
    assert torch.equal(vocab.prefix_key(sids[:, :2]), keys[:, 2])


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_gate_fires_only_on_paths_to_edited_items(
    arch, load_model, ml_split, ml_sids
) -> None:
    """Gated by a few items' SIDs, a position-2 delta changes teacher-forced log-probs exactly
    of the rows whose 2-prefix leads to one of them (later tokens attend to the edited one);
    beam search scores its items as teacher forcing does (both feed the same prefix keys)."""
    model = load_model(arch)
    _, table = ml_sids
    req = some_requests(ml_split)
    sids = table.sids[np.asarray(req.target)]
    gate_sids = table.sids[np.asarray(req.target)[:3]]
    hist, tgt = request_tokens(model, ml_split, req, table.tokens(model.vocab))
    site = next(s for s in random_deltas(model) if s[0] == 2)
    delta = {site: random_deltas(model)[site]}
    keys = model.vocab.prefix_key(torch.from_numpy(sids[:, :2]))
    fires = torch.isin(keys, model.vocab.prefix_key(torch.from_numpy(gate_sids[:, :2])))
    assert fires[:3].all()
    assert not fires.all()
    with torch.no_grad():
        base = model.sid_log_probs(hist, tgt)
        with EditHooks(model, delta, gate_sids=gate_sids):
            gated = model.sid_log_probs(hist, tgt)
    assert torch.equal(gated[~fires], base[~fires])
    assert torch.equal(gated[:, :2], base[:, :2])
    assert (gated[fires, 2] != base[fires, 2]).all()

    deltas = random_deltas(model)
    trie = SidTrie.from_table(table.sids, model.vocab)
    with EditHooks(model, deltas, gate_sids=gate_sids):
        out = _beam(model, ml_split, table, req, trie)
        ok = out.items >= 0
        b, _ = torch.nonzero(ok, as_tuple=True)
        with torch.no_grad():
            items = torch.from_numpy(table.tokens(model.vocab))[out.items[ok]]
            lp = model.sid_log_probs(hist[b], items)
    torch.testing.assert_close(out.scores[ok], lp.sum(1), rtol=1e-4, atol=1e-4)


def test_gate_refuses_malformed_sids(load_model) -> None:
    model = load_model("causal")
    with pytest.raises(ConfigError, match="gate SIDs"):
        EditHooks(model, gate_sids=np.zeros((2, model.vocab.sid_len + 1), dtype=np.int64))
