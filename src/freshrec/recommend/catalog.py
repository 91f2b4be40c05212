"""`Catalog`: the items a recommender encodes histories with and decodes over (an immutable value).

Every item with a SID can appear in a history; `recommendable` items can be recommended, split
into warm (trained on) and new (`is_new`) ones. A scope picks which recommendable items a
decoder may return: "warm" (plain TIGER), "full" (all recommendable items, TIGER_C / edited
models) or "new" (new items only). Tries are built on first use and shared by catalogs
derived with `grow` / `with_embeddings`, so a service swaps in a new Catalog (e.g. when items
go live) without touching the one in-flight requests read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from freshrec.data.schema import Split
from freshrec.errors import ConfigError
from freshrec.semid.table import SidTable
from freshrec.semid.trie import SidTrie
from freshrec.semid.vocab import SidVocab

Scope = Literal["warm", "full", "new"]
SCOPES: tuple[Scope, ...] = ("warm", "full", "new")


@dataclass(frozen=True, eq=False)
class Catalog:
    """sids: int64[n_items, sid_len] SID codes (-1 rows: no SID yet, never in a history);
    vocab: the model's `SidVocab`; recommendable: bool[n_items]; is_new: bool[n_items] (no
    training interactions); embeddings: float32[n_items, d] item text embeddings or None.
    Treat the arrays as read-only."""

    sids: np.ndarray
    vocab: SidVocab
    recommendable: np.ndarray
    is_new: np.ndarray
    embeddings: np.ndarray | None = None
    _tokens: np.ndarray = field(init=False, repr=False)
    _tries: dict[str, SidTrie] = field(init=False, repr=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        sids = np.asarray(self.sids, dtype=np.int64)
        n, P = sids.shape[0], self.vocab.sid_len
        if sids.ndim != 2 or sids.shape[1] != P:
            raise ConfigError(f"catalog sids must be int64[n_items, {P}], got {sids.shape}")
        assigned = (sids >= 0).all(axis=1)
        if (sids[assigned] >= np.asarray(self.vocab.sizes)).any():
            raise ConfigError(f"catalog SIDs do not fit the vocab {self.vocab}")
        rec = np.asarray(self.recommendable, dtype=bool)
        is_new = np.asarray(self.is_new, dtype=bool)
        if rec.shape != (n,) or is_new.shape != (n,):
            raise ConfigError(f"catalog recommendable and is_new must be bool[{n}]")
        if (rec & ~assigned).any():
            raise ConfigError("a recommendable item has no SID")
        if self.embeddings is not None and self.embeddings.shape[0] != n:
            raise ConfigError(f"catalog embeddings have {self.embeddings.shape[0]} rows, not {n}")
        for name, value in (("sids", sids), ("recommendable", rec), ("is_new", is_new)):
            object.__setattr__(self, name, value)
        tokens = np.where(sids >= 0, sids + np.asarray(self.vocab.offsets), -1)
        object.__setattr__(self, "_tokens", tokens)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_split(
        cls,
        split: Split,
        table: SidTable,
        vocab: SidVocab,
        embeddings: np.ndarray | None = None,
    ) -> Catalog:
        """Every item with a SID is recommendable; new = `split.is_new` (rows past the split's
        items count as new)."""
        sids = np.asarray(table.sids, dtype=np.int64)
        is_new = np.ones(sids.shape[0], dtype=bool)
        known = np.asarray(split.is_new, dtype=bool)[: sids.shape[0]]
        is_new[: known.shape[0]] = known
        return cls(sids, vocab, (sids >= 0).all(axis=1), is_new, embeddings)

    def grow(self, sids: np.ndarray, is_new: np.ndarray) -> Catalog:
        """The same recommendable items with their SIDs, plus more items with SIDs that are
        not recommendable (e.g. pending ones, usable in histories); built tries are kept."""
        sids = np.asarray(sids, dtype=np.int64)
        n, m = self.n_items, sids.shape[0]
        rec, is_new = self.recommendable, np.asarray(is_new, dtype=bool)
        same = m >= n and is_new.shape == (m,)
        if not (same and np.array_equal(sids[:n][rec], self.sids[rec])):
            raise ConfigError("grow keeps every item and the recommendable items' SIDs")
        if not np.array_equal(is_new[:n][rec], self.is_new[rec]):
            raise ConfigError("grow keeps the recommendable items' is_new")
        grown = np.zeros(m, dtype=bool)
        grown[:n] = rec
        emb = self.embeddings if m == n else None
        out = Catalog(sids, self.vocab, grown, is_new, emb)
        out._share_tries(self)
        return out

    def with_embeddings(self, embeddings: np.ndarray) -> Catalog:
        """This catalog with item text embeddings float32[n_items, d] (tries kept)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        out = Catalog(self.sids, self.vocab, self.recommendable, self.is_new, emb)
        out._share_tries(self)
        return out

    def _share_tries(self, other: Catalog) -> None:
        with other._lock:
            self._tries.update(other._tries)

    # ------------------------------------------------------------------ views
    @property
    def n_items(self) -> int:
        return int(self.sids.shape[0])

    @property
    def sid_tokens(self) -> np.ndarray:
        """int64[n_items, sid_len] model token ids of every item (-1 rows without a SID), for
        history encoding (`model.batches.history_tokens`)."""
        return self._tokens

    def mask(self, scope: Scope) -> np.ndarray:
        """bool[n_items]: the items a decoder over `scope` may return."""
        if scope == "full":
            return self.recommendable
        if scope == "warm":
            return self.recommendable & ~self.is_new
        if scope == "new":
            return self.recommendable & self.is_new
        raise ConfigError(f"catalog scope must be one of {', '.join(SCOPES)}, got {scope!r}")

    def size(self, scope: Scope) -> int:
        """Number of items of `scope`."""
        return int(self.mask(scope).sum())

    def trie(self, scope: Scope) -> SidTrie:
        """The trie of `scope`'s items (built on first use, then cached)."""
        mask = self.mask(scope)
        with self._lock:
            if scope not in self._tries:
                self._tries[scope] = SidTrie.from_table(self.sids, self.vocab, mask)
            return self._tries[scope]
