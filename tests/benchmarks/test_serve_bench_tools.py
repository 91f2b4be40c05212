"""The serving benchmark's accounting against a real HTTP server on loopback (a small
`http.server` that answers 200, 429 and 500 in a fixed pattern): answered, shed and failed
requests are told apart, /health is probed meanwhile, and the report and plot are written
with the issue's keys. The benchmark itself (real freshrec servers) is run by hand."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import serve_bench
from serve_load import HealthProbe, Server, load_level
from serve_report import plot, report


class Handler(BaseHTTPRequestHandler):
    calls = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"status": "ok"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with Handler.lock:
            Handler.calls += 1
            n = Handler.calls
        if n % 5 == 0:
            self._send(429, {"detail": "overloaded"})
        elif n % 7 == 0:
            self._send(500, {"detail": "boom"})
        else:
            self._send(200, {"items": [{"item_id": str(i)} for i in range(10)]})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    srv = Server({}, tmp_path, "stub")  # not started: only its client side is used
    srv.port = httpd.server_address[1]
    Handler.calls = 0
    yield srv
    httpd.shutdown()
    httpd.server_close()


def test_load_level_tells_answered_shed_and_failed_apart(server: Server) -> None:
    with HealthProbe(server, every_s=0.01) as probe:
        res = load_level(server, [["1", "2"]], 4, 70, 30, shed_pause_s=0.0)
    assert res["requests"] == 70
    assert res["statuses"] == {"200": 70 - 14 - 8, "429": 14, "500": 8}  # 35 is a 429
    assert res["shed"] == 14
    assert res["shed_share"] == 0.2
    assert res["answered"] == 48
    assert res["errors"] == res["errors_5xx"] == 8
    assert res["error_examples"][0].startswith("500: ")
    health = probe.summary()
    assert health["probes"] > 0
    assert health["failed"] == 0


def test_summary_report_and_plot(server: Server, tmp_path: Path) -> None:
    def level(c: int) -> dict:
        with HealthProbe(server, every_s=0.01) as probe:
            res = load_level(server, [["1"]], c, 20, 30, shed_pause_s=0.0)
        return {**res, "health": probe.summary()}

    levels = {
        "batching_on": [level(c) for c in (1, 8, 32, 64, 128)],
        "batching_off": [level(c) for c in (1, 8, 32)],
    }
    live = {
        "live": {"1": {"items": 1, "seconds": 2.0, "edit": {"seconds": 0.5}}},
        "reach": {"requests": 3, "top10": 0.0, "top100": 0.333},
        "under_edit": level(8),
    }
    rounds = [
        {"items": 1, "replica_known_s": 0.5, "writer_live_s": 1.0, "replica_live_s": 1.5,
         "pickup_s": 0.5},
        {"items": 2, "replica_known_s": 0.4, "writer_live_s": 2.0, "replica_live_s": 2.2,
         "pickup_s": 0.2},
    ]  # fmt: skip
    pg = {"writer_c8": level(8), "replica_c8": level(8), "replica_rounds": rounds}
    meta = {
        "command": "python benchmarks/serve_bench.py",
        "git_commit": "0" * 40,
        "date": "2026-01-01T00:00:00+00:00",
        "wall_seconds": 1.0,
        "machine": {"cores": 2},
        "load_average_before": [1.0, 1.0, 1.0],
        "load_average_after": [2.0, 1.0, 1.0],
        "load_average_1min_during": {"samples": 2, "min": 1.0, "median": 1.5, "max": 2.0},
        "checkpoint": "benchmarks/.work/x",
        "checkpoint_info": {},
        "server_defaults": {"mode": "fresh"},
    }
    result = serve_bench.summarize(levels, live, pg, meta)
    for key in ("rps_c8", "p50_ms_c8", "p99_ms_c8", "errors", "item_live_seconds_1"):
        assert key in result  # the old keys
    assert result["replica_pickup_seconds"] == 0.5
    assert result["rps_c8_postgres"] == pg["writer_c8"]["rps"]
    assert result["shed_share_c128"] == levels["batching_on"][4]["shed_share"]
    assert result["health_p99_ms_c64"] == levels["batching_on"][3]["health"]["p99_ms"]
    runs = [*levels["batching_on"], *levels["batching_off"], live["under_edit"], pg["writer_c8"]]
    runs.append(pg["replica_c8"])
    assert result["errors_5xx"] == sum(r["errors_5xx"] for r in runs) > 0
    report(result, tmp_path / "serve.md")
    plot(result, tmp_path / "serve.png")
    md = (tmp_path / "serve.md").read_text()
    assert "| `errors_5xx` |" in md
    assert "| **no** |" in md  # the stub's 500s miss the target
    assert "median 1.5" in md  # the load average during the run
    assert (tmp_path / "serve.png").stat().st_size > 10_000
