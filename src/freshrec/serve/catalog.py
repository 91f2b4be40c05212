"""The service's durable state: items added through the API and the edit ledger.

Three tables (SQLAlchemy Core, so any SQLAlchemy database URL works):

    items   one row per item added through the API: item_id (unique), idx (the model-side item
            index, unique), title, text (what was embedded), sid ("c0-c1-c2-d"), embedding
            (float32 blob, so restarts never re-embed), created_at, status, pack_id, live_at,
            error. status: pending (acknowledged, not edited yet) | live (its edit pack is
            applied) | failed (the edit could not teach it; see error) | rolled_back.
    edits   the edit ledger, one row per pack in application order (seq): pack_id,
            created_at, items (JSON list of item ids), path (pack folder), status: applied |
            rolled_back | lost (folder missing or corrupt at start; its items were re-queued).
    meta    what the state belongs to: tokenizer fingerprint, checkpoint content hash, prepared
            data hash (the service refuses to start on another checkpoint or tokenizer).

The warm catalog the model was trained on is not copied here: it is the prepared split.

Durability: SQLite runs in WAL mode with `synchronous=FULL` and every write is one
`BEGIN IMMEDIATE` transaction, so a committed write survives `kill -9` and power loss, and a
write interrupted half-way leaves nothing behind.

PostgreSQL: pass a SQLAlchemy URL instead of the default SQLite file, e.g.
`freshrec serve --db postgresql+psycopg://freshrec:secret@db-host/freshrec` (install the
`psycopg` driver). The same statements run there (`embedding` becomes `bytea`); tables are
created on first start. Edit pack folders stay on the service's disk (`edits_dir`), so several
service hosts need that folder on shared storage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from freshrec.errors import ConfigError

PENDING, LIVE, FAILED, ROLLED_BACK = "pending", "live", "failed", "rolled_back"
APPLIED, LOST = "applied", "lost"
ITEM_STATUSES = (PENDING, LIVE, FAILED, ROLLED_BACK)
PACK_STATUSES = (APPLIED, ROLLED_BACK, LOST)

metadata = sa.MetaData()

items_table = sa.Table(
    "items",
    metadata,
    sa.Column("item_id", sa.String(512), primary_key=True),
    sa.Column("idx", sa.Integer, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("sid", sa.String(255), nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("pack_id", sa.String(64), nullable=True, index=True),
    sa.Column("live_at", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

edits_table = sa.Table(
    "edits",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pack_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("items", sa.Text, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("changed_at", sa.Float, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
)


meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def sid_to_str(sid: Sequence[int]) -> str:
    return "-".join(str(int(c)) for c in sid)


def sid_from_str(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split("-"))


@dataclass(frozen=True)
class ItemRow:
    item_id: str
    idx: int
    title: str
    text: str
    sid: tuple[int, ...]
    embedding: bytes
    created_at: float
    status: str
    pack_id: str | None = None
    live_at: float | None = None
    error: str | None = None

    def to_db(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "idx": self.idx,
            "title": self.title,
            "text": self.text,
            "sid": sid_to_str(self.sid),
            "embedding": self.embedding,
            "created_at": self.created_at,
            "status": self.status,
            "pack_id": self.pack_id,
            "live_at": self.live_at,
            "error": self.error,
        }

    @classmethod
    def from_db(cls, row: Any) -> ItemRow:
        m = row._mapping
        return cls(
            item_id=m["item_id"],
            idx=int(m["idx"]),
            title=m["title"],
            text=m["text"],
            sid=sid_from_str(m["sid"]),
            embedding=bytes(m["embedding"]),
            created_at=float(m["created_at"]),
            status=m["status"],
            pack_id=m["pack_id"],
            live_at=m["live_at"],
            error=m["error"],
        )


@dataclass(frozen=True)
class PackRow:
    seq: int
    pack_id: str
    created_at: float
    items: list[str]
    path: str
    status: str
    changed_at: float | None = None
    note: str | None = None

    @classmethod
    def from_db(cls, row: Any) -> PackRow:
        m = row._mapping
        return cls(
            seq=int(m["seq"]),
            pack_id=m["pack_id"],
            created_at=float(m["created_at"]),
            items=list(json.loads(m["items"])),
            path=m["path"],
            status=m["status"],
            changed_at=m["changed_at"],
            note=m["note"],
        )


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


class CatalogStore:
    """Thin repository over the two tables. Each public write is one transaction."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            self.engine: Engine = sa.create_engine(url, echo=echo, future=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ConfigError(f"cannot open the catalog database {url!r}: {exc}") from None
        self.url = url
        if self.engine.dialect.name == "sqlite":
            db = self.engine.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
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

    def items(self) -> list[ItemRow]:
        """Every added item, by model index."""
        with self.engine.connect() as conn:
            res = conn.execute(sa.select(items_table).order_by(items_table.c.idx))
            return [ItemRow.from_db(r) for r in res]

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
        return self._retire_pack(seq, pack_id, {"status": ROLLED_BACK}, {"status": ROLLED_BACK})

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
