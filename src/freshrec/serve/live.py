"""The service's in-memory catalog: the prepared split's warm items plus the items added
through the API (mirroring the catalog database), and the recommend `Catalog` built from it.

Model-side indices: an added id that the prepared dataset knows as a *new* item keeps that
dataset index; any other id gets the next index past the table's items. Histories may mention
any item with a SID (warm or added, whatever its status); recommendable = warm + the added
items whose status is shown (`LiveCatalog.shown`).
Callers hold the service's state lock around changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from freshrec.data.schema import Split
from freshrec.embed.encoder import EMBED_DIM
from freshrec.errors import CheckpointError, ConfigError
from freshrec.recommend.catalog import Catalog
from freshrec.semid import SidTable
from freshrec.semid.vocab import SidVocab
from freshrec.serve.catalog import FAILED, LIVE, PENDING, ROLLED_BACK, ItemRow
from freshrec.serve.inputs import ServeError, iso_time


@dataclass
class ItemState:
    """In-memory mirror of an added item's catalog row (no text / embedding)."""

    idx: int
    item_id: str
    title: str
    sid: tuple[int, ...]
    status: str
    created_at: float
    pack_id: str | None = None
    live_at: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, r: ItemRow) -> ItemState:
        return cls(
            r.idx, r.item_id, r.title, r.sid, r.status, r.created_at, r.pack_id, r.live_at, r.error
        )


class LiveCatalog:
    """table: SidTable of every item with a SID (dataset new items -1 until added); emb:
    float32[n_items, 384]; ids / titles per index; added: item id -> ItemState; shown: the
    statuses of added items that are recommended (mode "beam": live, i.e. edited in; mode
    "fresh": every status but rolled back, from the acknowledgement on)."""

    def __init__(
        self,
        split: Split,
        table: SidTable,
        emb: np.ndarray,
        vocab: SidVocab,
        shown: Collection[str] = (LIVE,),
    ) -> None:
        ds = split.dataset
        self.n_split = ds.n_items
        if emb.shape != (self.n_split, EMBED_DIM):
            raise ConfigError(f"item embeddings have shape {emb.shape}")
        self.vocab = vocab
        self.is_warm = ~np.asarray(split.is_new, dtype=bool)
        base = table.sids.copy()
        base[~self.is_warm] = -1  # dataset new items are not in the catalog until added
        self.table = SidTable(base, table.max_collision)
        self.emb = emb
        self.dataset_index = ds.items.index_of()
        self.ids: list[str] = list(ds.items.ids)
        self.titles: list[str] = list(ds.items.titles)
        self.lookup = {i: k for i, k in self.dataset_index.items() if self.is_warm[k]}
        self.added: dict[str, ItemState] = {}
        self.shown = tuple(shown)

    @property
    def n_warm(self) -> int:
        return int(self.is_warm.sum())

    def known(self, item_id: str) -> bool:
        return item_id in self.lookup

    def indices(self, ids: Sequence[str]) -> tuple[list[int], int]:
        """(model-side index of each new id, item count after adding them)."""
        n_total, idx = self.table.n_items, []
        for item_id in ids:
            k = self.dataset_index.get(item_id)
            if k is None:
                k, n_total = n_total, n_total + 1
            idx.append(k)
        return idx, n_total

    def crowded(self, codes: np.ndarray, ids: Sequence[str]) -> list[str]:
        """The ids of new items (codes int[m, n_levels], in `ids` order) that would find no
        free collision digit: their code group already holds `max_collision` items, counting
        the earlier items of the same batch."""
        L = codes.shape[1]
        sids = self.table.sids
        used = sids[sids[:, -1] >= 0]
        next_free: dict[tuple[int, ...], int] = {}
        for row in used.tolist():
            key = tuple(row[:L])
            next_free[key] = max(next_free.get(key, 0), row[L] + 1)
        full = []
        for item_id, c in zip(ids, codes.tolist(), strict=True):
            key = tuple(c)
            digit = next_free.get(key, 0)
            if digit >= self.table.max_collision:
                full.append(item_id)
            next_free[key] = digit + 1
        return full

    def _grow(self, n_total: int) -> tuple[np.ndarray, list[str], list[str]]:
        emb = np.zeros((n_total, EMBED_DIM), dtype=np.float32)
        emb[: self.emb.shape[0]] = self.emb
        extra = n_total - len(self.ids)
        return emb, self.ids + [""] * extra, self.titles + [""] * extra

    def add(self, rows: Sequence[ItemRow], table: SidTable, emb: np.ndarray) -> None:
        """Make durable rows (pending) visible: their SIDs (`table`), embeddings float32[m, d]."""
        grown, ids, titles = self._grow(table.n_items)
        grown[[r.idx for r in rows]] = emb
        for r in rows:
            ids[r.idx], titles[r.idx] = r.item_id, r.title
            self.added[r.item_id] = ItemState.of(r)
        self.table, self.emb, self.ids, self.titles = table, grown, ids, titles
        for r in rows:
            self.lookup[r.item_id] = r.idx

    def absorb(self, rows: Sequence[ItemRow], db: str) -> None:
        """Make durable rows visible with their stored SIDs and embeddings: every row at start,
        and on a read replica the rows its writer added since. CheckpointError when a row's
        index belongs to another item of the prepared data."""
        if not rows:
            return
        n_total = max([self.table.n_items, *[r.idx + 1 for r in rows]])
        sids = np.full((n_total, self.table.sid_len), -1, dtype=np.int64)
        sids[: self.table.n_items] = self.table.sids
        for r in rows:
            if r.idx < self.n_split and (self.ids[r.idx] != r.item_id or self.is_warm[r.idx]):
                raise CheckpointError(
                    f"catalog database {db}: item {r.item_id!r} has index {r.idx}, which the "
                    f"prepared data gives to {self.ids[r.idx]!r}; the database belongs to other "
                    "prepared data"
                )
            sids[r.idx] = r.sid
        emb = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in rows])
        self.add(rows, SidTable(sids, self.table.max_collision), emb)

    def track(self, rows: Sequence[ItemRow]) -> None:
        """Statuses of the database's rows (at start, after the packs were re-applied)."""
        for r in rows:
            self.added[r.item_id] = ItemState.of(r)
            self.lookup[r.item_id] = r.idx

    # ------------------------------------------------------------------ recommend catalog
    def is_new(self) -> np.ndarray:
        """bool[n_items]: added items and dataset new items."""
        out = np.ones(self.table.n_items, dtype=bool)
        out[: self.n_split] = ~self.is_warm
        return out

    def catalog(
        self,
        extra_live: Collection[int] = (),
        build_tries: bool = True,
        added: Mapping[str, ItemState] | None = None,
    ) -> Catalog:
        """The recommend Catalog of the current table and statuses (`added`, default the held
        ones), plus `extra_live` item indices, its full and new-only tries built now (unless not
        `build_tries`)."""
        live = np.zeros(self.table.n_items, dtype=bool)
        for s in (self.added if added is None else added).values():
            if s.status in self.shown:
                live[s.idx] = True
        live[list(extra_live)] = True
        live[: self.n_split] |= self.is_warm
        cat = Catalog(self.table.sids, self.vocab, live, self.is_new(), self.emb)
        if build_tries:
            cat.trie("full"), cat.trie("new")
        return cat

    def grown(self, catalog: Catalog) -> Catalog:
        """`catalog` (the same recommendable items) with the items added since it was built."""
        return catalog.grow(self.table.sids, self.is_new())

    # ------------------------------------------------------------------ views
    def counts(self) -> dict[str, int]:
        """Added items per status."""
        counts = dict.fromkeys((PENDING, LIVE, FAILED, ROLLED_BACK), 0)
        for s in self.added.values():
            counts[s.status] = counts.get(s.status, 0) + 1
        return counts

    def item(self, item_id: str) -> dict[str, Any]:
        """GET /items/{id}: an added item's row, or a warm item (ServeError 404 if unknown)."""
        s = self.added.get(item_id)
        if s is not None:
            return {
                "item_id": s.item_id,
                "title": s.title,
                "sid": list(s.sid),
                "status": s.status,
                "pack_id": s.pack_id,
                "live_at": iso_time(s.live_at),
                "created_at": iso_time(s.created_at),
                "new": True,
                "recommendable": s.status in self.shown,
                "error": s.error,
            }
        k = self.lookup.get(item_id)
        if k is None:
            raise ServeError(404, f"unknown item id {item_id!r}")
        return {
            "item_id": item_id,
            "title": self.titles[k],
            "sid": self.table.sids[k].tolist(),
            "status": LIVE,
            "pack_id": None,
            "live_at": None,
            "created_at": None,
            "new": False,
            "recommendable": True,
            "error": None,
        }

    def describe(self, items: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        """[{"item_id", "title", "score", "new"}] of ranked items (empty slots skipped)."""
        ids, titles, out = self.ids, self.titles, []
        for i, s in zip(items.tolist(), scores.tolist(), strict=True):
            if i < 0 or not np.isfinite(s):
                continue
            new = i >= self.n_split or not self.is_warm[i]
            out.append({"item_id": ids[i], "title": titles[i], "score": s, "new": bool(new)})
        return out
