"""The catalog database's schema (SQLAlchemy Core) and its rows as dataclasses.

items   one row per item added through the API: item_id (unique), idx (the model-side item
        index, unique), title, text (what was embedded), sid ("c0-c1-c2-d"), embedding
        (float32 blob, so restarts never re-embed), created_at (the acknowledgement, unix
        seconds), status, pack_id, live_at, error. status: pending (acknowledged, not
        edited yet) | live (its edit pack is applied) | failed (the edit could not teach
        it; see error) | rolled_back (its pack was rolled back; live_at cleared).
edits   the edit ledger, one row per pack in application order (seq): pack_id,
        created_at, items (JSON list of item ids), path (pack folder), status: applied |
        rolled_back | lost (unloadable at start: quarantined or missing; its items were
        re-queued) | compacted (folded into the pack named in `note`).
meta    what the state belongs to: tokenizer fingerprint, checkpoint content hash, prepared
        data hash (the service refuses to start on another checkpoint or tokenizer), and
        the state id that the pack folder's marker names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

PENDING, LIVE, FAILED, ROLLED_BACK = "pending", "live", "failed", "rolled_back"
APPLIED, LOST, COMPACTED = "applied", "lost", "compacted"
ITEM_STATUSES = (PENDING, LIVE, FAILED, ROLLED_BACK)
PACK_STATUSES = (APPLIED, ROLLED_BACK, LOST, COMPACTED)

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
