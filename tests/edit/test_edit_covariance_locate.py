"""Preservation statistics (cached on disk, base model even with edits live) and the layer
localisation (fixed mapping, probes)."""

from __future__ import annotations

import numpy as np
import torch
from test_edit_trigger import random_deltas

from freshrec.edit.covariance import key_covariances, split_hash
from freshrec.edit.locate import (
    choose_layer,
    fixed_localisation,
    probe_localisation,
    ridge_probe_accuracy,
)
from freshrec.model.checkpoint import file_sha256
from freshrec.model.edit_hooks import EditHooks


def test_covariance_cached_and_from_base_model(
    work, load_model, ckpt_dirs, ml_split, ml_sids
) -> None:
    model = load_model("tiger")
    tokens = ml_sids[1].tokens(model.vocab)
    h = file_sha256(ckpt_dirs["tiger"] / "model.safetensors")
    sites = [(0, 0), (2, 1)]
    kw = {"model_hash": h, "cache_dir": work / "cache", "n_samples": 300, "seed": 0}
    covs, info = key_covariances(model, ml_split, tokens, sites, **kw)
    assert info.computed == sites
    assert info.hits == []
    assert info.n_requests == 300
    assert info.seconds > 0
    files = sorted((work / "cache").glob("cov-*.safetensors"))
    assert len(files) == 2
    d_ff = model.ffn_out_projs()[0].in_features
    for c in covs.values():
        assert c.dtype == torch.float64
        assert c.shape == (d_ff, d_ff)
        torch.testing.assert_close(c, c.T)
        assert torch.linalg.eigvalsh(c).min() > -1e-9  # PSD
    # second call (edits live!): every site is a cache hit, same tensors, nothing recomputed
    with EditHooks(model, random_deltas(model)):
        again, info2 = key_covariances(model, ml_split, tokens, sites, **kw)
        # recomputing with edits live still gives the base-model statistics
        fresh, _ = key_covariances(model, ml_split, tokens, sites[:1], **{**kw, "cache_dir": None})
    assert info2.hits == sites
    assert info2.computed == []
    assert info2.seconds == 0
    for s in sites:
        assert torch.equal(again[s], covs[s])
    torch.testing.assert_close(fresh[sites[0]], covs[sites[0]], rtol=1e-10, atol=1e-12)
    # a different sample size or data is a different cache entry
    _, info3 = key_covariances(model, ml_split, tokens, sites[:1], **{**kw, "n_samples": 200})
    assert info3.computed == sites[:1]
    assert len(split_hash(ml_split)) == 64


def test_probe_localisation(load_model, ml_split, ml_sids) -> None:
    model = load_model("tiger")
    n_layers = len(model.ffn_out_projs())
    loc = probe_localisation(
        model, ml_split, ml_sids[1].tokens(model.vocab), n_samples=1000, margin=0.01
    )
    P = model.vocab.sid_len
    assert loc.method == "probe"
    assert len(loc.layers) == P
    assert loc.accuracy is not None
    assert np.asarray(loc.accuracy).shape == (P, n_layers)
    assert loc.n_train + loc.n_heldout == 1000
    for p in range(P):
        assert loc.layers[p] == choose_layer(loc.accuracy[p], 0.01)
    # the keys carry next-token information: on average the probes beat the majority class
    # (on this tiny model clearly only from position 2 on; position 0 is near chance)
    best = np.asarray(loc.accuracy).max(axis=1)
    assert best.mean() > np.mean(loc.majority)
    assert best[2] > 2 * loc.majority[2]
    assert fixed_localisation(4, 2).layers == [0, 1, 1, 1]
    assert fixed_localisation(4, 6).layers == [0, 1, 2, 3]


def test_probe_helpers() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    centers = 3 * torch.randn(4, 16, generator=g)
    x = centers[y] + 0.1 * torch.randn(400, 16, generator=g)
    assert ridge_probe_accuracy(x[:300], y[:300], x[300:], y[300:], 4) == 1.0
    noise = torch.randn(400, 16, generator=g)
    assert ridge_probe_accuracy(noise[:300], y[:300], noise[300:], y[300:], 4) < 0.5
    # earliest layer within the margin wins; exact ties go to the earlier layer
    assert choose_layer([0.50, 0.61, 0.625, 0.63], 0.01) == 2
    assert choose_layer([0.7, 0.7], 0.0) == 0
    assert choose_layer([0.1, 0.5, 0.3], 0.0) == 1
