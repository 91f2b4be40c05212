"""A real `freshrec.serve` server in a subprocess on 127.0.0.1, and small client helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from freshrec.data import Split
from freshrec.serve.catalog import CatalogStore, ItemRow

API_KEY = "test-key-0123456789abcdef"
KEY = {"X-API-Key": API_KEY}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m freshrec.serve.app --config <json>` on a free loopback port."""

    def __init__(self, config: dict[str, Any], folder: Path, name: str = "server") -> None:
        self.config = config
        self.folder = folder
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / f"{name}.log"
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> Server:
        cfg = self.folder / f"{self.name}.json"
        cfg.write_text(json.dumps(self.config, default=str))
        env = {**os.environ, "FRESHREC_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
        env.setdefault("OMP_NUM_THREADS", "2")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "freshrec.serve.app",
                    "--config",
                    str(cfg),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.kill9()
        raise RuntimeError(f"server did not start within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60.0), **kw)

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


def wait_status(
    client: httpx.Client, item_ids: list[str], status: str = "live", timeout: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Poll GET /items/{id} until every item has `status` (AssertionError on timeout or when
    an item ends in another final status)."""
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        rows = {i: client.get(f"/items/{i}").json() for i in item_ids}
        if all(r["status"] == status for r in rows.values()):
            return rows
        bad = {i: r for i, r in rows.items() if r["status"] not in ("pending", status)}
        assert not bad, f"items ended {bad}"
        time.sleep(0.2)
    raise AssertionError(f"items not {status} within {timeout} s: {rows}")


def closest_warm_history(split: Split, emb: np.ndarray, item: int, n: int = 10) -> list[str]:
    """Item ids of the n warm items whose text is closest to `item`'s, least similar first."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = e @ e[item]
    sims[np.asarray(split.is_new, dtype=bool)] = -np.inf
    near = np.argsort(-sims)[:n][::-1]
    return [split.dataset.items.ids[i] for i in near]


def item_payload(split: Split, idx: list[int]) -> dict[str, Any]:
    """A POST /items body with the dataset's own titles and texts of items `idx`."""
    items = split.dataset.items
    return {
        "items": [
            {"item_id": items.ids[i], "title": items.titles[i], "text": items.texts[i]} for i in idx
        ]
    }


# ------------------------------------------------------------------------------ catalog store
def row(item_id: str, idx: int, sid=(1, 2, 3, 0)) -> ItemRow:
    emb = np.arange(4, dtype=np.float32).tobytes()
    return ItemRow(item_id, idx, f"t{item_id}", f"text {item_id}", sid, emb, 1.0, "pending")


def check_catalog_store(url: str) -> None:
    """The catalog store's transactions and ledger on an empty database at `url`."""
    store = CatalogStore(url)
    assert store.state_id() is None
    state_id = store.state_id(create=True)
    assert store.state_id(create=True) == state_id  # created once
    fp0 = store.fingerprint()
    store.add_items([row("a", 10), row("b", 11)])
    with pytest.raises(sa.exc.IntegrityError):
        store.add_items([row("c", 12), row("a", 13)])  # one duplicate: nothing is written
    assert [r.item_id for r in store.items()] == ["a", "b"]
    assert store.item("a") == row("a", 10)
    assert np.frombuffer(store.item("a").embedding, np.float32).tolist() == [0, 1, 2, 3]
    assert [r.item_id for r in store.items(["b"])] == ["b"]
    assert [(r.item_id, r.embedding) for r in store.item_states()] == [("a", b""), ("b", b"")]
    fp1 = store.fingerprint()
    assert fp1 != fp0

    p1 = store.record_pack("p1", "p1", ["a"], ["b"], "no context", now=5.0)
    assert store.fingerprint() != fp1
    assert store.item("a").status == "live"
    assert store.item("a").live_at == 5.0
    assert store.item("b").status == "failed"
    assert store.item("b").error == "no context"
    assert store.count_by_status() == {"live": 1, "failed": 1}
    assert store.rollback_pack(p1.seq, "p1") == ["a"]
    assert store.item("a").status == "rolled_back"
    assert store.item("a").live_at is None
    assert store.pack("p1").status == "rolled_back"

    store.add_items([row("c", 12), row("d", 13)])
    p2 = store.record_pack("p2", "p2", ["c"])
    assert store.mark_pack_lost(p2.seq, "p2", "missing folder") == ["c"]
    assert store.item("c").status == "pending"
    assert store.item("c").pack_id is None
    p2b = store.record_pack("p2", "p2", ["c"])  # re-edited: a new row, same pack id
    assert store.pack("p2").seq == p2b.seq
    p3 = store.record_pack("p3", "p3", ["d"])
    folded = store.record_compaction("p4", "p4", [p2b, p3])
    assert folded.items == ["c", "d"]
    assert [r.status for r in store.packs()] == [
        "rolled_back",
        "lost",
        "compacted",
        "compacted",
        "applied",
    ]
    assert store.pack("p3").note == "folded into p4"
    assert [r.pack_id for r in store.packs("applied")] == ["p4"]
    assert {store.item(i).pack_id for i in "cd"} == {"p4"}
    store.close()
    # reopened: everything is still there
    again = CatalogStore(url)
    assert [r.item_id for r in again.items()] == ["a", "b", "c", "d"]
    assert again.state_id() == state_id
    again.close()
