"""The default mode "fresh" against a real server: an item added with POST /items is
recommendable the moment it is acknowledged (its embedding and SID are all the new-item
channel needs; its edit has not even started), and it reaches the top-10 of users whose
histories are full of its closest items."""

from __future__ import annotations

import time

import numpy as np
import pytest
from serve_helpers import KEY, Server

from freshrec.data import Split

N_FILMS = 12


@pytest.fixture(scope="module")
def server(serve_base, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-fresh")
    # edits wait 10 minutes for company: everything below happens before any edit
    cfg = serve_base.config(folder / "state", edit_batch_window_s=600)
    srv = Server(cfg, folder).start()
    yield srv
    srv.stop()


def closest_warm_history(split: Split, emb: np.ndarray, item: int, n: int = 10) -> list[str]:
    """Item ids of the n warm items whose text is closest to `item`'s, least similar first."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = e @ e[item]
    sims[np.asarray(split.is_new, dtype=bool)] = -np.inf
    near = np.argsort(-sims)[:n][::-1]
    return [split.dataset.items.ids[i] for i in near]


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
    assert share >= 0.5, in_top10
    assert waited[0] < 5.0  # the first answer after the ack already counts the item
    assert row["status"] == "pending"  # not edited yet...
    assert row["recommendable"] is True  # ...but recommended
    assert health["packs_applied"] == 0
