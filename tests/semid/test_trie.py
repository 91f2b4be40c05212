"""SidTrie: accepts exactly the catalog, grows without moving old nodes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freshrec.errors import ConfigError
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import SidVocab

VOCAB = SidVocab(n_levels=3, codebook_size=5, max_collision=3)  # 375 possible SIDs


def _all_sids(vocab: SidVocab) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s) for s in vocab.sizes], indexing="ij")
    return np.stack(grids, axis=-1).reshape(-1, vocab.sid_len).astype(np.int64)


def _catalog(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sids[n], items[n], other_sids): a random catalog and every SID not in it."""
    rng = np.random.default_rng(seed)
    grid = _all_sids(VOCAB)
    perm = rng.permutation(len(grid))
    items = rng.permutation(1000)[:n]
    return grid[perm[:n]], items, grid[perm[n:]]


def _walk(trie: SidTrie, sid: np.ndarray) -> list[int]:
    """Node ids along a SID's path (last = item), by plain indexing of the tables."""
    node, path = 0, []
    for p, code in enumerate(sid):
        node = int(trie.children[p][node, code])
        path.append(node)
        if node < 0:
            break
    return path


def test_accepts_exactly_the_catalog():
    sids, items, others = _catalog(120)
    trie = SidTrie.build(sids, items, VOCAB)
    assert len(trie) == 120
    assert [c.shape[1] for c in trie.children] == VOCAB.sizes
    assert trie.children[0].shape[0] == 1  # the root
    assert all(c.dtype == torch.long for c in trie.children)
    for sid, item in zip(sids, items, strict=True):
        assert _walk(trie, sid)[-1] == item
    assert np.array_equal(trie.lookup(sids), items)
    assert trie.contains(sids).all()
    assert not trie.contains(others).any()
    assert (trie.lookup(others) == -1).all()
    assert sorted(trie.items().tolist()) == sorted(items.tolist())
    # nodes per level = distinct prefixes
    for p in range(1, VOCAB.sid_len):
        assert trie.children[p].shape[0] == len(np.unique(sids[:, :p], axis=0))
    # out-of-range codes are rejected, not an index error
    assert not trie.contains(np.array([[0, 0, 0, 7], [-1, 0, 0, 0]])).any()


def test_sids_items_round_trip():
    sids, items, _ = _catalog(50, seed=1)
    back_sids, back_items = SidTrie.build(sids, items, VOCAB).sids_items()
    order = np.argsort(items)
    back = np.argsort(back_items)
    assert np.array_equal(back_items[back], items[order])
    assert np.array_equal(back_sids[back], sids[order])


def test_add_keeps_old_paths_and_node_ids():
    sids, items, others = _catalog(80, seed=2)
    trie = SidTrie.build(sids[:50], items[:50], VOCAB)
    before = [c.clone() for c in trie.children]
    paths = [_walk(trie, s) for s in sids[:50]]
    trie.add(sids[50:], items[50:])
    assert len(trie) == 80
    for old, new in zip(before, trie.children, strict=True):
        assert new.shape[0] >= old.shape[0]
        head = new[: old.shape[0]]
        kept = old >= 0
        assert torch.equal(head[kept], old[kept])  # existing entries unchanged
    assert [_walk(trie, s) for s in sids[:50]] == paths
    assert np.array_equal(trie.lookup(sids), items)
    assert not trie.contains(others).any()
    # incremental == built at once (same accepted set)
    full = SidTrie.build(sids, items, VOCAB)
    assert np.array_equal(full.lookup(sids), trie.lookup(sids))


def test_duplicates_are_clear_errors():
    sids, items, _ = _catalog(10, seed=3)
    dup = np.concatenate([sids, sids[:1]])
    with pytest.raises(ConfigError, match="duplicate SID"):
        SidTrie.build(dup, np.arange(11), VOCAB)
    trie = SidTrie.build(sids, items, VOCAB)
    before = [c.clone() for c in trie.children]
    with pytest.raises(ConfigError, match="already in the trie"):
        trie.add(sids[3:4], np.array([999]))
    with pytest.raises(ConfigError, match="more than one SID"):
        trie.add(_catalog(11, seed=3)[2][:1], items[:1])
    with pytest.raises(ConfigError, match="out of range"):
        trie.add(np.array([[0, 0, 5, 0]]), np.array([500]))
    with pytest.raises(ConfigError):
        trie.add(sids[:2], np.array([1]))
    assert all(torch.equal(a, b) for a, b in zip(before, trie.children, strict=True))


def test_restrict_and_from_table():
    sids, _, _ = _catalog(40, seed=4)
    table = sids.copy()
    table[[5, 6]] = -1  # unassigned items
    trie = SidTrie.from_table(table, VOCAB)
    assert sorted(trie.items().tolist()) == [i for i in range(40) if i not in (5, 6)]
    warm = np.arange(40) % 3 == 0
    sub = trie.restrict(warm)
    assert sorted(sub.items().tolist()) == [i for i in range(40) if i % 3 == 0 and i not in (5, 6)]
    assert np.array_equal(
        sub.lookup(table[warm & (table >= 0).all(1)]), np.flatnonzero(warm & (table >= 0).all(1))
    )
    assert not sub.contains(table[~warm & (table >= 0).all(1)]).any()
    also = SidTrie.from_table(table, VOCAB, mask=warm)
    assert sorted(also.items().tolist()) == sorted(sub.items().tolist())


def test_empty_trie():
    trie = SidTrie.empty(VOCAB)
    assert len(trie) == 0
    assert not trie.contains(_all_sids(VOCAB)[:5]).any()
    trie.add(_all_sids(VOCAB)[:2], np.array([4, 9]))
    assert trie.lookup(_all_sids(VOCAB)[:3]).tolist() == [4, 9, -1]


def _reference_add(children: list[np.ndarray], sids: np.ndarray, items: np.ndarray) -> None:
    """Plain-Python insertion: per level, the distinct missing (node, code) pairs get new
    node ids in sorted pair order (the contract `SidTrie.add` implements with sorts)."""
    node = [0] * len(sids)
    for p in range(sids.shape[1]):
        if p == sids.shape[1] - 1:
            for i, sid in enumerate(sids):
                children[p][node[i], sid[p]] = items[i]
            break
        missing = sorted(
            {(node[i], int(s[p])) for i, s in enumerate(sids)}
            - {(n, c) for n, c in zip(*np.nonzero(children[p] >= 0), strict=True)}
        )
        start = children[p + 1].shape[0]
        for k, (n, c) in enumerate(missing):
            children[p][n, c] = start + k
        grow = np.full((len(missing), children[p + 1].shape[1]), -1, dtype=np.int64)
        children[p + 1] = np.concatenate([children[p + 1], grow])
        node = [int(children[p][node[i], s[p]]) for i, s in enumerate(sids)]


@pytest.mark.parametrize(
    "vocab",
    [VOCAB, SidVocab(n_levels=4, codebook_size=65536, max_collision=4)],  # keys | row sort
    ids=["keys", "rows"],
)
def test_build_and_add_match_a_plain_reference(vocab):
    """Node ids, tables and duplicate errors equal a plain per-SID insertion, both on the
    1-d key path and on the row-sort fallback (radix product beyond int64)."""
    rng = np.random.default_rng(5)
    grid = np.unique(rng.integers(0, 3, (120, vocab.sid_len)), axis=0)
    grid[::7, 0] = vocab.sizes[0] - 1  # a few large codes
    grid = np.unique(grid, axis=0)
    sids = grid[rng.permutation(len(grid))]
    items = rng.permutation(10 * len(sids))[: len(sids)]
    half = len(sids) // 2
    trie = SidTrie.build(sids[:half], items[:half], vocab)
    trie.add(sids[half:], items[half:])
    ref = [c.numpy() for c in SidTrie.empty(vocab).children]
    _reference_add(ref, sids[:half], items[:half])
    _reference_add(ref, sids[half:], items[half:])
    for got, want in zip(trie.children, ref, strict=True):
        assert np.array_equal(got.numpy(), want)
    dup = np.concatenate([sids[:9], sids[[4, 2]]])
    first = sorted(map(tuple, sids[[4, 2]]))[0]
    with pytest.raises(ConfigError, match=rf"duplicate SID \[{', '.join(map(str, first))}\]"):
        SidTrie.build(dup, np.arange(11), vocab)
