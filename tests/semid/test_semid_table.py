"""SidTable: collision digits, extension with new items, tokens, save/load (small arrays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.errors import CheckpointError, ConfigError, DataError, UnknownItemError
from freshrec.semid import SidTable, SidVocab
from freshrec.semid.table import _next_digits_by_groups, _next_digits_by_keys


def test_build_assigns_digits_in_item_order() -> None:
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0]])
    items = np.array([5, 3, 1, 9, 0])
    table = SidTable.build(codes, items, n_items=10, max_collision=4)
    assert table.sids.shape == (10, 3)
    # Items 1, 5, 9 share (1, 2): digits follow item index, not input order.
    assert table.lookup(np.array([1, 5, 9])).tolist() == [[1, 2, 0], [1, 2, 1], [1, 2, 2]]
    assert table.lookup(np.array([0, 3])).tolist() == [[0, 0, 0], [0, 0, 1]]
    assert table.assigned_mask.tolist() == [i in {0, 1, 3, 5, 9} for i in range(10)]
    assert (table.lookup(np.array([2, 4])) == -1).all()
    assert table.assigned_items.tolist() == [0, 1, 3, 5, 9]


def test_build_errors() -> None:
    with pytest.raises(DataError, match="listed more than once"):
        SidTable.build(np.zeros((2, 2), dtype=np.int64), np.array([1, 1]), 3, 4)
    with pytest.raises(UnknownItemError, match="outside"):
        SidTable.build(np.zeros((1, 2), dtype=np.int64), np.array([3]), 3, 4)
    with pytest.raises(ConfigError, match="one per codes row"):
        SidTable.build(np.zeros((2, 2), dtype=np.int64), np.array([0]), 3, 4)


def test_collision_overflow_is_a_clear_config_error() -> None:
    codes = np.tile([[4, 2, 7]], (5, 1))
    with pytest.raises(ConfigError, match=r"5 items share the codes \[4, 2, 7\].*max_collision=4"):
        SidTable.build(codes, np.arange(5), 5, max_collision=4)
    table = SidTable.build(codes[:4], np.arange(4), 6, max_collision=4)
    with pytest.raises(ConfigError, match="increase max_collision or codebook_size"):
        table.extend(codes[:1], np.array([5]))
    assert table.n_assigned == 4  # nothing assigned on error


def test_extend_uses_next_free_digit_and_never_changes_rows() -> None:
    table = SidTable.build(np.array([[0, 1], [0, 1], [2, 2]]), np.array([0, 1, 2]), 4, 8)
    before = table.sids.copy()
    new = table.extend(np.array([[0, 1], [3, 3], [0, 1], [2, 2]]), np.array([6, 3, 4, 5]))
    assert new.n_items == 7  # grows to fit the new item indices
    np.testing.assert_array_equal(
        new.sids[:4][table.assigned_mask], before[:4][table.assigned_mask]
    )
    np.testing.assert_array_equal(table.sids, before)  # the old table is untouched
    assert new.lookup(np.array([4, 6])).tolist() == [[0, 1, 2], [0, 1, 3]]
    assert new.lookup(np.array([3, 5])).tolist() == [[3, 3, 0], [2, 2, 1]]
    with pytest.raises(DataError, match="item index 4 already has a SID"):
        new.extend(np.array([[9, 9]]), np.array([4]))
    with pytest.raises(ConfigError, match="shrink"):
        new.extend(np.array([[9, 9]]), np.array([1]), n_items=2)
    with pytest.raises(ConfigError, match="levels"):
        new.extend(np.array([[9, 9, 9]]), np.array([1]))
    assert new.extend(np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)) == new


def test_extend_fills_a_gap_after_a_removed_digit() -> None:
    # A hand-made table whose group (0, 1) holds digits 0 and 2: next free digit is 3.
    sids = np.array([[0, 1, 0], [0, 1, 2], [-1, -1, -1]])
    table = SidTable(sids, max_collision=8).extend(np.array([[0, 1]]), np.array([2]))
    assert table.lookup(np.array([2])).tolist() == [[0, 1, 3]]
    sids[0, 0] = 5  # the table keeps its own copy
    assert table.sids[0, 0] == 0


def test_tokens_and_lookup_errors() -> None:
    table = SidTable.build(np.array([[3, 1], [3, 1]]), np.array([0, 2]), 3, 4)
    vocab = SidVocab(n_levels=2, codebook_size=4, max_collision=4)
    tokens = table.tokens(vocab)
    assert tokens[1].tolist() == [-1, -1, -1]
    assert tokens[0].tolist() == [2 + 3, 2 + 4 + 1, 2 + 8 + 0]
    np.testing.assert_array_equal(vocab.from_tokens(tokens[[0, 2]]), table.sids[[0, 2]])
    for p in range(3):
        block = vocab.block(p)
        assert ((tokens[[0, 2], p] >= block.start) & (tokens[[0, 2], p] < block.stop)).all()
    with pytest.raises(ConfigError, match="codebook_size"):
        table.tokens(SidVocab(n_levels=2, codebook_size=3, max_collision=4))
    with pytest.raises(ConfigError, match="levels"):
        table.tokens(SidVocab(n_levels=3, codebook_size=4, max_collision=4))
    with pytest.raises(UnknownItemError, match="item index 3"):
        table.lookup(np.array([0, 3]))


def test_save_load_round_trip_and_corruption(tmp_path: Path) -> None:
    table = SidTable.build(np.array([[3, 1], [3, 1], [0, 0]]), np.array([0, 2, 3]), 5, 4)
    table.save(tmp_path / "t.npz")
    loaded = SidTable.load(tmp_path / "t.npz")
    assert loaded == table
    assert loaded.max_collision == 4
    with pytest.raises(CheckpointError, match="does not exist"):
        SidTable.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        SidTable.load(tmp_path / "bad.npz")
    dup = SidTable(np.array([[1, 1, 0], [1, 1, 0]]), 4)
    dup.save(tmp_path / "dup.npz")
    with pytest.raises(CheckpointError, match="duplicate"):
        SidTable.load(tmp_path / "dup.npz")


@pytest.mark.parametrize(
    ("big", "dense"),
    [(False, True), (False, False), (True, True)],
    ids=["dense-keys", "searched-keys", "overflow-fallback"],
)
def test_extend_fast_path_matches_the_grouping_reference(
    big: bool, dense: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`extend`'s key lookups (dense table or binary search) give the lexsort grouping
    reference's digits, with unassigned rows, gaps in old digits, new groups and several new
    items per group; codes beyond int64 keys take the reference path itself."""
    import freshrec.semid.table as table_mod

    if not dense:  # binary search whatever the key space
        monkeypatch.setattr(table_mod, "DENSE_KEYS_PER_ROW", 0)
        monkeypatch.setattr(table_mod, "DENSE_KEYS_MIN", 0)
    rng = np.random.default_rng(0)
    n, L = 3000, 3
    scale = 2**40 if big else 1
    codes = rng.integers(0, 6, (n, L)) * scale
    table = SidTable.build(codes[:2000], np.arange(2000), n, max_collision=4096)
    sids = table.sids.copy()
    drop = rng.random(2000) < 0.1  # removed digits leave gaps; rows become unassigned
    sids[np.flatnonzero(drop)] = -1
    table = SidTable(sids, 4096)
    new = rng.permutation(np.arange(2000, n))
    new_codes = codes[new]
    new_codes[::5] = rng.integers(0, 9, (len(new_codes[::5]), L)) * scale  # new groups
    order = np.argsort(new, kind="stable")
    assigned = table.assigned_mask
    ref = _next_digits_by_groups(table.sids[assigned], new_codes[order])
    fast = _next_digits_by_keys(table.sids, assigned, new_codes[order])
    if big:
        assert fast is None
    else:
        assert fast is not None
        np.testing.assert_array_equal(fast, ref)
    out = table.extend(new_codes, new)
    np.testing.assert_array_equal(out.sids[new[order], -1], ref)
    np.testing.assert_array_equal(out.sids[:2000], table.sids[:2000])
    assigned_out = out.sids[out.assigned_mask]
    assert np.unique(assigned_out, axis=0).shape[0] == assigned_out.shape[0]
