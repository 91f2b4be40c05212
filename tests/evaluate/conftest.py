"""Fixtures of the evaluate tests: a tiny hand-made Split, the real MovieLens split."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.data.schema import Dataset, Interactions, Items, Requests, Split


def make_tiny_split() -> Split:
    """3 users, 8 items (6, 7 new). Sequences (train_len in brackets):
    u0: 0 1 2 | 3 6      [3]   u1: 1 2 | 6 7 4   [2]   u2: 2 0 1 3 | 5   [4]
    Test requests: (u0, pos 4 -> 6 cold), (u1, pos 3 -> 7 cold), (u1, pos 4 -> 4 warm),
    (u2, pos 4 -> 5 warm). Valid: (u0, pos 3 -> 3), (u1, pos 2 -> 6 cold)."""
    seqs = [[0, 1, 2, 3, 6], [1, 2, 6, 7, 4], [2, 0, 1, 3, 5]]
    train_len = np.array([3, 2, 4], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    items = np.concatenate(seqs).astype(np.int32)
    users = np.repeat(np.arange(3), [len(s) for s in seqs]).astype(np.int32)
    ts = np.arange(len(items), dtype=np.int64)
    ids = [str(i) for i in range(8)]
    ds = Dataset(
        name="tiny",
        user_ids=["a", "b", "c"],
        items=Items(ids=ids, titles=ids, texts=ids),
        interactions=Interactions(user=users, item=items, ts=ts),
    )
    is_new = np.zeros(8, dtype=bool)
    is_new[[6, 7]] = True

    def req(rows: list[tuple[int, int]]) -> Requests:
        u = np.array([r[0] for r in rows], dtype=np.int32)
        p = np.array([r[1] for r in rows], dtype=np.int32)
        t = np.array([seqs[a][b] for a, b in rows], dtype=np.int32)
        return Requests(user=u, pos=p, target=t, cold=is_new[t])

    return Split(
        dataset=ds,
        seq_offsets=offsets,
        seq_items=items,
        seq_ts=ts,
        train_len=train_len,
        valid=req([(0, 3), (1, 2)]),
        test=req([(0, 4), (1, 3), (1, 4), (2, 4)]),
        is_new=is_new,
        scheme="time",
        cutoffs=(3, 6),
    )


@pytest.fixture
def tiny_split() -> Split:
    return make_tiny_split()


@pytest.fixture(scope="session")
def ml_embeddings(ml_emb: np.ndarray) -> np.ndarray:
    """float32[n_items, 384] real MiniLM text embeddings (the shared cached fixture)."""
    return ml_emb
