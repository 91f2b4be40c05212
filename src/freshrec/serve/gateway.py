"""What every HTTP request passes before an endpoint (ASGI middleware, on the event loop):

1. the key: writes always, reads with keyed reads (401 before the body is read);
2. a read replica refuses writes (503);
3. admission: requests in flight are counted per class (recommend, writes, other reads); over
   the class's bound the answer is 429 with `Retry-After: 1` at once, so a busy service sheds
   load instead of queueing it. Probes (`/health`, `/ready`) are never refused or keyed;
4. the body: a POST body must be JSON (415 otherwise) and at most `max_payload_bytes`
   (413, by Content-Length or while a chunked body streams), read here in full and replayed;
5. while draining (after SIGTERM) every response says `Connection: close`.

`MetricsMiddleware` counts requests by (endpoint template, method, status); methods outside
the standard set are counted as "other", so clients cannot grow the label set.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse

from freshrec.serve.metrics import Metrics

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBES = frozenset({"/health", "/ready"})
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
KEY_HELP = "missing or wrong API key (X-API-Key or Authorization: Bearer)"


ENDPOINTS = ("/recommend", "/items", "/edits", "/health", "/ready", "/metrics")
TEMPLATES = (("/items/", "/items/{item_id:path}"), ("/edits/", "/edits/{pack_id}"))


def endpoint_of(path: str) -> str:
    """The route template of `path` for a request answered before routing (401, 429, 413,
    415), "unmatched" for other paths: a bounded set of metric labels."""
    if path in ENDPOINTS:
        return path
    return next((t for prefix, t in TEMPLATES if path.startswith(prefix)), "unmatched")


def request_class(method: str, path: str) -> str:
    """ "probe" | "recommend" | "write" | "read"."""
    if path in PROBES:
        return "probe"
    if method == "POST" and path == "/recommend":
        return "recommend"
    if (method == "POST" and path == "/items") or (
        method == "DELETE" and path.startswith("/edits/")
    ):
        return "write"
    return "read"


@dataclass
class Gate:
    """The gateway's settings and live counters (read and written on the event loop only;
    the drain thread only reads them)."""

    api_key: str
    open_reads: bool
    read_only: bool
    max_payload_bytes: int
    limits: dict[str, int]
    draining: bool = False
    inflight: dict[str, int] = field(
        default_factory=lambda: {"probe": 0, "recommend": 0, "write": 0, "read": 0}
    )
    shed: int = 0

    def key_ok(self, headers: dict[bytes, bytes]) -> bool:
        """Whether the headers carry the API key (X-API-Key or Authorization: Bearer)."""
        given = headers.get(b"x-api-key")
        if given is None:
            auth = headers.get(b"authorization", b"")
            if auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
        return bool(given) and hmac.compare_digest(given, self.api_key.encode())

    def busy(self) -> int:
        """Requests in flight, probes excepted."""
        return sum(n for k, n in self.inflight.items() if k != "probe")


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    resp = JSONResponse(body, status_code=status, headers=headers)
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class GatewayMiddleware:
    """Auth, replica writes, admission (429), JSON bodies (415/413) and draining."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self.gate
        method, path = scope["method"], scope["path"]
        kind = request_class(method, path)
        headers = dict(scope.get("headers") or [])
        if kind != "probe":
            if (kind == "write" or not gate.open_reads) and not gate.key_ok(headers):
                await send_json(send, 401, {"detail": KEY_HELP}, {"WWW-Authenticate": "Bearer"})
                return
            if kind == "write" and gate.read_only:
                detail = "this is a read-only replica: send writes to the writer"
                await send_json(send, 503, {"detail": detail})
                return
            if gate.inflight[kind] >= gate.limits[kind]:
                gate.shed += 1
                detail = f"overloaded: {gate.inflight[kind]} {kind} requests in flight; retry"
                await send_json(send, 429, {"detail": detail}, {"Retry-After": "1"})
                return
        gate.inflight[kind] += 1
        try:
            if method in ("POST", "PUT", "PATCH"):
                body = await self._body(headers, receive, send)
                if body is None:
                    return
                receive = _replay(body, receive)
            if gate.draining:
                send = _closing(send)
            await self.app(scope, receive, send)
        finally:
            gate.inflight[kind] -= 1

    async def _body(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole request body, or None after answering 415 / 413."""
        limit = self.gate.max_payload_bytes
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        has_body = chunked or (length is not None and length.strip() not in (b"", b"0"))
        if has_body and not _is_json(headers.get(b"content-type", b"")):
            got = headers.get(b"content-type", b"none").decode("latin-1")
            detail = f"the body must be JSON (Content-Type: application/json), got {got}"
            await send_json(send, 415, {"detail": detail})
            return None
        too_large = {"detail": f"payload larger than {limit} bytes"}
        if length is not None and length.strip().isdigit() and int(length) > limit:
            await send_json(send, 413, too_large, {"Connection": "close"})
            return None
        parts: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await send_json(send, 413, too_large, {"Connection": "close"})
                return None
            parts.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the app the buffered body, then waits for the disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _closing(send: Send) -> Send:
    """A send() that adds `Connection: close` to the response (draining)."""

    async def closing(msg: Message) -> None:
        if msg["type"] == "http.response.start":
            kept = [(k, v) for k, v in msg.get("headers", []) if k.lower() != b"connection"]
            msg = {**msg, "headers": [*kept, (b"connection", b"close")]}
        await send(msg)

    return closing


class MetricsMiddleware:
    """Counts requests by (endpoint template, method, status) and times them."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def capture(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, capture)
        finally:
            m = self.metrics()
            if m is not None:
                route = scope.get("route")
                endpoint = getattr(route, "path", None) or endpoint_of(scope["path"])
                method = scope["method"] if scope["method"] in METHODS else "other"
                labels = {"endpoint": endpoint, "method": method, "status": str(status)}
                m.inc("freshrec_http_requests_total", labels=labels)
                m.observe(
                    "freshrec_http_request_duration_seconds",
                    time.perf_counter() - t0,
                    {"endpoint": endpoint},
                )
