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
