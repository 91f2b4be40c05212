"""The service's durable state: items added through the API and the edit ledger
(`CatalogStore`, over the tables of `freshrec.serve.tables`).

The warm catalog the model was trained on is not copied here: it is the prepared split.

Durability: SQLite runs in WAL mode with `synchronous=FULL` and every write is one
`BEGIN IMMEDIATE` transaction, so a committed write survives `kill -9` and power loss, and a
write interrupted half-way leaves nothing behind.

PostgreSQL: pass a SQLAlchemy URL instead of the default SQLite file, e.g.
`freshrec serve --db postgresql+psycopg://freshrec:secret@db-host/freshrec` (the `psycopg`
driver). The same statements run there (`embedding` becomes `bytea`); tables are created on
first start. The pack folder (`edits_dir`) must then be shared storage when replicas on other
hosts read the catalog (docs/SERVING.md, "Production").
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.errors import ConfigError
from freshrec.serve.tables import (
    APPLIED,
    COMPACTED,
    FAILED,
    ITEM_STATUSES,
    LIVE,
    LOST,
    PACK_STATUSES,
    PENDING,
    ROLLED_BACK,
    ItemRow,
    PackRow,
    edits_table,
    items_table,
    meta_table,
    metadata,
    sid_from_str,
)

__all__ = [
    "APPLIED",
    "COMPACTED",
    "FAILED",
    "ITEM_STATUSES",
    "LIVE",
    "LOST",
    "PACK_STATUSES",
    "PENDING",
    "ROLLED_BACK",
    "CatalogStore",
    "ItemRow",
    "PackRow",
]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's implicit BEGIN only
    # starts before DML, which would leave reads outside the transaction).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_begin_deferred(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


class CatalogStore:
    """Thin repository over the two tables. Each public write is one transaction."""

    def __init__(self, url: str, *, echo: bool = False, read_only: bool = False) -> None:
        """Open (and create the tables of) the catalog at `url`. `read_only`: a read
        replica's store; its SQLite transactions do not take the write lock."""
        try:
            self.engine: Engine = sa.create_engine(url, echo=echo, pool_pre_ping=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot open the catalog database {url!r}: {exc}") from None
        self.url = url
        if self.engine.dialect.name == "sqlite":
            db = self.engine.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            begin = _sqlite_begin_deferred if read_only else _sqlite_begin
            sa.event.listen(self.engine, "begin", begin)
        try:
            metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(f"cannot open the catalog database {url!r}: {exc}") from None

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def pragma(self, name: str) -> Any:
        """A SQLite PRAGMA value (tests check WAL / synchronous)."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

    # ------------------------------------------------------------------ meta
    def meta(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {row[0]: row[1] for row in conn.execute(sa.select(meta_table))}

    def state_id(self, create: bool = False) -> str | None:
        """The id that the pack folder's marker names (created once by the writer)."""
        if create:
            self.set_meta({"state_id": uuid.uuid4().hex})
        return self.meta().get("state_id")

    def set_meta(self, values: dict[str, str]) -> None:
        """Insert keys that are not there yet (existing values are never overwritten)."""
        have = self.meta()
        new = [{"key": k, "value": v} for k, v in values.items() if k not in have]
        if new:
            with self.engine.begin() as conn:
                conn.execute(meta_table.insert(), new)

    # ------------------------------------------------------------------ items
    def add_items(self, rows: Sequence[ItemRow]) -> None:
        """Insert new items, all or none (IntegrityError if an id or index exists)."""
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(items_table.insert(), [r.to_db() for r in rows])

    def items(self, ids: Sequence[str] | None = None) -> list[ItemRow]:
        """Every added item (or those of `ids`), by model index."""
        q = sa.select(items_table).order_by(items_table.c.idx)
        if ids is not None:
            q = q.where(items_table.c.item_id.in_(list(ids)))
        with self.engine.connect() as conn:
            return [ItemRow.from_db(r) for r in conn.execute(q)]

    def item_states(self) -> list[ItemRow]:
        """Every added item without its text and embedding (empty), by model index: what a
        read replica polls."""
        cols = [c for c in items_table.c if c.name not in ("text", "embedding")]
        with self.engine.connect() as conn:
            res = conn.execute(sa.select(*cols).order_by(items_table.c.idx))
            return [
                ItemRow(
                    item_id=m["item_id"],
                    idx=int(m["idx"]),
                    title=m["title"],
                    text="",
                    sid=sid_from_str(m["sid"]),
                    embedding=b"",
                    created_at=float(m["created_at"]),
                    status=m["status"],
                    pack_id=m["pack_id"],
                    live_at=m["live_at"],
                    error=m["error"],
                )
                for m in (r._mapping for r in res)
            ]

    def fingerprint(self) -> tuple[Any, ...]:
        """A cheap summary that changes whenever an item or ledger row is added or changes
        status (items per status, the largest index, ledger rows per status, the last seq)."""
        with self.engine.connect() as conn:
            items = conn.execute(
                sa.select(items_table.c.status, sa.func.count(), sa.func.max(items_table.c.idx))
                .group_by(items_table.c.status)
                .order_by(items_table.c.status)
            ).all()
            packs = conn.execute(
                sa.select(edits_table.c.status, sa.func.count(), sa.func.max(edits_table.c.seq))
                .group_by(edits_table.c.status)
                .order_by(edits_table.c.status)
            ).all()
        return tuple(tuple(r) for r in items), tuple(tuple(r) for r in packs)

    def item(self, item_id: str) -> ItemRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(items_table).where(items_table.c.item_id == item_id)
            ).first()
        return ItemRow.from_db(row) if row is not None else None

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            res = conn.execute(
                sa.select(items_table.c.status, sa.func.count()).group_by(items_table.c.status)
            )
            return {s: int(n) for s, n in res}

    def mark_failed(self, item_ids: Iterable[str], error: str) -> None:
        ids = list(item_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                items_table.update()
                .where(items_table.c.item_id.in_(ids))
                .values(status=FAILED, error=error[:2000])
            )

    # ------------------------------------------------------------------ ledger
    def record_pack(
        self,
        pack_id: str,
        path: str,
        live: Sequence[str],
        failed: Sequence[str] = (),
        failed_reason: str = "",
        now: float | None = None,
    ) -> PackRow:
        """One transaction: the ledger row (status applied) + `live` items flipped to live and
        `failed` ones to failed, all with this pack id."""
        now = time.time() if now is None else now
        all_items = [*live, *failed]
        with self.engine.begin() as conn:
            res = conn.execute(
                edits_table.insert().values(
                    pack_id=pack_id,
                    created_at=now,
                    items=json.dumps(all_items),
                    path=path,
                    status=APPLIED,
                )
            )
            seq = int(res.inserted_primary_key[0])
            if live:
                conn.execute(
                    items_table.update()
                    .where(items_table.c.item_id.in_(list(live)))
                    .values(status=LIVE, pack_id=pack_id, live_at=now, error=None)
                )
            if failed:
                conn.execute(
                    items_table.update()
                    .where(items_table.c.item_id.in_(list(failed)))
                    .values(status=FAILED, pack_id=pack_id, error=failed_reason[:2000])
                )
        return PackRow(seq, pack_id, now, all_items, path, APPLIED)

    def packs(self, status: str | None = None) -> list[PackRow]:
        """Ledger rows in application order, optionally of one status."""
        q = sa.select(edits_table).order_by(edits_table.c.seq)
        if status is not None:
            q = q.where(edits_table.c.status == status)
        with self.engine.connect() as conn:
            return [PackRow.from_db(r) for r in conn.execute(q)]

    def pack(self, pack_id: str) -> PackRow | None:
        """The latest ledger row of `pack_id` (None if unknown)."""
        q = (
            sa.select(edits_table)
            .where(edits_table.c.pack_id == pack_id)
            .order_by(edits_table.c.seq.desc())
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return PackRow.from_db(row) if row is not None else None

    def rollback_pack(self, seq: int, pack_id: str) -> list[str]:
        """Ledger row -> rolled_back and its live items -> rolled_back, in one transaction.
        Returns the rolled-back item ids."""
        return self._retire_pack(
            seq, pack_id, {"status": ROLLED_BACK}, {"status": ROLLED_BACK, "live_at": None}
        )

    def mark_pack_lost(self, seq: int, pack_id: str, note: str) -> list[str]:
        """Ledger row -> lost; its live items go back to pending (to be edited again).
        Returns those item ids."""
        return self._retire_pack(
            seq,
            pack_id,
            {"status": LOST, "note": note[:2000]},
            {"status": PENDING, "pack_id": None, "live_at": None},
        )

    def _retire_pack(
        self, seq: int, pack_id: str, ledger: dict[str, Any], items: dict[str, Any]
    ) -> list[str]:
        """In one transaction: ledger row `seq` gets `ledger` values (+ changed_at), and the
        pack's live items get `items` values. Returns those item ids."""
        with self.engine.begin() as conn:
            conn.execute(
                edits_table.update()
                .where(edits_table.c.seq == seq)
                .values(**ledger, changed_at=time.time())
            )
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(items_table.c.item_id).where(
                        (items_table.c.pack_id == pack_id) & (items_table.c.status == LIVE)
                    )
                )
            ]
            if ids:
                conn.execute(
                    items_table.update().where(items_table.c.item_id.in_(ids)).values(**items)
                )
        return ids

    def record_compaction(
        self, pack_id: str, path: str, folded: Sequence[PackRow], now: float | None = None
    ) -> PackRow:
        """One transaction: the folded packs' rows -> compacted (note: the new pack), a ledger
        row (applied) for the pack that replaces them, and their live items -> that pack."""
        now = time.time() if now is None else now
        ids = [r.pack_id for r in folded]
        items = [i for r in folded for i in r.items]
        with self.engine.begin() as conn:
            conn.execute(
                edits_table.update()
                .where(edits_table.c.seq.in_([r.seq for r in folded]))
                .values(status=COMPACTED, note=f"folded into {pack_id}", changed_at=now)
            )
            res = conn.execute(
                edits_table.insert().values(
                    pack_id=pack_id,
                    created_at=now,
                    items=json.dumps(items),
                    path=path,
                    status=APPLIED,
                    note=f"compaction of {len(ids)} packs: {', '.join(ids)}"[:2000],
                )
            )
            seq = int(res.inserted_primary_key[0])
            conn.execute(
                items_table.update()
                .where(items_table.c.pack_id.in_(ids) & (items_table.c.status == LIVE))
                .values(pack_id=pack_id)
            )
        return PackRow(seq, pack_id, now, items, path, APPLIED)

    def requeue(self, item_ids: Iterable[str]) -> None:
        """Items back to pending (their pack is not applied)."""
        ids = list(item_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                items_table.update()
                .where(items_table.c.item_id.in_(ids))
                .values(status=PENDING, pack_id=None, live_at=None)
            )
