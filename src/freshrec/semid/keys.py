"""Integer keys of SID rows, so that grouping and de-duplicating SIDs is a 1-d sort.

A row of codes r[0..k-1] with 0 <= r[j] < radix[j] maps to its mixed-radix number
key = (...(r[0] * radix[1] + r[1]) * radix[2] + ...) + r[k-1]: distinct rows get distinct keys
and keys sort like the rows (lexicographically), so `np.unique(keys)` replaces the much slower
`np.unique(rows, axis=0)` / `np.lexsort` with identical order. When the radix product does
not fit int64 there is no key and callers sort the rows themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MAX_KEY = 2**62
"""Largest radix product keyed (headroom below int64's 2**63 for pair keys)."""


def lex_keys(rows: np.ndarray, radix: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """int64[n] order-preserving keys of rows int64[n, k] (0 <= rows[:, j] < radix[j]), or
    None when prod(radix) > MAX_KEY. Rows outside the radix get meaningless keys."""
    radix = [int(r) for r in radix]
    if len(radix) != rows.shape[1]:
        raise ValueError(f"{len(radix)} radixes for rows of {rows.shape[1]} columns")
    if math.prod(radix) > MAX_KEY:
        return None
    key = np.zeros(rows.shape[0], dtype=np.int64)
    for j, r in enumerate(radix):
        key *= r
        key += rows[:, j]
    return key
