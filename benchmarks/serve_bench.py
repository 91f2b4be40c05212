"""Serving benchmark (loopback only, bounded in requests and time): `/recommend` throughput and
p50/p99 latency at concurrency 1, 8 and 32 with micro-batching on and off, and the time from
`POST /items` until the items are live (`GET /items/{id}`) for 1, 10 and 100 items.

    python benchmarks/serve_bench.py [--requests 400] [--seconds 40]

Serves benchmarks/.work/ml-latest-small/checkpoints/causal-s0/best (the GR benchmark's
default causal model) when it exists, else trains a small causal model first. Each
configuration runs in its own `freshrec.serve` server process with fresh state. Writes
benchmarks/results/serve.{md,json}.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import RESULTS, WORK, command, recipe, repo_path, setup
from freshrec import pipeline
from freshrec.atomic import write_json, write_text
from freshrec.data.schema import Split
from freshrec.edit.pseudo import pseudo_requests
from freshrec.evaluate.report import run_metadata

KEY = "serve-bench-key-0123456789"
CONCURRENCY = (1, 8, 32)
LIVE_SIZES = (1, 10, 100)


# ---------------------------------------------------------------------------------- server
class Server:
    """A `python -m freshrec.serve.app` process on a free loopback port."""

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
        log = open(self.folder / f"{self.name}.log", "wb")  # kept open by the child
        argv = ["-m", "freshrec.serve.app", "--config", str(cfg), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.folder / self.name}.log")
            try:
                health = self.get("/health")[1]
                if health.get("editor") == "idle":  # edit statistics ready
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


def load_level(
    srv: Server, bodies: list[list[str]], concurrency: int, n_requests: int, seconds: float
) -> dict[str, Any]:
    """`concurrency` closed-loop clients send up to n_requests (or for `seconds`)."""
    lat: list[float] = []
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
                lat.append(dt)
                if not ok:
                    errors.append(f"{status}: {str(out)[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.asarray(lat) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "seconds": round(wall, 2),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "errors": len(errors),
        "error_examples": errors[:3],
    }


def item_payload(split: Split, idx: list[int]) -> dict[str, Any]:
    items = split.dataset.items
    return {
        "items": [
            {"item_id": items.ids[i], "title": items.titles[i], "text": items.texts[i]} for i in idx
        ]
    }


def time_to_live(srv: Server, split: Split, idx: list[int], timeout: float = 300) -> float:
    """Seconds from sending POST /items (one request with all `idx`) until all are live."""
    ids = [split.dataset.items.ids[i] for i in idx]
    conn = srv.conn()
    t0 = time.perf_counter()
    status, out = srv.post("/items", item_payload(split, idx), conn)
    if status != 202:
        raise RuntimeError(f"POST /items -> {status}: {out}")
    waiting = set(ids)
    while waiting and time.perf_counter() - t0 < timeout:
        for i in sorted(waiting):
            st, row = srv.get(f"/items/{i}", conn)
            if st == 200 and row["status"] == "live":
                waiting.discard(i)
            elif st != 200 or row["status"] not in ("pending", "live"):
                raise RuntimeError(f"item {i}: {st} {row}")
        if waiting:
            time.sleep(0.05)
    if waiting:
        raise RuntimeError(f"{len(waiting)} items not live after {timeout} s")
    return time.perf_counter() - t0


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


# ---------------------------------------------------------------------------------- main
def checkpoint(split, tok, table) -> tuple[Path, dict[str, Any]]:
    """The GR benchmark's causal checkpoint, or a small one trained here."""
    folder = WORK / "ml-latest-small" / "checkpoints" / "causal-s0"
    info: dict[str, Any] = {}
    if not (folder / "best" / "model.safetensors").is_file():
        r = recipe("causal", extra=["train.epochs=5"])
        folder = pipeline.workspace(r).checkpoints("serve-bench-causal")
        if not (folder / "best" / "model.safetensors").is_file():
            pipeline.train(r, split, tok, table, name="serve-bench-causal", progress=False)
        info["trained_here"] = True
    for log in (folder / "train_log.json", folder / "last" / "progress.json"):
        if log.is_file():
            data = json.loads(log.read_text())
            info.update(
                epochs_trained=len(data.get("history", [])),
                best_epoch=data.get("best_epoch"),
                best_valid_ndcg10=data.get("best_valid", data.get("best")),
                training_finished=log.name == "train_log.json",
            )
            break
    return folder / "best", info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="requests per level at most")
    ap.add_argument("--seconds", type=float, default=40.0, help="seconds per level at most")
    args = ap.parse_args()

    r = recipe("causal")
    split, emb, tok, table = setup(r)
    ckpt, ckpt_info = checkpoint(split, tok, table)
    bodies = histories(split, 500)
    run_dir = WORK / "serve-bench"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    base = {
        "checkpoint": str(ckpt),
        "overrides": [f"work_dir={WORK}"],
        "log_level": "warning",
    }
    load_before = os.getloadavg()
    t_start = time.time()

    levels: dict[str, list[dict[str, Any]]] = {}
    for batching in (True, False):
        name = "batching_on" if batching else "batching_off"
        cfg = {**base, "state_dir": str(run_dir / name), "batching": batching}
        with Server(cfg, run_dir, name) as srv:
            load_level(srv, bodies, 4, 40, 20)  # warm-up (threads, allocator, caches)
            levels[name] = []
            for c in CONCURRENCY:
                res = load_level(srv, bodies, c, args.requests, args.seconds)
                levels[name].append(res)
                print(name, res, flush=True)
            if batching:
                batches = srv.metric("freshrec_recommend_batch_size_count")
                total = srv.metric("freshrec_recommend_batch_size_sum")
                mean_batch = round(total / batches, 2) if batches and total else None
                levels[name][-1]["mean_batch_size_overall"] = mean_batch

    # time to live: one server, fresh state, items never seen by the service before
    new = np.flatnonzero(split.is_new)
    rng = np.random.default_rng(0)
    order = rng.permutation(new)
    live: dict[str, Any] = {}
    cfg = {**base, "state_dir": str(run_dir / "live")}
    with Server(cfg, run_dir, "live") as srv:
        start = 0
        for n in LIVE_SIZES:
            idx = sorted(order[start : start + n].tolist())
            start += n
            secs = time_to_live(srv, split, idx)
            _, health = srv.get("/health")
            live[str(n)] = {
                "items": n,
                "seconds": round(secs, 2),
                "edit": health.get("last_edit"),
            }
            print("live", n, live[str(n)]["seconds"], flush=True)
        reach = new_item_reach(srv, split, emb, sorted(order[11:111].tolist()))
        # recommendations keep working while an edit runs (concurrency 8 during a 100-item edit)
        during = threading.Thread(
            target=time_to_live, args=(srv, split, sorted(order[111:211].tolist()))
        )
        during.start()
        time.sleep(0.5)
        under_edit = load_level(srv, bodies, 8, args.requests, args.seconds)
        during.join()
        print("during edit", under_edit, flush=True)

    on = {x["concurrency"]: x for x in levels["batching_on"]}
    off = {x["concurrency"]: x for x in levels["batching_off"]}
    errors = sum(x["errors"] for lv in levels.values() for x in lv) + under_edit["errors"]
    meta = run_metadata(
        dataset="ml-latest-small",
        split="time",
        command=command(),
        checkpoint=repo_path(ckpt),
        checkpoint_info=ckpt_info,
        arch="causal",
        server_defaults={"beam_size": 20, "max_batch": 32, "batch_window_ms": 2.0},
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
        wall_seconds=round(time.time() - t_start, 1),
        note="2 shared cores; the load generator runs on the same machine as the server",
    )
    result = {
        "rps_c8": on[8]["rps"],
        "p50_ms_c8": on[8]["p50_ms"],
        "p99_ms_c8": on[8]["p99_ms"],
        "errors": errors,
        "item_live_seconds_1": live["1"]["seconds"],
        "item_live_seconds_10": live["10"]["seconds"],
        "item_live_seconds_100": live["100"]["seconds"],
        "recommend": levels,
        "recommend_during_edit_c8": under_edit,
        "live": live,
        "new_item_reach": reach,
        "meta": meta,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "serve.json", result)

    rows = [
        "| concurrency | batching | requests | req/s | p50 ms | p99 ms | max ms | errors |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in CONCURRENCY:
        for label, table_ in (("on", on), ("off", off)):
            x = table_[c]
            rows.append(
                f"| {c} | {label} | {x['requests']} | {x['rps']} | {x['p50_ms']} | "
                f"{x['p99_ms']} | {x['max_ms']} | {x['errors']} |"
            )
    x = under_edit
    rows.append(
        f"| 8, during a 100-item edit | on | {x['requests']} | {x['rps']} | {x['p50_ms']} | "
        f"{x['p99_ms']} | {x['max_ms']} | {x['errors']} |"
    )
    live_rows = [
        "| items in one POST | seconds until all live | edit seconds |",
        "|---:|---:|---:|",
    ]
    for n in LIVE_SIZES:
        e = live[str(n)]["edit"] or {}
        live_rows.append(f"| {n} | {live[str(n)]['seconds']} | {e.get('seconds')} |")
    md = "\n".join(
        [
            "# Serving benchmark",
            "",
            f"Command: `{meta['command']}`  ",
            f"Commit: {meta['git_commit']}; date {meta['date']}  ",
            f"Machine: {meta['machine']}; load average before/after "
            f"{meta['load_average_before']} / {meta['load_average_after']}  ",
            f"Checkpoint: `{repo_path(ckpt)}` ({json.dumps(ckpt_info)}); beam 20, top_k 10, "
            "histories = last 20 warm items of sampled validation requests; closed-loop clients "
            "on the same 2 cores as the server.",
            "",
            f"**Headline**: c8 with micro-batching {on[8]['rps']} req/s, p50 {on[8]['p50_ms']} "
            f"ms, p99 {on[8]['p99_ms']} ms (target < 250 ms); errors {errors}; new item live "
            f"in {live['1']['seconds']} s (1 item), {live['100']['seconds']} s (100 items) "
            "(target < 10 s).",
            "",
            "## /recommend",
            "",
            *rows,
            "",
            "## POST /items -> live",
            "",
            *live_rows,
            "",
            "Reach of 100 live new items (1 real context of a nearest warm neighbour each, full "
            f"catalog): top-10 {reach['top10']}, top-100 {reach['top100']} "
            f"({reach['requests']} requests).",
            "",
        ]
    )
    write_text(RESULTS / "serve.md", md)
    print(md)


if __name__ == "__main__":
    main()
