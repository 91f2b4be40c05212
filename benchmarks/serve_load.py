"""Client-side tools of the serving benchmark (loopback only, every loop bounded in requests
and time): a `freshrec.serve` server process, closed-loop load levels that tell answered,
shed (429) and failed requests apart, a `/health` prober, and the time until items are live
on one or two servers."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from freshrec.data.schema import Split
from freshrec.edit.pseudo import pseudo_requests

KEY = "serve-bench-key-0123456789"
SHED = (429,)  # answers of a service that sheds load on purpose (Retry-After)


# ---------------------------------------------------------------------------------- server
class Server:
    """A `python -m freshrec.serve.app` process on a free loopback port. The context manager
    waits until the writer's edit statistics are ready (a replica: until /ready is 200)."""

    def __init__(self, config: dict[str, Any], folder: Path, name: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.folder, self.name, self.config = folder, name, config
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        cfg = self.folder / f"{self.name}.json"
        cfg.write_text(json.dumps(self.config, default=str))
        env = {**os.environ, "FRESHREC_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
        argv = ["-m", "freshrec.serve.app", "--config", str(cfg), "--port", str(self.port)]
        with open(self.folder / f"{self.name}.log", "wb") as log:  # the child keeps its copy
            self.proc = subprocess.Popen(
                [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.folder / self.name}.log")
            try:
                if self.config.get("read_only"):
                    if self.get("/ready")[0] == 200:
                        return self
                elif self.get("/health")[1].get("editor") == "idle":  # edit statistics ready
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("server did not become ready within 600 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, Any]:
        c = conn or self.conn()
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")

    def post(
        self, path: str, body: Any, conn: http.client.HTTPConnection | None = None
    ) -> tuple[int, Any]:
        c = conn or self.conn()
        c.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "X-API-Key": KEY},
        )
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")

    def metric(self, name: str) -> float | None:
        c = self.conn()
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None


# ---------------------------------------------------------------------------------- load
def histories(split: Split, n: int, seed: int = 0) -> list[list[str]]:
    """Histories (last 20 warm items) of a seeded sample of validation requests."""
    is_new = np.asarray(split.is_new, dtype=bool)
    req = split.valid
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(req), size=min(n * 2, len(req)), replace=False)
    ids = split.dataset.items.ids
    out = []
    for r in pick:
        seq = split.sequence(int(req.user[r]))[: int(req.pos[r])]
        seq = [i for i in seq.tolist() if not is_new[i]][-20:]
        if seq:
            out.append([ids[i] for i in seq])
        if len(out) == n:
            break
    return out


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None


PROBE = """
import http.client, sys, time
port, every_s, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
with open(out, "w") as f:
    while True:
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        f.write(f"{time.perf_counter() - t0:.6f} {int(ok)}\\n")
        f.flush()
        time.sleep(every_s)
"""


class HealthProbe:
    """GET /health in a loop from a process of its own (as a liveness probe would: the load
    generator's threads do not delay it), one keep-alive connection, a fresh one after an
    error; latencies of every probe."""

    def __init__(self, srv: Server, every_s: float = 0.05) -> None:
        self.srv, self.every_s = srv, every_s
        self.lat: list[float] = []
        self.failed = 0
        self._out = srv.folder / f"{srv.name}.probe.{os.getpid()}.{id(self)}.txt"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HealthProbe:
        argv = [sys.executable, "-c", PROBE, str(self.srv.port), str(self.every_s), str(self._out)]
        self._proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 10  # the level starts once the probe answers
        while time.monotonic() < deadline and not (
            self._out.exists() and self._out.stat().st_size > 0
        ):
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(30)
        lines = self._out.read_text().splitlines() if self._out.exists() else []
        for line in lines:
            parts = line.split()
            if len(parts) == 2:  # a line cut by the kill is dropped
                self.lat.append(float(parts[0]))
                self.failed += parts[1] != "1"
        self._out.unlink(missing_ok=True)

    def summary(self) -> dict[str, Any]:
        return {
            "probes": len(self.lat),
            "failed": self.failed,
            "p50_ms": _ms(self.lat, 50),
            "p99_ms": _ms(self.lat, 99),
            "max_ms": _ms(self.lat, 100),
        }


def load_level(
    srv: Server,
    bodies: list[list[str]],
    concurrency: int,
    n_requests: int,
    seconds: float,
    shed_pause_s: float = 0.1,
) -> dict[str, Any]:
    """`concurrency` closed-loop clients send up to n_requests /recommend calls (or for
    `seconds`). A shed answer (429) makes its client wait `shed_pause_s` (a shortened
    Retry-After) before its next request; other non-200 answers and transport errors are
    errors. Latency percentiles are over the answered (200) requests."""
    ok_lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n_requests))
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = srv.conn()
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = {"history": bodies[(i + k) % len(bodies)], "top_k": 10}
            t0 = time.perf_counter()
            try:
                status, out = srv.post("/recommend", body, conn)
                ok = status == 200 and len(out["items"]) == 10
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, status, out = False, -1, repr(exc)
                conn = srv.conn()
            dt = time.perf_counter() - t0
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if ok:
                    ok_lat.append(dt)
                elif status not in SHED:
                    errors.append(f"{status}: {str(out)[:200]}")
            if status in SHED:
                time.sleep(shed_pause_s)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    n = sum(statuses.values())
    shed = sum(statuses.get(s, 0) for s in SHED)
    return {
        "concurrency": concurrency,
        "requests": n,
        "answered": len(ok_lat),
        "shed": shed,
        "shed_share": round(shed / n, 3) if n else None,
        "seconds": round(wall, 2),
        "rps": round(len(ok_lat) / wall, 1),
        "p50_ms": _ms(ok_lat, 50),
        "p99_ms": _ms(ok_lat, 99),
        "max_ms": _ms(ok_lat, 100),
        "errors": len(errors),
        "errors_5xx": sum(c for s, c in statuses.items() if s >= 500),
        "statuses": {str(s): c for s, c in sorted(statuses.items())},
        "error_examples": errors[:3],
    }


# ---------------------------------------------------------------------------------- items
def item_payload(split: Split, idx: list[int]) -> dict[str, Any]:
    items = split.dataset.items
    return {
        "items": [
            {"item_id": items.ids[i], "title": items.titles[i], "text": items.texts[i]} for i in idx
        ]
    }


def time_to_live(srv: Server, split: Split, idx: list[int], timeout: float = 300) -> float:
    """Seconds from sending POST /items (one request with all `idx`) until all are live."""
    t0 = time.perf_counter()
    status, out = srv.post("/items", item_payload(split, idx))
    if status != 202:
        raise RuntimeError(f"POST /items -> {status}: {out}")
    ids = [split.dataset.items.ids[i] for i in idx]
    return wait_live(srv, ids, t0, timeout)


def wait_live(
    srv: Server, ids: list[str], t0: float, timeout: float = 300, poll_s: float = 0.05
) -> float:
    """Seconds from `t0` (perf_counter) until every item of `ids` is live on `srv`."""
    conn = srv.conn()
    waiting = set(ids)
    while waiting and time.perf_counter() - t0 < timeout:
        for i in sorted(waiting):
            st, row = srv.get(f"/items/{i}", conn)
            if st == 200 and row["status"] == "live":
                waiting.discard(i)
            elif st not in (200, 404) or (st == 200 and row["status"] not in ("pending", "live")):
                raise RuntimeError(f"item {i}: {st} {row}")
        if waiting:
            time.sleep(poll_s)
    if waiting:
        raise RuntimeError(f"{len(waiting)} items not live on {srv.name} after {timeout} s")
    return time.perf_counter() - t0


def replica_pickup(
    writer: Server, replica: Server, split: Split, idx: list[int], timeout: float = 300
) -> dict[str, float]:
    """POST `idx` to the writer; poll both servers at once. Returns the seconds until the
    replica knows the items (recommendable in mode fresh), until the writer has them live,
    until the replica has them live, and the pickup: replica live - writer live."""
    ids = [split.dataset.items.ids[i] for i in idx]
    t0 = time.perf_counter()
    status, out = writer.post("/items", item_payload(split, idx))
    if status != 202:
        raise RuntimeError(f"POST /items -> {status}: {out}")
    got: dict[str, float] = {}

    def known() -> None:
        conn = replica.conn()
        while time.perf_counter() - t0 < timeout:
            if all(replica.get(f"/items/{i}", conn)[0] == 200 for i in ids):
                got["replica_known_s"] = time.perf_counter() - t0
                return
            time.sleep(0.02)

    def live(srv: Server, key: str) -> None:
        got[key] = wait_live(srv, ids, t0, timeout, poll_s=0.02)

    threads = [
        threading.Thread(target=known),
        threading.Thread(target=live, args=(writer, "writer_live_s")),
        threading.Thread(target=live, args=(replica, "replica_live_s")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(got) != 3:
        raise RuntimeError(f"replica pickup incomplete after {timeout} s: {got}")
    got["pickup_s"] = max(0.0, got["replica_live_s"] - got["writer_live_s"])
    return {k: round(v, 3) for k, v in got.items()}


def new_item_reach(srv: Server, split: Split, emb: np.ndarray, idx: list[int]) -> dict[str, Any]:
    """Share of (item, neighbour context) requests whose top-10 / top-100 (full catalog)
    contains the new item: 1 real training context of a nearest warm neighbour per item."""
    ids = split.dataset.items.ids
    pseudo = pseudo_requests(split, emb, np.asarray(idx), n_contexts=1, seed=1)
    conn = srv.conn()
    ranks = []
    for u, p, it in zip(pseudo.user, pseudo.pos, pseudo.item, strict=True):
        hist = [ids[i] for i in split.sequence(int(u))[: int(p)][-20:]]
        _, out = srv.post("/recommend", {"history": hist, "top_k": 100}, conn)
        got = [x["item_id"] for x in out["items"]]
        ranks.append(got.index(ids[it]) if ids[it] in got else 100)
    r = np.asarray(ranks)
    return {
        "requests": len(r),
        "top10": round(float((r < 10).mean()), 3),
        "top100": round(float((r < 100).mean()), 3),
    }
