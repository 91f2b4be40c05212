"""Two service replicas over one PostgreSQL catalog and one shared pack folder, as real HTTP
servers: the writer takes the items and edits them in; the read replica (`read_only`) polls
the catalog, recommends an item added through the writer within seconds, picks up the
writer's packs (then both answer the same recommendations), follows a rollback, keeps serving
while the writer is down, and follows the restarted writer."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
from serve_helpers import API_KEY, KEY, Server, closest_warm_history, item_payload, wait_status

from freshrec.data import Split
from freshrec.serve import follower as follower_module
from freshrec.serve.config import ServeConfig
from freshrec.serve.service import Service

PICKUP_S = 10.0  # the target: a replica picks up new packs within seconds


@pytest.fixture(scope="module")
def cluster(serve_base, postgres, tmp_path_factory):
    """The writer and the replica (started in that order: the writer creates the catalog)."""
    root = tmp_path_factory.mktemp("serve-replicas")
    shared = {
        "db_url": postgres.create_database("replicas"),
        "edits_dir": str(root / "packs"),  # the shared pack storage
    }
    writer = Server(serve_base.config(root / "w", **shared), root, "writer")
    replica = Server(
        serve_base.config(root / "r", **shared, read_only=True, follow_interval_s=0.5),
        root,
        "replica",
    )
    servers = {
        "writer": writer,
        "replica": replica,
        "root": root,
        "shared": shared,
        "serve_base": serve_base,
    }
    try:
        writer.start()
        replica.start()
        yield servers
    finally:
        for name in ("writer", "replica", "writer2"):
            if name in servers:
                servers[name].kill9()


def top(c: httpx.Client, hist: list[str], k: int = 10, **kw: Any) -> list[tuple[str, float]]:
    r = c.post("/recommend", json={"history": hist, "top_k": k, **kw})
    assert r.status_code == 200, r.text
    return [(x["item_id"], x["score"]) for x in r.json()["items"]]


def until(check, timeout: float, what: str) -> float:
    """Seconds until `check()` is truthy (AssertionError after `timeout`)."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def films(ml_split: Split, ml_emb: np.ndarray) -> dict[str, list[str]]:
    """New films (never seen by the service) -> histories full of their closest warm items."""
    rng = np.random.default_rng(5)
    idx = rng.choice(np.flatnonzero(ml_split.is_new), 6, replace=False).tolist()
    ids = ml_split.dataset.items.ids
    return {ids[i]: closest_warm_history(ml_split, ml_emb, i) for i in idx}


def test_an_item_added_on_the_writer_is_recommended_by_the_replica(
    cluster, films, ml_split: Split
) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    ids = ml_split.dataset.items.ids
    idx = [ids.index(f) for f in films]
    with writer.client() as w, replica.client() as r:
        assert r.get("/ready").json() == {"ready": True, "role": "replica"}
        assert r.get("/health").json()["role"] == "replica"
        for film, hist in films.items():
            assert r.get(f"/items/{film}").status_code == 404
            assert film not in dict(top(r, hist))
        # writes go to the writer only
        refused = r.post("/items", json=item_payload(ml_split, idx), headers=KEY)
        assert refused.status_code == 503
        assert "read-only replica" in refused.json()["detail"]

        res = w.post("/items", json=item_payload(ml_split, idx), headers=KEY)
        assert res.status_code == 202, res.text
        acks = {a["item_id"]: a["sid"] for a in res.json()["items"]}
        # mode fresh: the writer recommends an added film at once; the replica within seconds
        on_writer = [f for f, h in films.items() if f in dict(top(w, h))]
        assert on_writer, "no added film reached the writer's top-10"
        waited = until(
            lambda: all(f in dict(top(r, films[f])) for f in on_writer),
            PICKUP_S,
            "the replica recommends the films added through the writer",
        )
        print(f"replica recommends {len(on_writer)} film(s) {waited:.2f} s after the 202")
        assert {f: r.get(f"/items/{f}").json()["sid"] for f in acks} == acks


def test_the_replica_picks_up_the_writers_packs(cluster, films) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    with writer.client() as w, replica.client() as r:
        rows = wait_status(w, list(films))  # edited in on the writer
        t_live = time.monotonic()
        pack_ids = {row["pack_id"] for row in rows.values()}

        def picked_up() -> bool:
            got = {f: r.get(f"/items/{f}").json() for f in films}
            return all(g["status"] == "live" for g in got.values())

        waited = until(picked_up, PICKUP_S, "the replica applies the writer's pack")
        print(f"replica applied pack(s) {sorted(pack_ids)} {time.monotonic() - t_live:.2f} s "
              f"after the writer reported them live (poll {waited:.2f} s)")  # fmt: skip
        assert {f: r.get(f"/items/{f}").json() for f in films} == rows
        assert r.get("/edits").json() == w.get("/edits").json()
        health = r.get("/health").json()
        assert health["packs_applied"] == w.get("/health").json()["packs_applied"] >= 1
        assert health["replica"]["packs_not_loaded"] == []
        # same catalog, same packs: the same recommendations
        for hist in films.values():
            for kw in ({}, {"only_new": True}):
                a, b = top(w, hist, 20, **kw), top(r, hist, 20, **kw)
                assert [i for i, _ in a] == [i for i, _ in b]
                np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-4)


def test_a_replica_reports_an_item_live_only_once_its_pack_is_applied(
    cluster, films, monkeypatch
) -> None:
    """A fresh replica's first poll meets items already live on the writer: while it swaps in
    their pack, none of them may be reported live yet (the race CI once hit)."""
    monkeypatch.setenv("FRESHREC_API_KEY", API_KEY)
    replica = Service(
        ServeConfig(
            **cluster["serve_base"].config(
                cluster["root"] / "r-inproc", **cluster["shared"], read_only=True
            )
        )
    )
    seen: list[dict[str, str]] = []
    restack = follower_module.restack

    def watched(stack, packs) -> None:
        seen.append({f: replica.item(f)["status"] for f in films if f in replica.live.added})
        restack(stack, packs)

    monkeypatch.setattr(follower_module, "restack", watched)
    try:
        assert replica.follower is not None
        assert replica.follower.sync()
        assert seen
        assert all(s != "live" for statuses in seen for s in statuses.values())
        assert {replica.item(f)["status"] for f in films} == {"live"}
        assert replica.health()["packs_applied"] >= 1
    finally:
        replica.close()


def test_the_replica_follows_a_rollback(cluster, films) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    film = next(iter(films))
    with writer.client() as w, replica.client() as r:
        pack_id = w.get(f"/items/{film}").json()["pack_id"]
        assert r.delete(f"/edits/{pack_id}", headers=KEY).status_code == 503
        res = w.delete(f"/edits/{pack_id}", headers=KEY)
        assert res.status_code == 200, res.text
        gone = set(res.json()["items"])
        assert film in gone
        until(
            lambda: all(r.get(f"/items/{f}").json()["status"] == "rolled_back" for f in gone),
            PICKUP_S,
            "the replica rolls the pack back",
        )
        for f in gone:
            assert f not in dict(top(r, films[f], 50, only_new=True))


def test_the_replica_serves_while_the_writer_is_down_and_follows_its_restart(
    serve_base, cluster, ml_split: Split, ml_emb
) -> None:
    writer, replica = cluster["writer"], cluster["replica"]
    writer.kill9()
    ids = ml_split.dataset.items.ids
    some = closest_warm_history(ml_split, ml_emb, int(np.flatnonzero(ml_split.is_new)[0]))
    with replica.client() as r:
        assert len(top(r, some)) == 10
        assert r.get("/ready").status_code == 200  # the catalog is still there
        # the writer comes back on the same catalog and pack folder
        root, shared = cluster["root"], cluster["shared"]
        writer2 = Server(serve_base.config(root / "w", **shared), root, "writer2")
        cluster["writer2"] = writer2.start()
        rng = np.random.default_rng(9)
        idx = rng.choice(np.flatnonzero(ml_split.is_new), 40, replace=False)
        film = next(ids[i] for i in idx.tolist() if r.get(f"/items/{ids[i]}").status_code == 404)
        with writer2.client() as w:
            res = w.post("/items", json=item_payload(ml_split, [ids.index(film)]), headers=KEY)
            assert res.status_code == 202, res.text
            wait_status(w, [film])
        until(
            lambda: r.get(f"/items/{film}").json().get("status") == "live",
            PICKUP_S,
            "the replica follows the restarted writer",
        )


def test_a_writer_that_loses_its_lock_stops_writing(cluster, postgres, ml_split: Split) -> None:
    """The writer's advisory lock lives in a database session: when that session ends (here
    the backend is terminated) while another session waits for the lock, the other one gets
    it and the writer refuses writes and fails readiness instead of writing beside it."""
    import psycopg

    from freshrec.serve.state import PG_LOCK_KEY

    writer = cluster["writer2"]
    dbname = cluster["shared"]["db_url"].rsplit("/", 1)[1]

    def connect() -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=postgres.port, user="postgres", dbname=dbname, autocommit=True
        )

    with connect() as rival, connect() as admin:
        waiting = threading.Thread(
            target=lambda: rival.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
        )
        waiting.start()  # queued behind the writer's session
        (pid,) = admin.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = %s AND classid = %s",
            (PG_LOCK_KEY & 0xFFFFFFFF, PG_LOCK_KEY >> 32),
        ).fetchone()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        waiting.join(30)
        assert not waiting.is_alive()  # the rival holds the lock now
        with writer.client() as w:
            until(lambda: w.get("/ready").status_code == 503, PICKUP_S, "the writer not ready")
            assert "lost its writer lock" in w.get("/ready").json()["reason"]
            film = item_payload(ml_split, [int(np.flatnonzero(ml_split.is_new)[-1])])
            res = w.post("/items", json=film, headers=KEY)
            assert res.status_code == 503
            assert "lost its writer lock" in res.json()["detail"]
            warm = np.flatnonzero(~np.asarray(ml_split.is_new, dtype=bool))[:5]
            hist = [ml_split.dataset.items.ids[i] for i in warm]
            assert len(top(w, hist)) == 10  # reads are still answered
    assert "writes are refused from now on" in writer.logs()
