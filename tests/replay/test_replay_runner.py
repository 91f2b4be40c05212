"""Replays of the real MovieLens test period with the tiny causal model: step scores are what
`Session.recommend` + the evaluation metrics give; the catalog grows step by step; each policy
changes what it should (edit packs, weights, the trained-items mask) and is charged for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.evaluate.metrics import compute_metrics
from freshrec.model.checkpoint import load_checkpoint
from freshrec.recommend import Session
from freshrec.replay import ReplayConfig, make_policy, replay, replay_part
from freshrec.replay.runner import initial_state
from freshrec.replay.timeline import request_times, steps, window_requests

CFG = ReplayConfig(step_days=7, max_steps=2, max_requests=24, parts=("test",))


def test_static_scores_are_the_session_s(ctx):
    out = replay_part(ctx, make_policy("static"), "test", CFG)
    assert out["catchup"]["cpu_s"] < 0.5
    assert len(out["steps"]) == 2
    split = ctx.split
    # recompute step 2 independently: the catalog of items seen before the step, fresh mode
    step = steps(split, "test", 7, 2)[1]
    req = window_requests(split, split.test, request_times(split, split.test), step.t0, step.t1, 24)
    state = initial_state(ctx)
    state.grow_table(ctx, step.t1)
    cat = state.catalog(ctx, step.t0)
    assert cat.size("new") > 0  # new items that appeared in validation are listed
    session = Session(state.model, cat, split=split, beam_size=20, fresh=ctx.fresh)
    recs = session.recommend(
        split.histories(req, state.model.config.max_history), 20, users=req.user
    )
    m = compute_metrics(recs.items, req.target, req.cold, split.is_new, ks=(10, 20))
    rec = out["steps"][1]
    assert rec["n"] == len(req) == 24
    assert rec["overall_recall20"] == pytest.approx(m.overall.recall[20])
    assert rec["warm_ndcg10"] == pytest.approx(m.warm.ndcg[10])
    assert rec["n_listed"] == cat.size("full")
    assert rec["unlisted"] == int((~cat.recommendable[req.target]).sum())
    s = out["summary"]
    pooled = sum(r["n"] * r["overall_recall20"] for r in out["steps"]) / s["n_requests"]
    assert s["mean_recall20"] == pytest.approx(pooled)
    assert s["update_cpu_seconds"] < 0.5  # static does nothing


def test_edit_catches_up_then_supersedes_packs(ctx):
    cheap = {"cov_samples": 3000, "target_steps": 5}
    out = replay_part(ctx, make_policy("edit", {"edit": {"edit": cheap}}), "test", CFG)
    cut1, cut2 = ctx.split.cutoffs
    seen = ctx.first_seen
    live_new = int(((seen >= cut1) & (seen < cut2)).sum())
    info = out["catchup"]["info"]
    assert info["edited"] == live_new
    assert info["packs"] == 1
    assert info["observed"] > 0
    assert out["catchup"]["cpu_s"] > 0
    assert any(s["update"]["info"].get("edited") for s in out["steps"])
    for s in out["steps"]:
        up = s["update"]["info"]
        if up.get("edited"):  # the catch-up pack holds every item: it is superseded, not stacked
            assert up["packs"] == 1
            assert up["superseded"] == 1
            assert s["update"]["cpu_s"] > 0


@pytest.mark.parametrize("mark", [False, True])
def test_finetune_changes_the_weights_and_marks_items_trained(ctx, mark):
    policy = make_policy(
        "finetune", {"finetune": {"max_steps": 3, "passes": 50, "mark_trained": mark}}
    )
    state = initial_state(ctx)
    policy.start(state, ctx)
    _, cut2 = ctx.split.cutoffs
    state.grow_table(ctx, cut2)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    info = policy.update(state, ctx, cut2 - 30 * 86400, cut2)
    assert info["steps"] == 3
    assert info["rows"] > 0
    changed = any(not torch.equal(before[k], v) for k, v in state.model.state_dict().items())
    assert changed
    assert state.version == 1
    n_trained = (~ctx.split.is_new).sum()
    if mark:  # items of the window now trained
        assert state.trained.sum() > n_trained
    else:  # new items stay with the new-item channel
        assert state.trained.sum() == n_trained
    saved = load_checkpoint(state.base_dir, expect_fingerprint=ctx.fingerprint)
    for k, v in saved.state_dict().items():
        assert torch.equal(v, state.model.state_dict()[k])  # edits would be made on these


def test_merge_picks_a_candidate_weight(ctx):
    policy = make_policy("merge", {"merge": {"weights": [0.0, 1.0], "min_requests": 1}})
    out = replay_part(
        ctx, policy, "test", ReplayConfig(step_days=7, max_steps=1, max_requests=8, parts=("test",))
    )
    info = out["catchup"]["info"]
    assert info["merged"] == 1
    assert info["weight"] in (0.0, 1.0)
    assert info["select_requests"] > 0


def test_replay_walks_every_part_and_refuses_none(ctx):
    cfg = ReplayConfig(step_days=30, max_steps=1, max_requests=5)
    out = replay(ctx, make_policy("static"), cfg)
    assert set(out["parts"]) == {"valid", "test"}
    assert out["parts"]["valid"]["catchup"]["info"] == {}  # validation starts at the cut-off
    with pytest.raises(ConfigError, match="at least one part"):
        replay(ctx, make_policy("static"), ReplayConfig(parts=()))
    assert np.isfinite(out["parts"]["test"]["summary"]["peak_mem_mb"])
