"""The HTTP API against a real server process (mode "beam": items are recommended once their
edit is applied): recommendations before/after adding items, every documented error, auth,
concurrency during an edit, rollback and metrics."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from serve_helpers import API_KEY, KEY, Server, item_payload, wait_status

from freshrec.data import Split
from freshrec.edit.pseudo import pseudo_requests

N_NEW = 27  # dataset new items added through the API


@pytest.fixture(scope="module")
def server(serve_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-api")
    # mode "beam": added items are recommended once edited in (what these tests check);
    # test_serve_fresh.py covers the default mode "fresh"
    srv = Server(
        serve_base.config(folder / "state", max_items_per_post=100, mode="beam"), folder
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def new_items(ml_split: Split) -> list[int]:
    """The first N_NEW dataset new items (indices): genuinely new to the service."""
    return np.flatnonzero(ml_split.is_new)[:N_NEW].tolist()


def history(split: Split, user: int, pos: int, max_len: int = 20) -> list[str]:
    """Item ids of user's sequence before `pos` (the last `max_len`)."""
    seq = split.sequence(int(user))[: int(pos)][-max_len:]
    return [split.dataset.items.ids[i] for i in seq]


def warm_history(split: Split, k: int, length: int = 10) -> list[str]:
    """The first `length` training items of the k-th user with that many."""
    user = np.flatnonzero(np.asarray(split.train_len) >= length)[k]
    return [split.dataset.items.ids[i] for i in split.train_sequence(int(user))[:length]]


def ids_of(resp) -> list[str]:
    return [x["item_id"] for x in resp.json()["items"]]


# ------------------------------------------------------------------------------ basics
def test_health_and_warm_catalog(client, ml_split: Split):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["warm_items"] == int((~np.asarray(ml_split.is_new)).sum())
    assert h["packs_applied"] == 0
    assert h["pending_items"] == 0


def test_recommend_warm_items(client, ml_split: Split):
    hist = warm_history(ml_split, 0, 15)
    r = client.post("/recommend", json={"history": hist, "top_k": 7})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["items"]) == 7
    assert out["latency_ms"] > 0
    assert not set(ids_of(r)) & set(hist)  # exclude_seen by default
    assert all(not x["new"] for x in out["items"])
    scores = [x["score"] for x in out["items"]]
    assert scores == sorted(scores, reverse=True)
    # integers are accepted as ids; exclude_seen=false may return history items
    r2 = client.post(
        "/recommend", json={"history": [int(h) for h in hist], "top_k": 7, "exclude_seen": False}
    )
    assert r2.status_code == 200
    assert len(r2.json()["items"]) == 7
    # only_new with no new item live yet: nothing to recommend
    r3 = client.post("/recommend", json={"history": hist, "only_new": True})
    assert r3.status_code == 200
    assert r3.json()["items"] == []


# ------------------------------------------------------------------------------ errors
RECOMMEND_ERRORS = [
    ({"history": []}, 422, "history is empty"),
    (
        {"history": ["1", "no-such-item", "nope"]},
        422,
        "unknown item ids in history: 'no-such-item', 'nope'",
    ),
    ({"history": ["1"], "top_k": 0}, 422, "top_k must be between 1 and 100"),
    ({"history": ["1"], "top_k": 101}, 422, "top_k must be between 1 and 100"),
    ({"history": ["1"], "top_k": "many"}, 422, "top_k"),
    ({"history": "1"}, 422, "history"),
    ({"history": ["1"], "topk": 3}, 422, "topk: Extra inputs are not permitted"),
    ({"top_k": 3}, 422, "history: Field required"),
]


@pytest.mark.parametrize(("body", "status", "message"), RECOMMEND_ERRORS)
def test_recommend_errors(client, body, status, message):
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_unknown_history_ids_are_listed(client):
    r = client.post("/recommend", json={"history": ["1", "x1", "x2", "x1"]})
    assert r.status_code == 422
    assert r.json()["unknown_items"] == ["x1", "x2"]


def test_malformed_json_is_400(client):
    for path, headers in (("/recommend", {}), ("/items", KEY)):
        r = client.post(
            path,
            content=b'{"history": [1,',
            headers={**headers, "content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["detail"].startswith("malformed JSON")
    r = client.post("/recommend")
    assert r.status_code in (400, 422)
    assert r.json()["detail"]


def item(item_id: str, **kw) -> dict:
    return {"item_id": item_id, "title": kw.pop("title", f"Title of {item_id}"), **kw}


def test_writes_need_the_key(client):
    body = {"items": [item("keyless-1")]}
    assert client.post("/items", json=body).status_code == 401
    r = client.post("/items", json=body, headers={"X-API-Key": "wrong-key-wrong-key"})
    assert r.status_code == 401
    assert "API key" in r.json()["detail"]
    assert (
        client.post("/items", json=body, headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert client.delete("/edits/0123456789abcdef").status_code == 401
    assert client.get("/items/keyless-1").status_code == 404


def test_item_errors(client, ml_split: Split):
    items = ml_split.dataset.items
    warm_id = items.ids[int(np.flatnonzero(~np.asarray(ml_split.is_new))[0])]
    cases = [
        (
            {"items": [item("dup-a"), item("dup-b"), item("dup-a")]},
            409,
            "duplicate item ids in the request: 'dup-a'",
        ),
        ({"items": [item("ok-1"), item(warm_id)]}, 409, f"already in the catalog: '{warm_id}'"),
        ({"items": [item("e1", title="   ")]}, 422, "items.0.title: title is empty"),
        ({"items": [item("e2", text="  ")]}, 422, "items.0.text: text is empty"),
        ({"items": [item("e3", title="")]}, 422, "title is empty"),
        ({"items": [{"title": "no id"}]}, 422, "item_id: Field required"),
        ({"items": [item("e4", colour="red")]}, 422, "colour: Extra inputs are not permitted"),
        ({"items": []}, 422, "items is empty"),
        (
            {"items": [item(f"many-{i}") for i in range(101)]},
            413,
            "101 items in one request; at most 100",
        ),
        ({"items": [item("big", description="x" * 1_100_000)]}, 413, "payload larger than"),
        ({"item_id": "x", "title": "t"}, 422, "items: Field required"),
    ]
    for body, status, message in cases:
        r = client.post("/items", json=body, headers=KEY)
        assert r.status_code == status, (body if len(str(body)) < 300 else status, r.text)
        assert message in r.json()["detail"], r.text


def test_http_level_errors(server, client):
    """Content type, chunked bodies over the limit, coercion and the key before the body."""
    body = json.dumps({"history": ["1"]}).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        r = client.post("/recommend", content=body, headers={"content-type": ctype})
        assert r.status_code == 415, r.text
        assert "must be JSON" in r.json()["detail"]
    ok = client.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert ok.status_code == 200

    def chunks():  # no Content-Length: the limit is enforced while the body streams
        yield b'{"items": [{"item_id": "chunky", "title": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}]}'

    r = client.post("/items", content=chunks(), headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "payload larger than 1000000 bytes" in r.json()["detail"]
    assert client.get("/items/chunky").status_code == 404

    r = client.post("/recommend", json={"history": [True]})
    assert r.status_code == 422
    assert "history[0]: item ids are strings (or integers), got a boolean" in r.json()["detail"]
    # writes: the key is checked before the body is read
    torn = {"content-type": "application/json"}
    assert client.post("/items", content=b"{", headers=torn).status_code == 401
    assert client.post("/items", content=b"{", headers={**KEY, **torn}).status_code == 400


def test_a_full_code_group_is_507(client):
    """65 items with one text share all codes: 64 collision digits fit, the rest cannot."""
    text = "A film about nothing in particular, made twice over."
    body = {"items": [item(f"same-{i}", text=text) for i in range(65)]}
    r = client.post("/items", json=body, headers=KEY)
    assert r.status_code == 507, r.text
    out = r.json()
    assert out["full_items"]
    assert set(out["full_items"]) <= {f"same-{i}" for i in range(65)}
    assert "no free semantic ID" in out["detail"]
    assert "operator" in out["detail"]
    assert "max_collision" not in out["detail"]  # nothing the client could change
    assert client.get("/items/same-0").status_code == 404  # nothing was added


def test_methods_do_not_grow_the_metrics(server, client):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for i in range(40):
            c.request(f"M{i:04d}X", "/recommend")
    text = client.get("/metrics").text
    assert "M0000X" not in text
    assert 'method="other"' in text


def test_bad_requests_changed_nothing(client):
    h = client.get("/health").json()
    assert h["pending_items"] == 0
    assert h["live_new_items"] == 0
    assert h["packs_applied"] == 0
    for i in ("dup-a", "dup-b", "ok-1", "e1", "many-0", "big", "keyless-1"):
        assert client.get(f"/items/{i}").status_code == 404
    assert client.get("/edits").json() == {"edits": []}
    assert client.delete("/edits/0123456789abcdef", headers=KEY).status_code == 404


# ------------------------------------------------------------------------------ new items
def test_new_items_become_recommendable(client, ml_split: Split, ml_emb, new_items):
    ids = ml_split.dataset.items.ids
    first = new_items[:20]
    # 3 real training contexts per item whose target is one of its nearest warm neighbours
    pseudo = pseudo_requests(ml_split, ml_emb, np.array(first), n_contexts=3, seed=1)
    hists = [history(ml_split, u, p) for u, p in zip(pseudo.user, pseudo.pos, strict=True)]
    targets = [ids[i] for i in pseudo.item]
    # before: unknown to the service, never recommended
    r = client.post("/recommend", json={"history": [*hists[0], targets[0]]})
    assert r.status_code == 422
    assert targets[0] in r.json()["unknown_items"]
    assert client.get(f"/items/{targets[0]}").status_code == 404
    for h in hists[:10]:
        assert not set(ids_of(client.post("/recommend", json={"history": h, "top_k": 100}))) & set(
            targets
        )

    r = client.post("/items", json=item_payload(ml_split, first), headers=KEY)
    assert r.status_code == 202, r.text
    acks = r.json()["items"]
    assert [a["item_id"] for a in acks] == [ids[i] for i in first]
    assert all(a["status"] == "pending" and len(a["sid"]) == 4 for a in acks)
    assert len({tuple(a["sid"]) for a in acks}) == len(acks)

    rows = wait_status(client, [ids[i] for i in first])
    packs = {row["pack_id"] for row in rows.values()}
    assert len(packs) == 1  # one POST within the edit window -> one edit pack
    assert all(row["sid"] == a["sid"] for row, a in zip(rows.values(), acks, strict=True))
    assert all(row["live_at"] and row["new"] for row in rows.values())

    # after: recommended to users whose history resembles the item's neighbours
    plain_rank, new_hits = [], 0
    for h, t in zip(hists, targets, strict=True):
        got = ids_of(client.post("/recommend", json={"history": h, "top_k": 100}))
        assert len(got) == 100
        plain_rank.append(got.index(t) if t in got else 100)
        r = client.post("/recommend", json={"history": h, "top_k": 5, "only_new": True})
        assert all(x["new"] for x in r.json()["items"])
        new_hits += t in ids_of(r)
    plain_rank = np.array(plain_rank)
    # measured with the cached tiny model: 38% in the top 100, 5% in the top 10 (of ~7k items);
    # with SIDs from another k-means run (faiss threads) the best rank was 27: top 50 here
    assert (plain_rank < 100).mean() >= 0.2, plain_rank
    assert (plain_rank < 50).any(), plain_rank
    assert new_hits > 0
    # a new item is now a valid history item too
    r = client.post("/recommend", json={"history": [*hists[0], targets[0]], "top_k": 5})
    assert r.status_code == 200
    assert targets[0] not in ids_of(r)
    h = client.get("/health").json()
    assert h["live_new_items"] == 20
    assert h["packs_applied"] == 1
    edits = client.get("/edits").json()["edits"]
    assert [e["pack_id"] for e in edits] == list(packs)
    assert edits[0]["status"] == "applied"


def test_brand_new_item_from_title_and_genres(client):
    r = client.post(
        "/items",
        json={
            "items": [
                item("space-1", title="Galaxy Rangers (2031)", categories=["Sci-Fi", "Action"])
            ]
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 202, r.text
    row = wait_status(client, ["space-1"])["space-1"]
    assert row["title"] == "Galaxy Rangers (2031)"
    assert row["status"] == "live"
    assert client.post("/items", json={"items": [item("space-1")]}, headers=KEY).status_code == 409


def test_concurrent_recommends_during_an_edit(client, ml_split: Split, new_items):
    ids = ml_split.dataset.items.ids
    n = 10  # clients: below the default in-flight bound (12), so none is shed
    bodies = [{"history": warm_history(ml_split, k), "top_k": 10} for k in range(n)]
    batch = new_items[20:27]
    errors: list[str] = []
    counts = [0] * n
    done = threading.Event()

    def worker(k: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as c:
            while not done.is_set() or counts[k] < 3:
                r = c.post("/recommend", json=bodies[k])
                if r.status_code != 200 or len(r.json()["items"]) != 10:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                counts[k] += 1
                if counts[k] >= 200:
                    break

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    r = client.post("/items", json=item_payload(ml_split, batch), headers=KEY)
    assert r.status_code == 202
    try:
        wait_status(client, [ids[i] for i in batch])
    finally:
        done.set()
        for t in threads:
            t.join(120)
    assert not errors, errors[:5]
    assert min(counts) >= 3


def test_rollback(client, ml_split: Split, new_items):
    ids = ml_split.dataset.items.ids
    batch = [ids[i] for i in new_items[20:27]]
    pack = client.get(f"/items/{batch[0]}").json()["pack_id"]
    hist = warm_history(ml_split, 3)
    before = ids_of(
        client.post("/recommend", json={"history": hist, "top_k": 50, "only_new": True})
    )
    assert set(batch) & set(before)
    r = client.delete(f"/edits/{pack}", headers=KEY)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["items"]) == sorted(batch)
    assert r.json()["status"] == "rolled_back"
    rows = [client.get(f"/items/{i}").json() for i in batch]
    assert all(r["status"] == "rolled_back" for r in rows)
    assert all(r["live_at"] is None and r["pack_id"] == pack for r in rows)
    after = ids_of(client.post("/recommend", json={"history": hist, "top_k": 50, "only_new": True}))
    assert not set(batch) & set(after)
    assert after
    assert client.delete(f"/edits/{pack}", headers=KEY).status_code == 409
    assert client.delete("/edits/ffffffffffffffff", headers=KEY).status_code == 404
    # a rolled-back id stays reserved
    assert client.post("/items", json={"items": [item(batch[0])]}, headers=KEY).status_code == 409
    ledger = {e["pack_id"]: e["status"] for e in client.get("/edits").json()["edits"]}
    assert ledger[pack] == "rolled_back"
    assert list(ledger.values()).count("applied") == 2


def test_metrics(client):
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for needle in (
        'freshrec_http_requests_total{endpoint="/recommend",method="POST",status="200"}',
        'freshrec_http_requests_total{endpoint="/recommend",method="POST",status="422"}',
        'freshrec_http_requests_total{endpoint="/items",method="POST",status="401"}',
        'freshrec_http_request_duration_seconds_bucket{endpoint="/recommend",le="+Inf"}',
        "freshrec_live_items ",
        "freshrec_pending_items 0",
        "freshrec_edit_packs_applied 2",
        'freshrec_edits_total{result="applied"} 3',
        "freshrec_edit_seconds_count 3",
        "freshrec_rollbacks_total 1",
        "freshrec_recommend_batch_size_count",
    ):
        assert needle in text, needle
    live = float(
        next(line for line in text.splitlines() if line.startswith("freshrec_live_items ")).split()[
            1
        ]
    )
    h = client.get("/health").json()
    assert live == h["warm_items"] + h["live_new_items"] == h["warm_items"] + 21


def test_state_folder_layout(server):
    state = Path(server.config["state_dir"])
    assert (state / "catalog.db").is_file()
    assert (state / "catalog.db.writer.lock").is_file()
    marker = json.loads((state / "edits" / ".freshrec-packs").read_text())
    assert marker["format"] == "freshrec-packs"
    packs = sorted(p.name for p in (state / "edits").iterdir() if not p.name.startswith("."))
    assert len(packs) == 3
    assert all(len(p) == 16 for p in packs)
    manifest = json.loads((state / "edits" / packs[0] / "manifest.json").read_text())
    assert manifest["format"] == "freshrec-edit-pack"
