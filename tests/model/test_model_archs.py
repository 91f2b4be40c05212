"""Both architectures: cached decoding == full recompute, padding invariance, loss consistency,
trigger positions seen by edit hooks, training reduces the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from freshrec.model.base import GenerativeRecommender
from freshrec.model.batches import causal_windows, history_tokens, iterate_batches, tiger_examples
from freshrec.model.decode_context import NO_CONTEXT
from freshrec.semid.vocab import BOS, PAD
from model_helpers import ARCHS, VOCAB, fresh_model, pattern_split, random_histories, train_briefly

P = VOCAB.sid_len


def _inputs(sid_tokens: np.ndarray, n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    hist = history_tokens(random_histories(n, 5, seed=seed), sid_tokens)
    rng = np.random.default_rng(seed + 1)
    targets = torch.as_tensor(sid_tokens[rng.integers(0, len(sid_tokens), n)])
    return hist, targets


def _cached_log_probs(
    model: GenerativeRecommender, hist: torch.Tensor, targets: torch.Tensor, expand: int = 1
) -> torch.Tensor:
    """Block-restricted log-probs of `targets` via decode_start/decode_step, expanding every
    row to `expand` copies after position 0 (as the beam search does)."""
    state = model.decode_start(hist)
    out = []
    tgt = targets
    for p in range(P):
        logits = model.decode_step(state, None if p == 0 else tgt[:, p - 1], p)
        lp = torch.log_softmax(logits[:, VOCAB.block(p)], dim=-1)
        out.append(lp.gather(1, (tgt[:, p] - VOCAB.offsets[p])[:, None])[:, 0])
        if p == 0 and expand > 1:
            index = torch.arange(hist.shape[0]).repeat_interleave(expand)
            model.reorder(state, index)
            out[0] = out[0][index]
            tgt = tgt[index]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_kv_cached_decoding_equals_full_recompute(arch, sid_tokens, trained):
    for model in (fresh_model(arch), trained[arch]):
        hist, targets = _inputs(sid_tokens)
        full = model.sid_log_probs(hist, targets)
        assert full.shape == (4, P)
        torch.testing.assert_close(_cached_log_probs(model, hist, targets), full)
        expanded = _cached_log_probs(model, hist, targets, expand=3)
        torch.testing.assert_close(expanded, full.repeat_interleave(3, dim=0))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "index",
    [[1, 0, 3, 2, 5, 4], [0, 0, 3, 3, 4, 5], [4, 4, 0, 1, 2, 2, 3]],
    ids=["permute-within", "select-within", "across-requests"],
)
@torch.no_grad()
def test_beam_style_reorders_match_recompute(arch, index, sid_tokens, trained):
    """Expand 3 requests to 2 rows each, feed a different token per row, reorder rows (within
    requests = the partial-gather path; across = the full gather), then check the next step
    against a full recompute of each row's sequence."""
    model = trained[arch]
    hist, _ = _inputs(sid_tokens, n=3)
    rng = np.random.default_rng(7)
    seqs = torch.as_tensor(sid_tokens[rng.integers(0, len(sid_tokens), 6)])  # row -> SID
    state = model.decode_start(hist)
    model.decode_step(state, None, 0)
    model.reorder(state, torch.arange(3).repeat_interleave(2))
    model.decode_step(state, seqs[:, 0], 1)
    rows = torch.tensor(index)
    model.reorder(state, rows)
    logits = model.decode_step(state, seqs[rows, 1], 2)
    got = torch.log_softmax(logits[:, VOCAB.block(2)], dim=-1)
    got = got.gather(1, (seqs[rows, 2] - VOCAB.offsets[2])[:, None])[:, 0]
    ref = model.sid_log_probs(hist[rows // 2], seqs[rows])[:, 2]
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_left_padding_does_not_change_scores(arch, sid_tokens):
    model = fresh_model(arch)
    hist, targets = _inputs(sid_tokens)
    more_pad = torch.cat([torch.full((4, 2 * P), PAD), hist], dim=1)
    torch.testing.assert_close(
        model.sid_log_probs(more_pad, targets), model.sid_log_probs(hist, targets)
    )
    # a batch of one gives the same as inside a padded batch
    torch.testing.assert_close(
        model.sid_log_probs(hist[1:2], targets[1:2]), model.sid_log_probs(hist, targets)[1:2]
    )


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_sid_log_probs_are_block_normalised(arch, sid_tokens):
    model = fresh_model(arch)
    hist, _ = _inputs(sid_tokens, n=1)
    # all (code) continuations of one prefix at the last position sum to probability 1
    prefix = torch.as_tensor(sid_tokens[0])
    cands = prefix.repeat(VOCAB.sizes[-1], 1)
    cands[:, -1] = torch.arange(VOCAB.sizes[-1]) + VOCAB.offsets[-1]
    lp = model.sid_log_probs(hist.expand(len(cands), -1), cands)[:, -1]
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0))


@torch.no_grad()
def test_loss_matches_sid_log_probs(sid_tokens):
    """Training loss and scoring use the same positions and normalisation."""
    hist_items = random_histories(6, 5, seed=3, min_len=2)
    hist = history_tokens(hist_items, sid_tokens)
    rng = np.random.default_rng(4)
    target_items = rng.integers(0, len(sid_tokens), 6)
    targets = torch.as_tensor(sid_tokens[target_items])
    tiger = fresh_model("tiger")
    ref = -tiger.sid_log_probs(hist, targets).mean()
    torch.testing.assert_close(tiger.loss({"history": hist, "target": targets}), ref)
    # causal: one window per row = [BOS, history items, target], loss on the target only
    causal = fresh_model("causal")
    for i in range(6):
        real = hist[i][hist[i] != PAD]
        tokens = torch.cat([torch.tensor([BOS]), real, targets[i]])[None]
        mask = torch.zeros_like(tokens, dtype=torch.bool)
        mask[0, -P:] = True
        loss = causal.loss({"tokens": tokens, "targets": mask})
        torch.testing.assert_close(
            loss, -causal.sid_log_probs(hist[i : i + 1], targets[i : i + 1]).mean()
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_training_reduces_loss(arch, sid_tokens):
    model = fresh_model(arch, seed=2)
    split = pattern_split()
    if arch == "tiger":
        ex = tiger_examples(split, sid_tokens, 5)
    else:
        ex = causal_windows(split, sid_tokens, 5)
    batch = next(iterate_batches(ex, 256, shuffle=False))
    with torch.no_grad():
        before = float(model.loss(batch))
    train_briefly(model, sid_tokens, steps=30)
    with torch.no_grad():
        after = float(model.loss(batch))
    assert np.isfinite(before)
    assert after < before - 0.5


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_only_in_training(arch, sid_tokens):
    model = fresh_model(arch, dropout=0.3)
    hist, targets = _inputs(sid_tokens)
    with torch.no_grad():
        a, b = model.sid_log_probs(hist, targets), model.sid_log_probs(hist, targets)
        torch.testing.assert_close(a, b)
        model.train()
        c = model.sid_log_probs(hist, targets)
    assert not torch.allclose(a, c)


class _TriggerRecorder:
    """A forward hook like the editing stage's: reads model.decode_context on each call."""

    def __init__(self, model: GenerativeRecommender) -> None:
        self.model = model
        self.seen: list[tuple[int, torch.Tensor | None]] = []
        self.handles = [
            proj.register_forward_hook(self._hook(i))
            for i, proj in enumerate(model.ffn_out_projs())
        ]

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            trig = self.model.decode_context.positions
            if trig is not None:
                assert trig.shape == output.shape[:2], (trig.shape, output.shape)
                delta = torch.zeros_like(output)
                delta[trig == 1] = 1e-3  # an edit applied only where trigger == 1
                output = output + delta
            self.seen.append((layer, None if trig is None else trig.clone()))
            return output

        return hook

    def take(self) -> list[tuple[int, torch.Tensor | None]]:
        out, self.seen = self.seen, []
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_decode_context_seen_by_ffn_hooks(arch, sid_tokens):
    model = fresh_model(arch)
    projs = model.ffn_out_projs()
    assert len(projs) == 2
    assert all(isinstance(p, nn.Linear) for p in projs)
    assert projs[0].out_features == model.config.d_model
    hist, targets = _inputs(sid_tokens)
    B, T = hist.shape
    rec = _TriggerRecorder(model)
    n_layers = len(projs)

    state = model.decode_start(hist)
    seen = rec.take()
    if arch == "tiger":
        assert seen == []  # only the encoder runs; its FFNs are not edit targets
    else:  # the prompt [BOS, history]: only its last token predicts SID token 0
        assert [layer for layer, _ in seen] == list(range(n_layers))
        expect = torch.full((B, T + 1), -1)
        expect[:, -1] = 0
        for _, trig in seen:
            assert torch.equal(trig, expect)
    for p in range(P):
        model.decode_step(state, None if p == 0 else targets[:, p - 1], p)
        seen = rec.take()
        if arch == "causal" and p == 0:
            assert seen == []  # logits of position 0 come from decode_start
            continue
        assert [layer for layer, _ in seen] == list(range(n_layers))
        for _, trig in seen:
            assert torch.equal(trig, torch.full((B, 1), p))
    assert model.decode_context is NO_CONTEXT

    model.sid_log_probs(hist, targets)
    seen = rec.take()
    assert [layer for layer, _ in seen] == list(range(n_layers))
    for _, trig in seen:
        valid = trig[trig >= 0].view(B, P)
        assert torch.equal(valid, torch.arange(P).expand(B, P))
        if arch == "tiger":
            assert trig.shape == (B, P)
        else:  # predicting positions are the last history token and the first P-1 SID tokens
            assert trig.shape == (B, T + 1 + P - 1)
            assert (trig[:, :T] == -1).all()
    assert model.decode_context is NO_CONTEXT

    # an edit on position 1 changes exactly position 1's log-probs, identically on both paths
    rec.remove()
    clean = model.sid_log_probs(hist, targets)
    rec = _TriggerRecorder(model)
    edited = model.sid_log_probs(hist, targets)
    cached = _cached_log_probs(model, hist, targets)
    rec.remove()
    torch.testing.assert_close(edited[:, 0], clean[:, 0])
    assert not torch.allclose(edited[:, 1], clean[:, 1])
    torch.testing.assert_close(cached, edited)

    # training forwards carry no triggers
    rec = _TriggerRecorder(model)
    model.loss({"history": hist, "target": targets} if arch == "tiger" else _window(hist, targets))
    assert all(trig is None for _, trig in rec.take())
    rec.remove()


def _window(hist: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    tokens = torch.cat([torch.full((hist.shape[0], 1), BOS), hist, targets], dim=1)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -P:] = True
    return {"tokens": tokens, "targets": mask}


def test_user_token_is_accepted(sid_tokens):
    from freshrec.semid.vocab import SidVocab

    vocab = SidVocab(n_levels=2, codebook_size=6, max_collision=4, user_buckets=8)
    from freshrec.model.base import build_model
    from model_helpers import tiny_config

    hist = history_tokens(random_histories(3, 5), sid_tokens, np.array([0, 1, 2]), vocab)
    assert hist.shape == (3, 1 + 5 * P)
    assert ((hist >= vocab.user_offset).sum(dim=1) == 1).all()
    for arch in ARCHS:
        torch.manual_seed(0)
        model = build_model(tiny_config(arch), vocab).eval()
        targets = torch.as_tensor(sid_tokens[:3])
        with torch.no_grad():
            full = model.sid_log_probs(hist, targets)
            torch.testing.assert_close(_cached_log_probs(model, hist, targets), full)
