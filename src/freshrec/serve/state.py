"""The service's state on disk: the layout check, the pack store and the writer lock.

Layout (defaults; docs/SERVING.md, "Production"):

    <state_dir>/                       the service's state folder
        catalog.db (-wal, -shm)        SQLite catalog + ledger (unless `db_url` names another)
        catalog.db.writer.lock         held (flock) by the one writer of a SQLite catalog
        edits/                         the pack store (`edits_dir`), owned by the service:
            .freshrec-packs            marker: the catalog (state id) these packs belong to
            <pack_id>/                 one folder per edit pack (16 hex digits)
            .<pack_id>.<random>.tmp    a pack being written (atomic_dir)
            quarantine/                unreadable packs moved aside at start, never deleted

The service only ever deletes entries of its pack store whose names it writes (pack ids, temp
folders); it refuses a pack folder that overlaps its other state or its inputs, or that holds
files it did not write (`check_layout`, `PackStore.claim`).

One writer per catalog: `WriterLock` holds an exclusive lock for the process lifetime (a
`flock` on a file beside a SQLite database, a session advisory lock on PostgreSQL). Both are
released by the kernel / the database when the process dies, `kill -9` included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from freshrec.atomic import write_json, write_text
from freshrec.errors import ConfigError

log = logging.getLogger("freshrec.serve")

MARKER = ".freshrec-packs"
QUARANTINE = "quarantine"
PACK_NAME = re.compile(r"^[0-9a-f]{16}$")
# atomic_dir's temp folder and the old copy it replaces
TEMP_NAME = re.compile(r"^\.[0-9a-f]{16}\.(.+\.tmp|old)$")
PG_LOCK_KEY = 0x66726573687265  # "freshre": the writer's session advisory lock


def _overlap(a: Path, b: Path) -> bool:
    """True when `a` and `b` are the same folder or one contains the other."""
    return a == b or a in b.parents or b in a.parents


def check_layout(
    edits_dir: Path, state_dir: Path, db_file: Path | None, inputs: Iterable[Path]
) -> None:
    """ConfigError unless the pack folder is a folder of its own: not the state folder, not
    a folder holding the catalog database or the state folder, not overlapping `inputs` (the
    checkpoint, the prepared data, the tokenizer, the embedding cache)."""
    edits = edits_dir.resolve()
    state = state_dir.resolve()
    problems = []
    if edits == state or edits in state.parents:
        problems.append(f"it is {'the' if edits == state else 'a parent of the'} state folder")
    if db_file is not None and (edits in db_file.resolve().parents):
        problems.append(f"it holds the catalog database {db_file}")
    for p in inputs:
        if _overlap(edits, p.resolve()):
            problems.append(f"it overlaps {p}")
    if problems:
        raise ConfigError(
            f"the edit pack folder {edits_dir} cannot be used: {'; '.join(problems)}. The "
            "service deletes unreferenced packs in that folder; give it a folder of its own "
            "(the default is <state_dir>/edits)"
        )


class PackStore:
    """The folder of edit packs (`edits_dir`). Only the writer changes it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE

    def folder(self, pack_id: str) -> Path:
        return self.root / pack_id

    def _marker(self) -> dict[str, Any] | None:
        path = self.root / MARKER
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable pack folder marker ({exc})") from None
        return data if isinstance(data, dict) else {}

    @staticmethod
    def owned(name: str) -> bool:
        """Whether the service writes entries of this name (packs, temp folders, quarantine)."""
        return bool(PACK_NAME.match(name) or TEMP_NAME.match(name)) or name in (
            MARKER,
            QUARANTINE,
        )

    def claim(self, state_id: str) -> None:
        """Make the folder this catalog's pack store (writer, at start). A new or empty folder,
        or one holding only pack-shaped entries (written by an older version), gets the
        marker; a folder of another catalog or with foreign files is refused (ConfigError)."""
        marker = self._marker()
        if marker is not None:
            self._check_owner(marker, state_id)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        foreign = sorted(c.name for c in self.root.iterdir() if not self.owned(c.name))
        if foreign:
            shown = ", ".join(foreign[:5]) + (
                f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            )
            raise ConfigError(
                f"the edit pack folder {self.root} holds files the service did not write "
                f"({shown}); give --edits-dir an empty or new folder"
            )
        write_json(self.root / MARKER, {"format": "freshrec-packs", "state_id": state_id})

    def check(self, state_id: str) -> None:
        """A read replica's check: the folder belongs to this catalog (nothing is written)."""
        marker = self._marker()
        if marker is None:
            raise ConfigError(
                f"{self.root} is not the pack folder of this catalog yet (no {MARKER}); start "
                "the writer first, and give the replica the writer's pack folder"
            )
        self._check_owner(marker, state_id)

    def _check_owner(self, marker: dict[str, Any], state_id: str) -> None:
        if marker.get("state_id") != state_id:
            raise ConfigError(
                f"the edit pack folder {self.root} belongs to another catalog (state id "
                f"{marker.get('state_id')!r}, this catalog {state_id!r}); give each catalog a "
                "pack folder of its own"
            )

    def sweep(self, keep: set[str]) -> list[str]:
        """Delete pack folders that are not in `keep` (never committed to the ledger, or
        superseded by a compaction) and temp folders. Other entries are left alone."""
        removed = []
        if not self.root.is_dir():
            return removed
        for child in sorted(self.root.iterdir()):
            name = child.name
            if not (PACK_NAME.match(name) or TEMP_NAME.match(name)) or name in keep:
                if not self.owned(name):
                    log.warning("%s: not written by the service; left alone", child)
                continue
            log.warning("removing %s: no applied ledger row references it", child)
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(name)
        return removed

    def quarantine(self, folder: Path, reason: str) -> Path | None:
        """Move an unreadable pack folder to quarantine/<name>.<UTC time>/ (with a .reason.txt
        beside it); returns the new path (None when `folder` does not exist)."""
        if not folder.exists():
            return None
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.quarantine_dir / f"{folder.name}.{stamp}"
        n = 1
        while dest.exists():
            dest = self.quarantine_dir / f"{folder.name}.{stamp}.{n}"
            n += 1
        os.replace(folder, dest)
        write_text(dest.with_name(dest.name + ".reason.txt"), reason + "\n")
        return dest

    def quarantined(self) -> list[str]:
        """Names of the quarantined pack folders, oldest first."""
        q = self.quarantine_dir
        if not q.is_dir():
            return []
        return sorted(c.name for c in q.iterdir() if c.is_dir())


class WriterLock:
    """The one-writer lock of a catalog: `flock` on `<db file>.writer.lock` for SQLite, a
    session advisory lock for PostgreSQL (held on a connection of its own). `acquire()`
    raises ConfigError naming the holder when another process has it."""

    def __init__(self, engine: sa.Engine, db_file: Path | None) -> None:
        self.engine = engine
        self.db_file = db_file
        self._file: IO[str] | None = None
        self._conn: sa.Connection | None = None

    def acquire(self) -> None:
        if self.engine.dialect.name == "postgresql":
            self._acquire_pg()
        elif self.db_file is not None:
            self._acquire_file(self.db_file.with_name(self.db_file.name + ".writer.lock"))

    def _refuse(self, what: str, holder: str) -> ConfigError:
        return ConfigError(
            f"{what} is in use by another freshrec service ({holder}): one writer per "
            "catalog. Stop that one first, or start this one as a read replica (read_only: true)"
        )

    def _acquire_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 -- held for the process lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise self._refuse(f"the catalog {self.db_file}", holder) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        fh.flush()
        self._file = fh

    def _acquire_pg(self) -> None:
        conn = self.engine.connect()
        # out of the pool: closing it ends the session (and the lock) instead of handing a
        # locked session to the next caller of the pool
        conn.detach()
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY}).scalar()
        conn.commit()  # the lock is session-level: it outlives the transaction
        if not got:
            holder = conn.execute(
                sa.text(
                    "SELECT a.pid, a.client_addr, a.backend_start FROM pg_locks l JOIN "
                    "pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND "
                    "l.granted AND l.objid = :lo AND l.classid = :hi"
                ),
                {"lo": PG_LOCK_KEY & 0xFFFFFFFF, "hi": PG_LOCK_KEY >> 32},
            ).first()
            conn.close()
            who = (
                f"PostgreSQL backend {holder[0]} for client {holder[1] or 'local'}, "
                f"since {holder[2]}"
                if holder
                else "another session"
            )
            raise self._refuse(f"the catalog database {self.engine.url.render_as_string()}", who)
        self._conn = conn

    def held(self) -> bool:
        """Whether the lock is still held (False when the PostgreSQL session died)."""
        if self._file is not None:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(sa.text("SELECT 1")).scalar()
            self._conn.commit()
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def check(self) -> tuple[str, str | None]:
        """("held", None) while the lock is held. A PostgreSQL lock whose session ended (a
        database restart, a terminated backend) is taken again if it is free: ("held", None);
        ("down", why) while the database cannot be reached (tried again at the next check);
        ("lost", why) when another session holds it: this process is no longer the writer."""
        if self.held():
            return "held", None
        self.release()
        try:
            self.acquire()
        except ConfigError as exc:
            return "lost", str(exc)
        except sa.exc.SQLAlchemyError as exc:
            return "down", f"the catalog database cannot be reached ({str(exc)[:300]})"
        log.warning("the writer lock's database session ended; the lock was taken again")
        return "held", None

    def watch(
        self,
        stopping: threading.Event,
        report: Callable[[str, str | None], None],
        every_s: float,
    ) -> None:
        """A writer's thread: `check()` every `every_s` seconds until `stopping`, each result
        passed to `report(state, why)`; returns after the first "lost"."""
        while not stopping.wait(every_s):
            state, why = self.check()
            report(state, why)
            if state == "lost":
                return

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None
