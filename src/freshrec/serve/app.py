"""The HTTP API (FastAPI) over `Service`, and the uvicorn runner.

    create_app(config) -> FastAPI    the service starts in the app's lifespan
    run(config)                      one uvicorn process (one model; do not use --workers)
    python -m freshrec.serve.app --config serve.json [--host H] [--port P]

Endpoints (docs/SERVING.md): POST /recommend, POST /items, GET /items/{id}, GET /edits,
DELETE /edits/{pack_id}, GET /health, GET /metrics. Writes need the API key (`X-API-Key: KEY`
or `Authorization: Bearer KEY`); reads too unless `open_reads`. Every error is JSON
`{"detail": "<message>", ...}`.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import freshrec
from freshrec.errors import FreshrecError
from freshrec.serve.config import ServeConfig
from freshrec.serve.inputs import NewItem, ServeError
from freshrec.serve.metrics import Metrics
from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 20_000


# ---------------------------------------------------------------------------------- bodies
def _id(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int):
        raise ValueError("item ids are strings (or integers)")
    s = str(v).strip()
    if not s:
        raise ValueError("item id is empty")
    if len(s) > MAX_ID_CHARS:
        raise ValueError(f"item id longer than {MAX_ID_CHARS} characters")
    return s


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[str | int] = Field(description="item ids, oldest first")
    top_k: int = 10
    exclude_seen: bool = True
    only_new: bool = False
    user: str | int | None = None

    @field_validator("history")
    @classmethod
    def _history(cls, v: list[str | int]) -> list[str | int]:
        return [_id(x) for x in v]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: str | int
    title: str = Field(max_length=MAX_TEXT_CHARS)
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS)
    categories: list[str] | None = None
    description: str | None = Field(None, max_length=MAX_TEXT_CHARS)

    @field_validator("item_id")
    @classmethod
    def _item_id(cls, v: str | int) -> str:
        return _id(v)

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("title is empty")
        return v.strip()

    @field_validator("text")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("text is empty (leave it out to build it from the title)")
        return v


class ItemsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ItemIn]


# ---------------------------------------------------------------------------------- middleware
class PayloadTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes` (by Content-Length, or while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_json(send, 413, {"detail": f"payload larger than {limit} bytes"})
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking_send)
        except PayloadTooLargeError:
            if not started:
                await _send_json(send, 413, {"detail": f"payload larger than {limit} bytes"})


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
                endpoint = getattr(route, "path", None) or "unmatched"
                labels = {"endpoint": endpoint, "method": scope["method"], "status": str(status)}
                m.inc("freshrec_http_requests_total", labels=labels)
                m.observe(
                    "freshrec_http_request_duration_seconds",
                    time.perf_counter() - t0,
                    {"endpoint": endpoint},
                )


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    resp = JSONResponse(body, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx") or {}
        return 400, f"malformed JSON: {ctx.get('error', 'cannot parse the body')}"
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    if not parts:
        return 422, "invalid request body"
    if (
        errors
        and errors[0].get("type") == "missing"
        and tuple(errors[0].get("loc", ())) == ("body",)
    ):
        return 400, "the request needs a JSON body"
    return 422, "; ".join(parts)


# ---------------------------------------------------------------------------------- app
def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The FastAPI app; the service is built (or the given one started) in its lifespan."""
    api_key = service.api_key if service is not None else config.api_key()  # fail fast

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = service if service is not None else await run_in_threadpool(Service, config)
        await run_in_threadpool(svc.start)
        app.state.service = svc
        try:
            yield
        finally:
            await run_in_threadpool(svc.close)

    app = FastAPI(
        title="freshrec",
        version=freshrec.__version__,
        description="Generative recommendation that learns new items while it serves.",
        lifespan=lifespan,
    )
    app.state.service = None

    def svc() -> Service:
        s = app.state.service
        if s is None:
            raise ServeError(503, "the service is starting")
        return s

    def check_key(request: Request) -> None:
        given = request.headers.get("x-api-key")
        if given is None:
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ServeError(401, "missing or wrong API key (X-API-Key or Authorization: Bearer)")

    def write_auth(request: Request) -> None:
        check_key(request)

    def read_auth(request: Request) -> None:
        if not config.open_reads:
            check_key(request)

    @app.exception_handler(ServeError)
    async def _serve_error(_req: Request, exc: ServeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(
            {"detail": exc.message, **exc.extra}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(FreshrecError)
    async def _freshrec_error(_req: Request, exc: FreshrecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # ------------------------------------------------------------------ endpoints
    @app.post("/recommend", dependencies=[Depends(read_auth)])
    def recommend(body: RecommendIn) -> dict[str, Any]:
        """Top-k items for a history of item ids (micro-batched beam search)."""
        t0 = time.perf_counter()
        s = svc()
        query = s.resolve_query(
            [str(h) for h in body.history],
            body.top_k,
            body.exclude_seen,
            body.only_new,
            None if body.user is None else str(body.user),
        )
        items = s.recommend(query)
        return {"items": items, "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}

    @app.post("/items", status_code=202, dependencies=[Depends(write_auth)])
    def add_items(body: ItemsIn) -> dict[str, Any]:
        """Add items: acknowledged (202) once durable as pending; live after their edit."""
        items = [
            NewItem(
                item_id=str(i.item_id),
                title=i.title,
                text=i.text,
                categories=tuple(i.categories or ()),
                description=i.description,
            )
            for i in body.items
        ]
        return {"items": svc().add_items(items)}

    @app.get("/items/{item_id:path}", dependencies=[Depends(read_auth)])
    def get_item(item_id: str) -> dict[str, Any]:
        """An item's SID, status (pending | live | failed | rolled_back) and pack."""
        return svc().item(item_id)

    @app.get("/edits", dependencies=[Depends(read_auth)])
    def list_edits() -> dict[str, Any]:
        """The edit ledger, oldest first."""
        return {"edits": svc().packs()}

    @app.delete("/edits/{pack_id}", dependencies=[Depends(write_auth)])
    def rollback(pack_id: str) -> dict[str, Any]:
        """Roll back an applied edit pack; its items stop being recommended."""
        return svc().rollback(pack_id)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and a summary of the catalog and the editor."""
        return svc().health()

    @app.get("/metrics", dependencies=[Depends(read_auth)], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(
            svc().metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_payload_bytes)
    app.add_middleware(
        MetricsMiddleware,
        metrics=lambda: app.state.service.metrics if app.state.service is not None else None,
    )
    return app


# ---------------------------------------------------------------------------------- runner
def configure_logging(level: str = "info") -> None:
    logger = logging.getLogger("freshrec")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def run(config: ServeConfig) -> None:
    """Serve `config` with uvicorn in this process (blocks until stopped)."""
    import uvicorn

    configure_logging(config.log_level)
    service = Service(config)  # load before binding the port: config errors end here
    app = create_app(config, service)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        workers=1,
        access_log=config.access_log,
        timeout_graceful_shutdown=10,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m freshrec.serve.app --config serve.json [--host H] [--port P]`."""
    parser = argparse.ArgumentParser(prog="python -m freshrec.serve.app")
    parser.add_argument("--config", required=True, help="ServeConfig as a JSON file")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    try:
        config = ServeConfig.from_file(args.config)
        update = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if update:
            config = ServeConfig.from_dict({**config.model_dump(), **update})
        run(config)
    except FreshrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
