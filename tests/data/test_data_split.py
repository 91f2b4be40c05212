"""Split invariants: time split on the bundled MovieLens, leave-one-out, first_seen, stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from freshrec.data import (
    Dataset,
    Requests,
    Split,
    first_seen,
    leave_one_out,
    load_custom,
    split_stats,
    stats_table,
    time_split,
)
from freshrec.errors import ConfigError


def _target_pos(split: Split, req: Requests) -> np.ndarray:
    """Index into seq_items of each request's target."""
    return split.seq_offsets[req.user] + req.pos


def _train_mask(split: Split) -> np.ndarray:
    """bool[n_interactions] over seq_items: inside its user's training prefix."""
    n = split.seq_items.shape[0]
    user = np.repeat(np.arange(len(split.train_len)), np.diff(split.seq_offsets))
    return np.arange(n) < split.seq_offsets[user] + split.train_len[user]


# --------------------------------------------------------------------------- the expected numbers


def test_movielens_time_split_counts(ml_split: Split) -> None:
    """Independent count: 71,888 training, 17,415 test ratings, 2,566 new items, 4,317 cold."""
    stats = split_stats(ml_split)
    assert stats["train_interactions"] == 71_888
    assert stats["test_interactions"] == 17_415
    assert stats["valid_interactions"] == 11_533
    assert stats["new_items"] == 2_566
    test_ts = ml_split.seq_ts[~_train_mask(ml_split)]
    test_items = ml_split.seq_items[~_train_mask(ml_split)][test_ts >= ml_split.cutoffs[1]]
    cold = int(ml_split.is_new[test_items].sum())
    assert cold == 4_317
    assert round(cold / 17_415, 3) == 0.248
    # requests: every test rating except the users' first ratings (empty history)
    assert ml_split.skipped == {"valid_empty_history": 70, "test_empty_history": 77}
    assert len(ml_split.test) == 17_415 - 77
    assert int(ml_split.test.cold.sum()) == 4_314


def test_cutoffs(ml_split: Split, ml_dataset: Dataset) -> None:
    ts = ml_dataset.interactions.ts
    t_min, t_max = int(ts.min()), int(ts.max())
    cut1 = t_min + 0.8 * (t_max - t_min)
    cut2 = t_min + 0.9 * (t_max - t_min)
    assert ml_split.scheme == "time"
    # integer cut-offs, rounded up: `ts < cut` is the same test for integer timestamps
    assert ml_split.cutoffs == (int(np.ceil(cut1)), int(np.ceil(cut2)))
    assert int((ts < cut1).sum()) == int(ml_split.train_len.sum())
    assert int((ts >= cut2).sum()) == 17_415


# --------------------------------------------------------------------------- time split invariants


def test_sequences_hold_every_interaction_in_time_order(ml_split: Split, ml_dataset: Dataset):
    inter = ml_dataset.interactions
    assert ml_split.seq_offsets[0] == 0
    assert ml_split.seq_offsets[-1] == len(inter)
    assert np.array_equal(np.diff(ml_split.seq_offsets), np.bincount(inter.user))
    assert np.array_equal(ml_split.seq_items, inter.item)
    assert np.array_equal(ml_split.seq_ts, inter.ts)
    user = np.repeat(np.arange(ml_dataset.n_users), np.diff(ml_split.seq_offsets))
    order = np.lexsort((ml_split.seq_items, ml_split.seq_ts, user))
    assert np.array_equal(order, np.arange(len(inter)))  # time order, ties by item index
    assert ml_split.seq_items.dtype == np.int32
    assert ml_split.seq_ts.dtype == np.int64


def test_periods_respect_cutoffs(ml_split: Split) -> None:
    cut1, cut2 = ml_split.cutoffs
    train = _train_mask(ml_split)
    assert (ml_split.seq_ts[train] < cut1).all()  # no training interaction at/after cut1
    assert (ml_split.seq_ts[~train] >= cut1).all()
    valid_ts = ml_split.seq_ts[_target_pos(ml_split, ml_split.valid)]
    test_ts = ml_split.seq_ts[_target_pos(ml_split, ml_split.test)]
    assert ((valid_ts >= cut1) & (valid_ts < cut2)).all()
    assert (test_ts >= cut2).all()


def test_requests_point_at_their_targets(ml_split: Split) -> None:
    for req in (ml_split.valid, ml_split.test):
        assert (req.pos > 0).all()  # empty histories are skipped
        assert np.array_equal(ml_split.seq_items[_target_pos(ml_split, req)], req.target)
        assert np.array_equal(req.cold, ml_split.is_new[req.target])
        assert req.user.dtype == req.pos.dtype == req.target.dtype == np.int32
        assert req.cold.dtype == bool
    # every non-training interaction except a user's first is exactly one request
    n_req = len(ml_split.valid) + len(ml_split.test)
    n_later = int((~_train_mask(ml_split)).sum())
    assert n_req + sum(ml_split.skipped.values()) == n_later
    both = np.concatenate(
        [_target_pos(ml_split, ml_split.valid), _target_pos(ml_split, ml_split.test)]
    )
    assert np.unique(both).size == both.size


def test_is_new_comes_from_training_period(ml_split: Split, ml_dataset: Dataset) -> None:
    train_items = ml_split.seq_items[_train_mask(ml_split)]
    assert np.array_equal(
        ml_split.is_new, np.bincount(train_items, minlength=ml_dataset.n_items) == 0
    )
    assert np.array_equal(ml_split.is_new, first_seen(ml_dataset) >= ml_split.cutoffs[0])
    # cold targets never appear anywhere in the training-period sequences
    cold = np.concatenate(
        [ml_split.valid.target[ml_split.valid.cold], ml_split.test.target[ml_split.test.cold]]
    )
    assert cold.size > 0
    assert not np.isin(cold, train_items).any()


def test_histories_are_exactly_the_earlier_items(ml_split: Split) -> None:
    rng = np.random.default_rng(0)
    req = ml_split.test.subset(rng.choice(len(ml_split.test), 300, replace=False))
    for max_len in (1, 20, 3000):
        hist = ml_split.histories(req, max_len)
        assert hist.shape == (len(req), max_len)
        assert hist.dtype == np.int64
        for k in range(len(req)):
            seq = ml_split.sequence(int(req.user[k]))
            want = seq[: req.pos[k]][-max_len:]
            row = hist[k]
            assert (row[: max_len - want.size] == -1).all()
            assert np.array_equal(row[max_len - want.size :], want)
    # earlier means not later in time than the target
    hist = ml_split.histories(req, 50)
    start = ml_split.seq_offsets[req.user]
    target_ts = ml_split.seq_ts[start + req.pos]
    idx = (start + req.pos)[:, None] - np.arange(50, 0, -1)[None, :]
    valid = hist >= 0
    assert (
        ml_split.seq_ts[idx[valid]] <= np.broadcast_to(target_ts[:, None], idx.shape)[valid]
    ).all()


def test_train_sequence_and_train_len(ml_split: Split) -> None:
    cut1 = ml_split.cutoffs[0]
    for user in (0, 17, 609):
        seq, ts = (
            ml_split.sequence(user),
            ml_split.seq_ts[ml_split.seq_offsets[user] : ml_split.seq_offsets[user + 1]],
        )
        assert ml_split.train_len[user] == int((ts < cut1).sum())
        assert np.array_equal(ml_split.train_sequence(user), seq[ts < cut1])


def test_first_seen(ml_dataset: Dataset) -> None:
    seen = first_seen(ml_dataset)
    inter = ml_dataset.interactions
    assert seen.dtype == np.int64
    assert seen.shape == (ml_dataset.n_items,)
    want = np.full(ml_dataset.n_items, np.iinfo(np.int64).max)
    np.minimum.at(want, inter.item, inter.ts)
    assert np.array_equal(seen, want)


def test_other_fractions(ml_dataset: Dataset) -> None:
    split = time_split(ml_dataset, train_frac=0.5, valid_frac=0.0)
    assert len(split.valid) == 0
    assert split.skipped["valid_empty_history"] == 0
    assert split_stats(split)["train_interactions"] + split_stats(split)["test_interactions"] == (
        len(ml_dataset.interactions)
    )


@pytest.mark.parametrize(("train", "valid"), [(0.0, 0.1), (0.9, 0.2), (1.2, 0.0), (0.8, -0.1)])
def test_bad_fractions(ml_dataset: Dataset, train: float, valid: float) -> None:
    with pytest.raises(ConfigError, match=r"time split fractions"):
        time_split(ml_dataset, train_frac=train, valid_frac=valid)


# --------------------------------------------------------------------------- leave-one-out


def test_leave_one_out_on_movielens(ml_dataset: Dataset) -> None:
    split = leave_one_out(ml_dataset)
    lengths = np.diff(split.seq_offsets)
    assert split.scheme == "loo"
    assert split.cutoffs is None
    assert (lengths >= 3).all()  # every MovieLens user has >= 20 ratings
    assert len(split.test) == len(split.valid) == ml_dataset.n_users
    assert np.array_equal(split.test.user, np.arange(ml_dataset.n_users))
    assert np.array_equal(split.test.pos, lengths - 1)
    assert np.array_equal(split.valid.pos, lengths - 2)
    assert np.array_equal(split.train_len, lengths - 2)
    assert np.array_equal(split.seq_items[split.seq_offsets[1:] - 1], split.test.target)
    train_items = split.seq_items[_train_mask(split)]
    assert np.array_equal(split.is_new, np.bincount(train_items, minlength=ml_dataset.n_items) == 0)
    assert np.array_equal(split.test.cold, split.is_new[split.test.target])
    stats = split_stats(split)
    assert stats["train_interactions"] + 2 * ml_dataset.n_users == len(ml_dataset.interactions)


def test_leave_one_out_short_users(custom_dir: Path) -> None:
    path = custom_dir / "interactions.csv"
    path.write_text(
        path.read_text(encoding="utf-8") + "7,2,1700500000\n7,3,1700500001\n8,4,1700600000\n",
        encoding="utf-8",
    )
    ds = load_custom(custom_dir)
    split = leave_one_out(ds)
    lengths = np.diff(split.seq_offsets)
    assert lengths.tolist() == [3, 3, 2, 1, 3]  # users 1, 2, 7, 8, 10
    assert split.train_len.tolist() == [1, 1, 2, 1, 1]
    assert split.test.user.tolist() == [0, 1, 4]
    assert split.valid.user.tolist() == [0, 1, 4]
    assert split.skipped["users_lt3"] == 2
    # every request's history is non-empty and the parts partition the interactions
    assert (split.valid.pos > 0).all()
    assert int(split.train_len.sum()) + len(split.valid) + len(split.test) == len(ds.interactions)


# --------------------------------------------------------------------------- stats


def test_stats_match_split(ml_split: Split) -> None:
    stats = split_stats(ml_split)
    assert stats["users"] == 610
    assert stats["items"] == 9_724
    assert stats["interactions"] == 100_836
    assert (
        stats["train_interactions"] + stats["valid_interactions"] + stats["test_interactions"]
        == stats["interactions"]
    )
    assert stats["valid_requests"] == len(ml_split.valid)
    assert stats["test_requests"] == len(ml_split.test)
    assert stats["new_items"] == int(ml_split.is_new.sum())
    assert stats["test_cold_share"] == pytest.approx(float(ml_split.test.cold.mean()))
    assert stats["valid_cold_share"] == pytest.approx(float(ml_split.valid.cold.mean()))
    assert stats["skipped"] == ml_split.skipped
    console = Console(width=120, record=True)
    console.print(stats_table(stats))
    text = console.export_text()
    assert "71,888" in text
    assert "17,415" in text
    assert "2,566" in text
    assert "24.9%" in text
