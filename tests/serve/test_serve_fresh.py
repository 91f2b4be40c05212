"""The default mode "fresh" against a real server: an item added with POST /items is
recommendable the moment it is acknowledged (its embedding and SID are all the new-item
channel needs; its edit has not even started), and it reaches the top-10 of users whose
histories are full of its closest items. Then load shedding (429 beyond capacity, probes
answered at once) and a drain on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import numpy as np
import pytest
from serve_helpers import KEY, Server, closest_warm_history

from freshrec.data import Split

N_FILMS = 12


@pytest.fixture(scope="module")
def server(serve_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-fresh")
    # edits wait 10 minutes for company: everything below happens before any edit
    # at most 2 recommendations in flight: a handful of clients overload it
    cfg = serve_base.config(
        folder / "state", edit_batch_window_s=600, max_inflight_recommend=2, drain_grace_s=1.5
    )
    srv = Server(cfg, folder).start()
    yield srv
    srv.stop()


def test_added_items_are_recommendable_at_once(server, ml_split: Split, ml_emb) -> None:
    items = ml_split.dataset.items
    rng = np.random.default_rng(0)
    films = rng.choice(np.flatnonzero(ml_split.is_new), N_FILMS, replace=False).tolist()
    ids = [items.ids[i] for i in films]
    hists = [closest_warm_history(ml_split, ml_emb, i) for i in films]
    with server.client() as c:
        for h in hists:  # before: unknown, never recommended
            got = [x["item_id"] for x in c.post("/recommend", json={"history": h}).json()["items"]]
            assert not set(got) & set(ids)
        body = {
            "items": [{"item_id": items.ids[i], "title": items.titles[i], "text": items.texts[i]}
                      for i in films]
        }  # fmt: skip
        r = c.post("/items", json=body, headers=KEY)
        assert r.status_code == 202, r.text
        t_ack = time.perf_counter()
        in_top10, waited = [], []
        for film_id, h in zip(ids, hists, strict=True):
            res = c.post("/recommend", json={"history": h, "top_k": 10})
            waited.append(time.perf_counter() - t_ack)
            got = res.json()["items"]
            assert len(got) == 10
            in_top10.append(film_id in [x["item_id"] for x in got])
            assert all(x["new"] == (x["item_id"] in ids) for x in got)
        # only_new: the new-item channel alone ranks the added items
        r = c.post("/recommend", json={"history": hists[0], "top_k": 3, "only_new": True})
        assert ids[0] in [x["item_id"] for x in r.json()["items"]]
        row = c.get(f"/items/{ids[0]}").json()
        health = c.get("/health").json()
    share = float(np.mean(in_top10))
    print(f"live top-10 share {share:.2f}, first answer {waited[0] * 1000:.0f} ms after the ack")
    assert share >= 0.9, in_top10  # the audience slot (recommend.fresh.audience)
    assert waited[0] < 5.0  # the first answer after the ack already counts the item
    assert row["status"] == "pending"  # not edited yet...
    assert row["recommendable"] is True  # ...but recommended
    assert health["packs_applied"] == 0


def test_shedding_then_a_drain(server, ml_split: Split) -> None:
    items = ml_split.dataset.items
    warm = np.flatnonzero(~np.asarray(ml_split.is_new, dtype=bool))
    bodies = [{"history": [items.ids[i] for i in warm[k : k + 10]]} for k in range(0, 160, 10)]
    statuses: list[int] = []
    retry_after: set[str] = set()
    errors: list[str] = []
    health_s: list[float] = []
    stop_load = threading.Event()  # a load balancer that saw /ready fail stops sending
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop_load.is_set():
                try:
                    r = c.post("/recommend", json=bodies[k % len(bodies)])
                except httpx.HTTPError as exc:  # a reset or a cut response: never acceptable
                    errors.append(repr(exc))
                    return
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        retry_after.add(r.headers.get("retry-after", ""))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    with server.client() as c:
        for _ in range(20):  # probes answer at once however busy the model is
            t0 = time.perf_counter()
            assert c.get("/health").status_code == 200
            health_s.append(time.perf_counter() - t0)
            time.sleep(0.05)
        assert c.get("/ready").json()["ready"] is True
        shed = float(
            next(
                line.split()[1]
                for line in c.get("/metrics").text.splitlines()
                if line.startswith("freshrec_http_shed_total ")
            )
        )

        # SIGTERM: /ready fails at once, requests keep being answered during the grace
        assert server.proc is not None
        t_term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while c.get("/ready").status_code != 503:
            assert time.monotonic() - t_term < 1.0
        assert c.get("/ready").json() == {"ready": False, "reason": "draining"}
        assert c.get("/health").json()["status"] == "draining"
        n_before = len(statuses)
        time.sleep(0.3)
        assert len(statuses) > n_before  # still serving while draining
    stop_load.set()
    for t in threads:
        t.join(60)
    server.proc.wait(30)
    assert time.monotonic() - t_term < 15
    n_ok, n_shed = statuses.count(200), statuses.count(429)
    print(f"{n_ok} answered, {n_shed} shed; /health at most {max(health_s):.3f} s")
    assert not errors, errors[:3]
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0
    assert statuses.count(200) > 0
    assert retry_after == {"1"}
    assert shed > 0
    assert max(health_s) < 2.0, health_s
    assert "draining" in server.logs()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=5)
