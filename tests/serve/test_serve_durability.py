"""Durability: SIGKILL the server after items are live and right after a 202, restart it on
the same state, and check every acknowledged item and edit is back (same SIDs, same packs,
same recommendations) while nothing half-written is loaded; an unreadable pack goes to
quarantine; packs are compacted; one writer per catalog. The chain runs twice: on the default
SQLite catalog and on a real PostgreSQL server (the `postgres` fixture). Then: a pack folder of
its own, a state that belongs to one checkpoint."""

from __future__ import annotations

import calendar
import re
import shutil
import time

import numpy as np
import pytest
from serve_helpers import KEY, Server, item_payload, wait_status

from freshrec.data import Split
from freshrec.edit.pseudo import pseudo_requests


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def state(request, tmp_path_factory):
    """Shared across the (ordered) tests of this module, once per catalog database (the
    default SQLite file, then a real PostgreSQL server): folders, servers, expectations.
    Every server still running at the end (a failed test) is killed."""
    root = tmp_path_factory.mktemp(f"serve-durable-{request.param}")
    shared = {"root": root, "state": root / "state", "servers": [], "db": {}}
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        shared["db"] = {"db_url": pg.create_database("durability")}
    yield shared
    for srv in shared["servers"]:
        srv.kill9()


def start(serve_base, state: dict, name: str, **extra) -> Server:
    srv = Server(serve_base.config(state["state"], **state["db"], **extra), state["root"], name)
    state["servers"].append(srv)
    state["server"] = srv.start()
    return srv


def recommend(c, hist: list[str], **kw) -> list[tuple[str, float]]:
    r = c.post("/recommend", json={"history": hist, "top_k": 20, **kw}, headers=KEY)
    assert r.status_code == 200, r.text
    return [(x["item_id"], x["score"]) for x in r.json()["items"]]


def unix(iso: str) -> float:
    """Seconds of an ISO time as the API writes it (2024-01-02T03:04:05.678Z)."""
    return calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")) + float(iso[19:-1])


def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def batches(ml_split: Split) -> tuple[list[int], list[int]]:
    new = np.flatnonzero(ml_split.is_new)
    return new[100:105].tolist(), new[105:108].tolist()


def test_kill9_after_live(serve_base, state, ml_split, ml_emb, batches):
    ids = ml_split.dataset.items.ids
    first, _ = batches
    a = start(serve_base, state, "a")
    with a.client() as c:
        assert c.post("/items", json=item_payload(ml_split, first), headers=KEY).status_code == 202
        rows = wait_status(c, [ids[i] for i in first])
        p = pseudo_requests(ml_split, ml_emb, np.array(first[:1]), n_contexts=1, seed=1)
        seq = ml_split.sequence(int(p.user[0]))[: int(p.pos[0])][-20:]
        hist = [ids[i] for i in seq]
        rec = recommend(c, hist)
        rec_new = recommend(c, hist, only_new=True)
        ledger = c.get("/edits").json()["edits"]
    a.kill9()
    state.update(rows=rows, hist=hist, rec=rec, rec_new=rec_new, ledger=ledger)

    # restart with keyed reads: the same catalog, packs and recommendations
    b = start(serve_base, state, "b", open_reads=False, edit_batch_window_s=30.0)
    with b.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get(f"/items/{ids[first[0]]}").status_code == 401
        assert c.post("/recommend", json={"history": hist}).status_code == 401
        again = {i: c.get(f"/items/{i}", headers=KEY).json() for i in rows}
        assert again == rows  # same SIDs, status, pack id, timestamps
        assert c.get("/edits", headers=KEY).json()["edits"] == ledger
        same_ranking(recommend(c, hist), rec)
        same_ranking(recommend(c, hist, only_new=True), rec_new)
        # keyed reads: probes stay open but say nothing; the OpenAPI pages need the key; the
        # key is checked before the body is parsed
        assert c.get("/health").json() == {"status": "ok"}
        assert c.get("/ready").json()["ready"] is True
        for path in ("/docs", "/redoc", "/openapi.json", "/metrics", "/edits"):
            assert c.get(path).status_code == 401, path
        assert c.get("/openapi.json", headers=KEY).status_code == 200
        torn = {"content-type": "application/json"}
        assert c.post("/recommend", content=b'{"history": [1,', headers=torn).status_code == 401
        assert c.post("/items", content=b"{", headers=torn).status_code == 401
        health = c.get("/health", headers=KEY)
        assert health.json()["packs_applied"] == 1
        assert str(serve_base.checkpoint) not in health.text  # no server paths


def test_kill9_right_after_the_ack(serve_base, state, ml_split, batches):
    _, second = batches
    b = state["server"]
    with b.client() as c:
        r = c.post("/items", json=item_payload(ml_split, second), headers=KEY)
        assert r.status_code == 202
        acks = {a["item_id"]: a["sid"] for a in r.json()["items"]}
        b.kill9()  # the edit window is 30 s: nothing was edited yet
    time.sleep(1.0)  # down for a while: the time to live includes it
    # leftovers of a crash mid-edit: a complete pack folder that no ledger row references
    # (killed between its save and its commit) and an unfinished temp folder
    edits = state["state"] / "edits"
    pack1 = state["ledger"][0]["pack_id"]
    shutil.copytree(edits / pack1, edits / "ffffffffffffffff")
    (edits / ".ffffffffffffffff.abc.tmp").mkdir()
    (edits / ".ffffffffffffffff.abc.tmp" / "deltas.safetensors").write_bytes(b"\0" * 10)

    c_srv = start(serve_base, state, "c")
    with c_srv.client() as c:
        assert sorted(p.name for p in edits.iterdir()) == [".freshrec-packs", pack1]
        rows = {i: c.get(f"/items/{i}").json() for i in acks}
        assert {i: r["sid"] for i, r in rows.items()} == acks
        assert all(r["status"] in ("pending", "live") for r in rows.values())
        rows = wait_status(c, list(acks))
        assert len({r["pack_id"] for r in rows.values()}) == 1
        ledger = c.get("/edits").json()["edits"]
        assert [e["status"] for e in ledger] == ["applied", "applied"]
        assert ledger[0] == state["ledger"][0]
        assert c.get("/health").json()["packs_applied"] == 2
        for i, r in state["rows"].items():  # the first batch is untouched
            assert c.get(f"/items/{i}").json() == r
        # acknowledged -> live counts from the acknowledgement, across the crash
        text = c.get("/metrics").text
        assert metric(text, "freshrec_item_live_seconds_count") == 3
        waited = sum(unix(r["live_at"]) - unix(r["created_at"]) for r in rows.values())
        assert waited > 3.0
        assert metric(text, "freshrec_item_live_seconds_sum") >= waited - 0.2
    assert "3 pending item(s) will be edited" in c_srv.logs()
    state["second"] = rows


def test_corrupt_pack_goes_back_to_pending(serve_base, state):
    c_srv = state["server"]
    c_srv.kill9()
    second = state["second"]
    pack2 = next(iter(second.values()))["pack_id"]
    deltas = state["state"] / "edits" / pack2 / "deltas.safetensors"
    deltas.write_bytes(deltas.read_bytes()[:100])  # torn file

    torn = deltas.read_bytes()

    d = start(serve_base, state, "d")
    with d.client() as c:
        rows = wait_status(c, list(second))
        assert {i: r["sid"] for i, r in rows.items()} == {i: r["sid"] for i, r in second.items()}
        ledger = c.get("/edits").json()["edits"]
        assert [e["status"] for e in ledger] == ["applied", "lost", "applied"]
        assert ledger[1]["pack_id"] == pack2
        assert "cannot read edit pack tensors" in ledger[1]["note"]
        health = c.get("/health").json()
        assert health["packs_applied"] == 2
        for i, r in state["rows"].items():
            assert c.get(f"/items/{i}").json() == r
        # the unreadable pack is quarantined as it was, reported, not deleted
        (moved,) = health["quarantined_packs"]
        assert moved.startswith(pack2 + ".")
        assert f"moved to quarantine/{moved}" in ledger[1]["note"]
        quarantined = state["state"] / "edits" / "quarantine" / moved
        assert (quarantined / "deltas.safetensors").read_bytes() == torn
        assert metric(c.get("/metrics").text, "freshrec_packs_quarantined") == 1
        state["rec_before_compaction"] = recommend(c, state["hist"])
        state["live"] = sorted([*rows, *state["rows"]])
    assert "marked lost" in d.logs()
    t0 = time.monotonic()
    d.stop()  # graceful shutdown works too
    assert d.proc is not None
    assert d.proc.returncode in (0, -15)  # uvicorn re-raises SIGTERM after shutting down
    assert "Application shutdown complete" in d.logs()
    assert time.monotonic() - t0 < 30


def test_compaction(serve_base, state):
    """Fold the two applied packs into one at start: same recommendations, one writer only,
    the folded pack survives kill -9 and rolls back all of its items."""
    e = start(serve_base, state, "e", compact_keep=0, compact_min=2)
    hist, before = state["hist"], state["rec_before_compaction"]
    edits = state["state"] / "edits"
    with e.client() as c:
        deadline = time.monotonic() + 120
        while (done := c.get("/health").json()["last_compaction"]) is None:
            assert time.monotonic() < deadline, e.logs()
            time.sleep(0.2)
        folded = done["pack_id"]
        assert done["folded"] == 2
        ledger = c.get("/edits").json()["edits"]
        assert [x["status"] for x in ledger] == ["compacted", "lost", "compacted", "applied"]
        assert ledger[-1]["pack_id"] == folded
        assert sorted(ledger[-1]["items"]) == state["live"]
        assert c.get("/health").json()["packs_applied"] == 1
        same_ranking(recommend(c, hist), before)
        assert {c.get(f"/items/{i}").json()["pack_id"] for i in state["live"]} == {folded}
        assert sorted(p.name for p in edits.iterdir()) == [".freshrec-packs", folded, "quarantine"]
        r = c.delete(f"/edits/{ledger[0]['pack_id']}", headers=KEY)
        assert r.status_code == 409
        assert f"folded into {folded}" in r.json()["detail"]

        twin = Server(serve_base.config(state["state"], **state["db"]), state["root"], "twin")
        with pytest.raises(RuntimeError, match="server exited with 2"):
            twin.start()  # a second writer on the same catalog is refused at once
        holder = "(PostgreSQL backend" if state["db"] else "(pid"
        assert f"in use by another freshrec service {holder}" in twin.logs()
    e.kill9()

    f = start(serve_base, state, "f")
    with f.client() as c:
        assert c.get("/health").json()["packs_applied"] == 1
        same_ranking(recommend(c, hist), before)
        r = c.delete(f"/edits/{folded}", headers=KEY)
        assert r.status_code == 200, r.text
        assert sorted(r.json()["items"]) == state["live"]
        got = recommend(c, hist, only_new=True)
        assert not {i for i, _ in got} & set(state["live"])
    f.kill9()


def test_a_pack_folder_of_its_own(serve_base, tmp_path):
    """The pack folder may not be the state folder (the sweep of unreferenced packs would
    delete catalog.db), nor a folder holding other files (they would be deleted)."""
    state = tmp_path / "state"
    same = Server(serve_base.config(state, edits_dir=str(state)), tmp_path, "same")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "notes.txt").write_text("mine")
    other = Server(serve_base.config(tmp_path / "s2", edits_dir=str(shared)), tmp_path, "other")
    for srv, message in (
        (same, "cannot be used: it is the state folder"),
        (other, "holds files the service did not write (notes.txt)"),
    ):
        try:
            with pytest.raises(RuntimeError, match="server exited with 2"):
                srv.start()
        finally:
            srv.kill9()
        assert message in srv.logs()
    assert not state.exists()  # refused before anything was written
    assert (shared / "notes.txt").read_text() == "mine"


def test_state_refuses_another_checkpoint(serve_base, tmp_path):
    """A state folder belongs to one checkpoint: serving another one on it is refused."""
    from freshrec.serve.catalog import CatalogStore

    state = tmp_path / "state"
    store = CatalogStore(f"sqlite:///{state / 'catalog.db'}")
    store.set_meta({"checkpoint_hash": "0" * 64})  # as written by a service of another model
    store.close()
    srv = Server(serve_base.config(state), tmp_path, "other")
    try:
        with pytest.raises(RuntimeError, match="server exited with 2"):
            srv.start()
    finally:
        srv.kill9()
    assert "belongs to another checkpoint" in srv.logs()
    assert "new --state-dir" in srv.logs()
