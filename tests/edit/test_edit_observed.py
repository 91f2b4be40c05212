"""Real interactions as edit requests (`edit.observed`): merged with pseudo-requests for the
items without any, on the real MovieLens split; and a GenRecEdit edit made from them."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.data.schema import Requests
from freshrec.edit import EditConfig, GenRecEditor
from freshrec.edit.observed import edit_requests
from freshrec.edit.pseudo import pseudo_requests
from freshrec.errors import ConfigError

DAY = 86400


def observed_new(split, days: int = 30) -> Requests:
    """Test-period requests (first `days` days) whose target is a new item."""
    _, cut2 = split.cutoffs
    t = split.seq_ts[split.seq_offsets[split.test.user] + split.test.pos]
    return split.test.subset((t < cut2 + days * DAY) & split.test.cold)


def test_edit_requests_mix_real_and_pseudo(ml_split, ml_emb):
    new = np.flatnonzero(ml_split.is_new)
    obs = observed_new(ml_split)
    with_real = np.unique(obs.target)[:3].astype(np.int64)
    without = np.setdiff1d(new, obs.target)[:2]
    items = np.concatenate([with_real, without])
    obs = obs.subset(np.isin(obs.target, with_real))

    def pseudo(need: np.ndarray):
        return pseudo_requests(ml_split, ml_emb, need, n_contexts=4, seed=0)

    out = edit_requests(obs, pseudo, items, n_contexts=4, top_up=False)
    assert len(out) == len(obs) + 2 * 4  # real ones kept, pseudo only for items without any
    assert np.array_equal(out.user[: len(obs)], obs.user)
    assert (out.neighbor[: len(obs)] == -1).all()
    assert (out.neighbor[len(obs) :] >= 0).all()
    topped = edit_requests(obs, pseudo, items, n_contexts=4, top_up=True)
    per_item = np.bincount(np.searchsorted(np.sort(items), topped.item), minlength=items.size)
    assert (per_item >= 4).all() or len(topped) > len(out)
    bad = Requests(obs.user, obs.pos, np.full(len(obs), without[0], np.int32), obs.cold)
    with pytest.raises(ConfigError, match="not being edited"):
        edit_requests(bad, pseudo, with_real, n_contexts=4)


def test_genrecedit_edits_from_real_interactions(
    load_model, ckpt_dirs, ml_split, ml_emb, ml_sids, work
):
    _tok, table = ml_sids
    obs = observed_new(ml_split)
    items = np.unique(obs.target)[:6].astype(np.int64)
    obs = obs.subset(np.isin(obs.target, items))
    extra = np.setdiff1d(np.flatnonzero(ml_split.is_new), obs.target)[:2]
    cfg = EditConfig(lam=300, target_steps=5, cov_samples=2000, measure_reliability=False)
    model = load_model("causal")
    editor = GenRecEditor(model, ckpt_dirs["causal"], ml_split, table, ml_emb, cfg, work)
    pack = editor.edit(np.concatenate([items, extra]), seed=0, observed=obs)
    m = pack.metrics
    assert m["n_observed"] == len(obs)
    assert m["n_requests"] == len(obs) + 2 * cfg.n_contexts  # pseudo only for the extra items
    req = pack.requests
    real = np.isin(req["item"], items)
    assert real.sum() == len(obs)
    assert set(zip(req["user"][real].tolist(), req["pos"][real].tolist(), strict=True)) == set(
        zip(obs.user.tolist(), obs.pos.tolist(), strict=True)
    )
    assert GenRecEditor.accepts_observed
