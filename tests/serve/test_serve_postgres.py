"""The catalog store and the one-writer lock on a real PostgreSQL server (the `postgres`
fixture: pgserver's binaries or a system installation, started for the test session).

Then a writer whose database goes away. The other service-level PostgreSQL tests (kill -9 and
restart, two replicas over one catalog) are in test_serve_durability.py and
test_serve_replicas.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from serve_helpers import KEY, Server, check_catalog_store, item_payload

from freshrec.errors import ConfigError
from freshrec.serve.catalog import CatalogStore
from freshrec.serve.local_postgres import LocalPostgres
from freshrec.serve.state import PG_LOCK_KEY, WriterLock


def test_catalog_store_on_postgres(postgres: LocalPostgres) -> None:
    url = postgres.create_database("catalog_store")
    check_catalog_store(url)  # the same checks as on SQLite (test_serve_units.py)
    store = CatalogStore(url)
    assert store.dialect == "postgresql"
    with store.engine.connect() as conn:  # the embedding really is binary
        kind = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'items' AND column_name = 'embedding'"
            )
        ).scalar()
    assert kind == "bytea"
    store.close()


def test_local_postgres_refuses_odd_database_names(postgres: LocalPostgres) -> None:
    with pytest.raises(ConfigError, match="database name"):
        postgres.create_database('x"; DROP DATABASE postgres; --')


def test_writer_lock_is_an_advisory_lock_released_by_kill9(postgres: LocalPostgres) -> None:
    """One writer per PostgreSQL catalog: a second is refused naming the holder; the lock goes
    when the holder's session ends, also when its process is killed with SIGKILL."""
    url = postgres.create_database("writer_lock")
    first, second = CatalogStore(url), CatalogStore(url)
    lock = WriterLock(first.engine, None)
    lock.acquire()
    assert lock.held()
    with pytest.raises(ConfigError, match="in use by another freshrec service \\(PostgreSQL"):
        WriterLock(second.engine, None).acquire()
    lock.release()
    other = WriterLock(second.engine, None)
    other.acquire()  # free again
    other.release()

    # a process that takes the lock and is killed -9 while holding it
    holder = textwrap.dedent(
        f"""
        import sys, time
        from freshrec.serve.catalog import CatalogStore
        from freshrec.serve.state import PG_LOCK_KEY, WriterLock
        lock = WriterLock(CatalogStore({url!r}).engine, None)
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"held"
        with pytest.raises(ConfigError, match="PostgreSQL backend"):
            WriterLock(second.engine, None).acquire()
    finally:
        proc.kill()
        proc.wait(30)
    again = WriterLock(second.engine, None)
    for _ in range(100):  # the server notices the closed connection at once; allow a moment
        try:
            again.acquire()
            break
        except ConfigError:
            time.sleep(0.1)
    assert again.held()
    again.release()
    first.close()
    second.close()


def test_writer_lock_check_takes_a_lost_lock_again_unless_taken(postgres: LocalPostgres) -> None:
    """`WriterLock.check()`: a lock whose session ended (a database restart, a terminated
    backend) is taken again when it is free, and reported lost when another session has it."""
    url = postgres.create_database("lock_check")
    store, other = CatalogStore(url), CatalogStore(url)

    def terminate_holder() -> None:
        with other.engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND granted AND objid = :lo AND classid = :hi"
                ),
                {"lo": PG_LOCK_KEY & 0xFFFFFFFF, "hi": PG_LOCK_KEY >> 32},
            )

    lock = WriterLock(store.engine, None)
    lock.acquire()
    assert lock.check() == ("held", None)
    terminate_holder()
    assert lock.check() == ("held", None)  # free: taken again
    assert lock.held()
    terminate_holder()
    rival = WriterLock(other.engine, None)
    for _ in range(100):  # the terminated session lets go of the lock at once; allow a moment
        try:
            rival.acquire()
            break
        except ConfigError:
            time.sleep(0.05)
    state, reason = lock.check()
    assert state == "lost"
    assert "in use by another freshrec service" in str(reason)
    rival.release()
    lock.release()
    store.close()
    other.close()


def test_a_writer_whose_database_goes_away(serve_base, tmp_path: Path, ml_split) -> None:
    """The catalog database stops under a running writer (its own server here): writes and
    ledger reads answer 503 (nothing acknowledged), recommendations and /health go on from
    memory, /ready fails with the reason."""
    pg = LocalPostgres().start()
    try:
        url = pg.create_database("going_away")
        srv = Server(serve_base.config(tmp_path / "state", db_url=url), tmp_path, "writer")
        srv.start()
        warm = np.flatnonzero(~np.asarray(ml_split.is_new, dtype=bool))[:5]
        hist = [ml_split.dataset.items.ids[i] for i in warm]
        new = [int(np.flatnonzero(ml_split.is_new)[-2])]
        with srv.client() as c:
            assert c.get("/ready").status_code == 200
            pg.stop()
            r = c.post("/items", json=item_payload(ml_split, new), headers=KEY)
            assert r.status_code == 503, r.text
            assert "catalog database is unavailable" in r.json()["detail"]
            assert r.headers["retry-after"] == "1"
            assert c.get("/edits").status_code == 503
            assert c.post("/recommend", json={"history": hist}).status_code == 200
            assert c.get("/health").status_code == 200
            deadline = time.monotonic() + 15
            while c.get("/ready").status_code != 503:
                assert time.monotonic() < deadline, "/ready still 200 without the database"
                time.sleep(0.2)
            assert "cannot be reached" in c.get("/ready").json()["reason"]
        assert "500 Internal Server Error" not in srv.logs()
    finally:
        if "srv" in locals():
            srv.kill9()
        pg.stop()
