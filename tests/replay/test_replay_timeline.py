"""Replay time helpers on the real MovieLens time split: steps cover the periods, windows select
the right requests and interactions, prefix splits match the training split, and the SID table
grows as items appear."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from freshrec.data import leave_one_out
from freshrec.errors import ConfigError
from freshrec.replay.runner import initial_state
from freshrec.replay.timeline import (
    DAY,
    observed_requests,
    period,
    prefix_split,
    request_times,
    steps,
    window_interactions,
    window_items,
    window_requests,
)


def test_steps_cover_each_period_contiguously(ml_split):
    cut1, cut2 = ml_split.cutoffs
    for part in ("valid", "test"):
        walk = steps(ml_split, part, 1.0)
        start, end = period(ml_split, part)
        assert walk[0].t0 == start
        assert walk[-1].t1 == end
        assert all(a.t1 == b.t0 for a, b in itertools.pairwise(walk))
        assert all(s.t1 - s.t0 == DAY for s in walk[:-1])
        assert len(walk) == int(np.ceil((end - start) / DAY))  # ~822 days per period
    assert period(ml_split, "valid") == (cut1, cut2)
    assert len(steps(ml_split, "test", 7.0, max_steps=3)) == 3
    last = steps(ml_split, "valid", 7.0, max_steps=2, align="end")
    assert all(s.t1 - s.t0 == 7 * DAY for s in last)  # full steps back from the end
    every = steps(ml_split, "valid", 7.0, align="end")
    assert every[0].t0 == cut1
    assert every[0].t1 - every[0].t0 < 7 * DAY
    assert last[-1].t1 == cut2
    assert last[0].index == len(steps(ml_split, "valid", 7.0)) - 2


def test_steps_reject_bad_settings(ml_split, ml_dataset):
    with pytest.raises(ConfigError, match="step_days"):
        steps(ml_split, "test", 0.0)
    with pytest.raises(ConfigError, match="max_steps"):
        steps(ml_split, "test", 1.0, max_steps=0)
    with pytest.raises(ConfigError, match="global time split"):
        steps(leave_one_out(ml_dataset), "test", 1.0)
    with pytest.raises(ConfigError, match="align"):
        steps(ml_split, "test", 1.0, 3, align="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="part"):
        period(ml_split, "train")  # type: ignore[arg-type]


def test_window_requests_and_their_cap(ml_split):
    req = ml_split.test
    times = request_times(ml_split, req)
    walk = steps(ml_split, "test", 7.0)
    counts = [len(window_requests(ml_split, req, times, s.t0, s.t1)) for s in walk]
    assert sum(counts) == len(req)  # every test request falls in exactly one step
    busy = walk[int(np.argmax(counts))]
    a = window_requests(ml_split, req, times, busy.t0, busy.t1, cap=10, seed=3)
    b = window_requests(ml_split, req, times, busy.t0, busy.t1, cap=10, seed=3)
    assert len(a) == 10
    assert np.array_equal(a.user, b.user)
    assert np.array_equal(a.pos, b.pos)
    t = request_times(ml_split, a)
    assert ((t >= busy.t0) & (t < busy.t1)).all()
    assert (np.diff(a.user.astype(int)) >= 0).all()


def test_prefix_split_at_the_cutoff_is_the_training_split(ml_split):
    cut1, _ = ml_split.cutoffs
    same = prefix_split(ml_split, cut1)
    assert np.array_equal(same.train_len, ml_split.train_len)
    assert np.array_equal(same.is_new, ml_split.is_new)
    later = prefix_split(ml_split, cut1 + 30 * DAY)
    assert (later.train_len >= ml_split.train_len).all()
    assert later.is_new.sum() < same.is_new.sum()


def test_observed_requests_are_real_interactions_in_the_window(ml_split):
    _, cut2 = ml_split.cutoffs
    t0, t1 = cut2, cut2 + 60 * DAY
    items = np.flatnonzero(ml_split.is_new)
    req = observed_requests(ml_split, t0, t1, items)
    assert len(req) > 0
    assert (req.pos > 0).all()
    assert np.isin(req.target, items).all()
    t = request_times(ml_split, req)
    assert ((t >= t0) & (t < t1)).all()
    seq = ml_split.seq_items[ml_split.seq_offsets[req.user] + req.pos]
    assert np.array_equal(seq, req.target)
    idx = window_interactions(ml_split, t0, t1)
    assert window_items(ml_split, t0, t1).sum() == np.unique(ml_split.seq_items[idx]).size


def test_the_sid_table_grows_as_items_appear(ctx, ml_sids):
    state = initial_state(ctx)
    cut1, cut2 = ctx.split.cutoffs
    assert not (state.table.sids[ctx.split.is_new] >= 0).any()
    added = state.grow_table(ctx, cut2)
    seen = ctx.first_seen
    assert set(added.tolist()) == set(np.flatnonzero((seen >= cut1) & (seen < cut2)).tolist())
    assert (np.diff(seen[added]) >= 0).all()  # in order of appearance
    assert state.grow_table(ctx, cut2).size == 0  # nothing twice
    sids = state.table.sids
    has = (sids >= 0).all(axis=1)
    assert np.unique(sids[has], axis=0).shape[0] == has.sum()  # SIDs stay unique
    _, full = ml_sids  # codes match the bulk assignment; only collision digits may differ
    assert np.array_equal(sids[added, :-1], full.sids[added, :-1])
    cat = state.catalog(ctx, cut2)
    assert np.array_equal(cat.recommendable, has & (seen < cut2))
    assert np.array_equal(cat.is_new, ctx.split.is_new)
