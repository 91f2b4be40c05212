"""`SidTable`: the catalog's semantic IDs, one row per item index.

A SID is the tokenizer's `n_levels` codes plus a collision digit that makes it unique: items
sharing the same codes get digits 0, 1, 2, ... Warm items are numbered in item-index order at
build time; new items later get the next free digit of their code group, and existing rows
never change (so a trained model's targets stay valid). Rows of items without a SID are -1.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from freshrec.atomic import write_bytes
from freshrec.errors import CheckpointError, ConfigError, DataError, UnknownItemError
from freshrec.semid.keys import lex_keys
from freshrec.semid.vocab import SidVocab

_FORMAT_VERSION = 1


def _group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense group id per row of codes int64[n, L] and the sorting order by (codes, row).

    Returns (group int64[n], order int64[n]); `order` sorts rows by codes then row index.
    """
    n = codes.shape[0]
    # lexsort sorts by the last key first: codes[:, 0] is the primary key, row index the last.
    order = np.lexsort(
        (np.arange(n), *tuple(codes[:, j] for j in range(codes.shape[1] - 1, -1, -1)))
    )
    sorted_codes = codes[order]
    new_group = np.ones(n, dtype=bool)
    if n > 1:
        new_group[1:] = (sorted_codes[1:] != sorted_codes[:-1]).any(axis=1)
    group_sorted = np.cumsum(new_group) - 1
    group = np.empty(n, dtype=np.int64)
    group[order] = group_sorted
    return group, order


def _ranks_within_groups(group: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank of each row within its group, in `order` (0 for the first row of a group)."""
    n = group.shape[0]
    g_sorted = group[order]
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = g_sorted[1:] != g_sorted[:-1]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - start_pos
    return ranks


def _next_digits_by_groups(old: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """Collision digits int64[m] of new rows with codes int64[m, L] (sorted by item index)
    next to the assigned SIDs old int64[n_old, L + 1]: the next free digit of each code
    group (1 + its largest digit, 0 for a new group), then 1, 2, ... in row order. The
    reference: groups old and new rows together, a lexsort of n_old + m rows."""
    L, m_old = new_codes.shape[1], old.shape[0]
    group, _order = _group_ids(np.concatenate([old[:, :L], new_codes], axis=0))
    next_free = np.zeros(int(group.max()) + 1, dtype=np.int64)
    if m_old:
        np.maximum.at(next_free, group[:m_old], old[:, L] + 1)
    new_group = group[m_old:]
    rank = _ranks_within_groups(new_group, np.argsort(new_group, kind="stable"))
    return next_free[new_group] + rank


DENSE_KEYS_PER_ROW, DENSE_KEYS_MIN = 8, 2**16
"""`_next_digits_by_keys` looks keys up in a dense int32 table when the key space has at most
DENSE_KEYS_PER_ROW entries per table row + DENSE_KEYS_MIN, else by binary search."""


def _next_digits_by_keys(
    sids: np.ndarray, assigned: np.ndarray, new_codes: np.ndarray
) -> np.ndarray | None:
    """`_next_digits_by_groups` for a table sids int64[n, L + 1] (assigned rows: bool[n])
    without sorting it: the m new code rows' distinct keys are numbered, and each old row's
    key is looked up among them, in a dense table over the key space when it is small (3 x 64
    codes: 262,144 keys; O(n)), else by binary search (O(n log m)). None when the codes' key
    would overflow int64 (then use the reference)."""
    L = new_codes.shape[1]
    old_codes = sids[:, :L]
    radix = new_codes.max(axis=0) + 1
    if old_codes.size:  # unassigned rows are -1: they never raise the maximum
        radix = np.maximum(radix, old_codes.max(axis=0) + 1)
    new_keys = lex_keys(new_codes, radix)
    if new_keys is None:
        return None
    uniq, group = np.unique(new_keys, return_inverse=True)
    group = group.reshape(-1)
    old_keys = lex_keys(old_codes, radix)  # meaningless on unassigned rows: masked below
    assert old_keys is not None
    space = int(np.prod(radix, dtype=np.int64))
    if space <= DENSE_KEYS_PER_ROW * sids.shape[0] + DENSE_KEYS_MIN:
        slot = np.full(space, -1, dtype=np.int32)
        slot[uniq] = np.arange(len(uniq), dtype=np.int32)
        pos = slot[np.where(assigned, old_keys, 0)]
        hit = assigned & (pos >= 0)
    else:
        pos = np.minimum(np.searchsorted(uniq, old_keys), len(uniq) - 1)
        hit = assigned & (uniq[pos] == old_keys)
    next_free = np.zeros(len(uniq), dtype=np.int64)
    np.maximum.at(next_free, pos[hit], sids[hit, L] + 1)
    rank = _ranks_within_groups(group, np.argsort(group, kind="stable"))
    return next_free[group] + rank


class SidTable:
    """Semantic IDs of the catalog.

    sids: int64[n_items, n_levels + 1]; columns 0..L-1 are codes, column L the collision digit;
    a row of -1 means the item has no SID yet. `max_collision` bounds the collision digit.
    """

    def __init__(self, sids: np.ndarray, max_collision: int) -> None:
        sids = np.asarray(sids)
        if sids.ndim != 2 or sids.shape[1] < 2:
            raise ConfigError(f"sids must be int[n_items, n_levels + 1], got shape {sids.shape}")
        if max_collision < 1:
            raise ConfigError(f"max_collision must be >= 1, got {max_collision}")
        # An own copy. Treat it as immutable (grow the table with `extend`); it is left
        # writable only because torch warns on every non-writable numpy array it wraps.
        self.sids = np.array(sids, dtype=np.int64, order="C")
        self.max_collision = int(max_collision)

    @classmethod
    def _own(cls, sids: np.ndarray, max_collision: int) -> SidTable:
        """A table taking ownership of sids int64[n_items, sid_len] (C order, made here; no
        copy, unlike the constructor)."""
        table = cls.__new__(cls)
        table.sids, table.max_collision = sids, int(max_collision)
        return table

    # ------------------------------------------------------------------ shape
    @property
    def n_items(self) -> int:
        return int(self.sids.shape[0])

    @property
    def n_levels(self) -> int:
        return int(self.sids.shape[1] - 1)

    @property
    def sid_len(self) -> int:
        return int(self.sids.shape[1])

    @property
    def codes(self) -> np.ndarray:
        """int64[n_items, n_levels]: the quantisation codes (-1 rows if unassigned)."""
        return self.sids[:, :-1]

    @property
    def assigned_mask(self) -> np.ndarray:
        """bool[n_items]: True where the item has a SID."""
        return self.sids[:, -1] >= 0

    @property
    def assigned_items(self) -> np.ndarray:
        """int64[n_assigned]: item indices that have a SID, ascending."""
        return np.flatnonzero(self.assigned_mask).astype(np.int64)

    @property
    def n_assigned(self) -> int:
        return int(self.assigned_mask.sum())

    def __repr__(self) -> str:
        return (
            f"SidTable(n_items={self.n_items}, n_assigned={self.n_assigned}, "
            f"n_levels={self.n_levels}, max_collision={self.max_collision})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SidTable):
            return NotImplemented
        return self.max_collision == other.max_collision and np.array_equal(self.sids, other.sids)

    __hash__ = None  # type: ignore[assignment]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """`np.asarray(table)` is the sids array (so SidTrie.from_table(table, vocab) works)."""
        out = self.sids if dtype is None else self.sids.astype(dtype, copy=False)
        return out.copy() if copy else out

    # ------------------------------------------------------------------ building
    @staticmethod
    def _check_inputs(
        codes: np.ndarray, items: np.ndarray, n_items: int, n_levels: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        codes = np.asarray(codes)
        items = np.asarray(items)
        if codes.ndim != 2:
            raise ConfigError(f"codes must be int[n, n_levels], got shape {codes.shape}")
        if n_levels is not None and codes.shape[1] != n_levels:
            raise ConfigError(f"codes have {codes.shape[1]} levels, the table has {n_levels}")
        if items.ndim != 1 or items.shape[0] != codes.shape[0]:
            raise ConfigError(
                f"items must be int[{codes.shape[0]}] (one per codes row), got shape {items.shape}"
            )
        if not np.issubdtype(codes.dtype, np.integer) and codes.size:
            raise ConfigError(f"codes must be integers, got dtype {codes.dtype}")
        if not np.issubdtype(items.dtype, np.integer) and items.size:
            raise ConfigError(f"items must be integer item indices, got dtype {items.dtype}")
        codes = codes.astype(np.int64, copy=False)
        items = items.astype(np.int64, copy=False)
        if codes.size and codes.min() < 0:
            raise ConfigError(f"codes must be >= 0, got {int(codes.min())}")
        if items.size:
            if items.min() < 0 or items.max() >= n_items:
                bad = items[(items < 0) | (items >= n_items)][0]
                raise UnknownItemError(f"item index {int(bad)} is outside 0..{n_items - 1}")
            uniq, counts = np.unique(items, return_counts=True)
            if (counts > 1).any():
                raise DataError(f"item index {int(uniq[counts > 1][0])} is listed more than once")
        return codes, items

    @staticmethod
    def _overflow_error(codes: np.ndarray, digit: np.ndarray, max_collision: int) -> ConfigError:
        worst = int(np.argmax(digit))
        return ConfigError(
            f"{int(digit[worst]) + 1} items share the codes {codes[worst].tolist()}, more than "
            f"max_collision={max_collision} collision digits allow; increase max_collision or "
            "codebook_size (or n_levels) so the tokenizer separates items better"
        )

    @classmethod
    def build(
        cls, codes: np.ndarray, items: np.ndarray, n_items: int, max_collision: int
    ) -> SidTable:
        """Table for `items` (int[n], unique item indices < n_items) with `codes` int[n, L].

        Items sharing the same L codes get collision digits 0, 1, 2, ... in item-index order.
        Raises `ConfigError` if a group needs more than `max_collision` digits.
        """
        if n_items < 0:
            raise ConfigError(f"n_items must be >= 0, got {n_items}")
        codes, items = cls._check_inputs(codes, items, n_items, None)
        n_levels = codes.shape[1]
        sids = np.full((n_items, n_levels + 1), -1, dtype=np.int64)
        if items.size:
            # Rank inside each code group by item index: reorder rows by item first.
            by_item = np.argsort(items, kind="stable")
            c, it = codes[by_item], items[by_item]
            group, order = _group_ids(c)
            digit = _ranks_within_groups(group, order)
            if digit.max() >= max_collision:
                raise cls._overflow_error(c, digit, max_collision)
            sids[it, :n_levels] = c
            sids[it, n_levels] = digit
        return cls(sids, max_collision)

    def extend(self, codes: np.ndarray, items: np.ndarray, n_items: int | None = None) -> SidTable:
        """A new table with SIDs for new `items` (int[m]) whose codes are `codes` int[m, L].

        Each new item gets the next free collision digit of its code group (new items of one
        group in item-index order). Existing rows are copied unchanged. The catalog grows to
        `n_items` (default: large enough for `items`). Raises `DataError` if an item already
        has a SID and `ConfigError` if a group would exceed `max_collision`; on error nothing
        is assigned.
        """
        items_arr = np.asarray(items)
        grow_to = self.n_items
        if items_arr.size and np.issubdtype(items_arr.dtype, np.integer):
            grow_to = max(grow_to, int(items_arr.max()) + 1)
        if n_items is not None:
            if n_items < self.n_items:
                raise ConfigError(
                    f"n_items={n_items} would shrink the table ({self.n_items} items)"
                )
            grow_to = n_items
        codes, items_arr = self._check_inputs(codes, items_arr, grow_to, self.n_levels)
        sids = np.empty((grow_to, self.sid_len), dtype=np.int64)
        sids[: self.n_items] = self.sids
        sids[self.n_items :] = -1
        if items_arr.size == 0:
            return SidTable._own(sids, self.max_collision)
        taken = items_arr[items_arr < self.n_items]
        taken = taken[self.sids[taken, -1] >= 0]
        if taken.size:
            raise DataError(
                f"item index {int(taken[0])} already has a SID {self.sids[taken[0]].tolist()}; "
                f"existing SIDs never change ({taken.size} such item(s))"
            )
        L = self.n_levels
        by_item = np.argsort(items_arr, kind="stable")
        new_codes, new_items = codes[by_item], items_arr[by_item]
        assigned = self.assigned_mask
        digit = _next_digits_by_keys(self.sids, assigned, new_codes)
        if digit is None:  # codes too large for int64 keys
            digit = _next_digits_by_groups(self.sids[assigned], new_codes)
        if digit.max() >= self.max_collision:
            raise self._overflow_error(new_codes, digit, self.max_collision)
        sids[new_items, :L] = new_codes
        sids[new_items, L] = digit
        return SidTable._own(sids, self.max_collision)

    # ------------------------------------------------------------------ queries
    def lookup(self, items: np.ndarray) -> np.ndarray:
        """SIDs int64[..., sid_len] of item indices int[...]; -1 rows for unassigned items.

        Raises `UnknownItemError` for indices outside the catalog.
        """
        items = np.asarray(items)
        if items.size and not np.issubdtype(items.dtype, np.integer):
            raise UnknownItemError(f"item indices must be integers, got dtype {items.dtype}")
        items = items.astype(np.int64, copy=False)
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            bad = items[(items < 0) | (items >= self.n_items)].ravel()[0]
            raise UnknownItemError(f"item index {int(bad)} is outside 0..{self.n_items - 1}")
        return self.sids[items]

    def tokens(self, vocab: SidVocab) -> np.ndarray:
        """Model token ids int64[n_items, sid_len] via `vocab.to_tokens`.

        Rows of unassigned items stay -1 (never PAD), so using one by mistake fails loudly.
        Raises `ConfigError` if the vocabulary cannot represent the table.
        """
        if vocab.n_levels != self.n_levels:
            raise ConfigError(f"vocab has {vocab.n_levels} levels, the SID table {self.n_levels}")
        mask = self.assigned_mask
        assigned = self.sids[mask]
        if assigned.size:
            if assigned[:, :-1].max() >= vocab.codebook_size:
                raise ConfigError(
                    f"SID code {int(assigned[:, :-1].max())} >= vocab codebook_size "
                    f"{vocab.codebook_size}"
                )
            if assigned[:, -1].max() >= vocab.max_collision:
                raise ConfigError(
                    f"collision digit {int(assigned[:, -1].max())} >= vocab max_collision "
                    f"{vocab.max_collision}"
                )
        out = np.full_like(self.sids, -1)
        out[mask] = np.asarray(vocab.to_tokens(assigned))
        return out

    # ------------------------------------------------------------------ I/O
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            sids=self.sids,
            max_collision=np.int64(self.max_collision),
            format_version=np.int64(_FORMAT_VERSION),
        )
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        """Write the table to `path` (.npz) atomically."""
        write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> SidTable:
        """Read a table written by `save`; `CheckpointError` if missing or corrupt."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"SID table {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                sids = z["sids"]
                max_collision = int(z["max_collision"])
                version = int(z["format_version"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"SID table {path} is corrupt or incomplete: {exc}") from None
        if version != _FORMAT_VERSION:
            raise CheckpointError(
                f"SID table {path} has format {version}, expected {_FORMAT_VERSION}"
            )
        if sids.ndim != 2 or sids.dtype != np.int64:
            raise CheckpointError(f"SID table {path} has bad sids {sids.dtype}{list(sids.shape)}")
        table = cls(sids, max_collision)
        assigned = table.sids[table.assigned_mask]
        if (table.sids[~table.assigned_mask] != -1).any() or (assigned < 0).any():
            raise CheckpointError(f"SID table {path} has partially assigned rows")
        if np.unique(assigned, axis=0).shape[0] != assigned.shape[0]:
            raise CheckpointError(f"SID table {path} has duplicate SIDs")
        return table
