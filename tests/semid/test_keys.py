"""lex_keys: distinct rows get distinct keys that sort like the rows; None beyond int64."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.semid.keys import MAX_KEY, lex_keys


def test_keys_sort_like_the_rows() -> None:
    rng = np.random.default_rng(0)
    radix = [7, 1, 300, 5]
    rows = np.stack([rng.integers(0, r, 500) for r in radix], axis=1)
    keys = lex_keys(rows, radix)
    assert keys is not None
    by_rows = np.lexsort(rows.T[::-1])
    assert np.array_equal(keys[by_rows], np.sort(keys))
    assert len(np.unique(keys)) == len(np.unique(rows, axis=0))


def test_no_keys_beyond_int64_and_radix_checked() -> None:
    rows = np.zeros((2, 2), dtype=np.int64)
    assert lex_keys(rows, [MAX_KEY, 2]) is None
    assert lex_keys(rows, [MAX_KEY, 1]) is not None
    with pytest.raises(ValueError):
        lex_keys(rows, [3])
