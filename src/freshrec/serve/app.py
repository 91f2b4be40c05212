"""The HTTP API (FastAPI) over `Service`, and the uvicorn runner.

    create_app(config) -> FastAPI    the service starts in the app's lifespan
    run(config)                      one uvicorn process (one model; do not use --workers)
    python -m freshrec.serve.app --config serve.json [--host H] [--port P]

Endpoints (docs/SERVING.md): POST /recommend, POST /items, GET /items/{id}, GET /edits,
DELETE /edits/{pack_id}, GET /health (liveness), GET /ready (readiness), GET /metrics.
`gateway.GatewayMiddleware` runs first: the API key (writes always, reads unless
`open_reads`; the OpenAPI pages are reads), load shedding (429), JSON bodies (415, 413).
Every error is JSON `{"detail": "<message>", ...}`. /recommend and the probes run on the
event loop (a recommendation waits on the micro-batcher without holding a thread), so
probes answer at once however busy the model is. SIGTERM drains: /ready fails, responses
say `Connection: close`, in-flight requests finish, then the process exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import freshrec
from freshrec.errors import FreshrecError
from freshrec.serve.bodies import ItemsIn, RecommendIn, validation_message
from freshrec.serve.config import ServeConfig
from freshrec.serve.gateway import Gate, GatewayMiddleware, MetricsMiddleware
from freshrec.serve.inputs import NewItem, ServeError
from freshrec.serve.service import Service

log = logging.getLogger("freshrec.serve")


def make_gate(config: ServeConfig, api_key: str) -> Gate:
    return Gate(
        api_key=api_key,
        open_reads=config.open_reads,
        read_only=config.read_only,
        max_payload_bytes=config.max_payload_bytes,
        limits={
            "recommend": config.max_inflight_recommend,
            "write": config.max_inflight_writes,
            "read": config.max_inflight_other,
        },
    )


# ---------------------------------------------------------------------------------- app
def create_app(config: ServeConfig, service: Service | None = None) -> FastAPI:
    """The FastAPI app; the service is built (or the given one started) in its lifespan."""
    api_key = service.api_key if service is not None else config.api_key()  # fail fast
    gate = make_gate(config, api_key)

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
    app.state.gate = gate
    add_error_handlers(app)
    add_api_routes(app)
    add_probe_routes(app, gate)
    app.add_middleware(GatewayMiddleware, gate=gate)
    app.add_middleware(
        MetricsMiddleware,
        metrics=lambda: app.state.service.metrics if app.state.service is not None else None,
    )
    return app


def serving(app: FastAPI) -> Service:
    """The app's started service (ServeError 503 while it starts)."""
    s = app.state.service
    if s is None:
        raise ServeError(503, "the service is starting")
    return s


def add_error_handlers(app: FastAPI) -> None:
    """Every error as JSON {"detail": ...}: ServeError with its status (401 with
    WWW-Authenticate, 429 / 503 with Retry-After), an unreachable catalog database 503, other
    freshrec errors 422, validation errors as `bodies.validation_message` maps them,
    Starlette's HTTP errors as they are."""

    @app.exception_handler(ServeError)
    async def _serve_error(_req: Request, exc: ServeError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status in (429, 503):
            headers = {"Retry-After": "1"}
        return JSONResponse(
            {"detail": exc.message, **exc.extra}, status_code=exc.status, headers=headers
        )

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    @app.exception_handler(sa.exc.TimeoutError)
    async def _db_down(_req: Request, exc: Exception) -> JSONResponse:
        log.warning("catalog database unavailable: %s", exc)
        detail = "the catalog database is unavailable; nothing was written, retry later"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(FreshrecError)
    async def _freshrec_error(_req: Request, exc: FreshrecError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = validation_message(exc)
        return JSONResponse({"detail": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def add_api_routes(app: FastAPI) -> None:
    """/recommend, /items and /edits."""

    @app.post("/recommend")
    async def recommend(body: RecommendIn) -> dict[str, Any]:
        """Top-k items for a history of item ids (micro-batched beam search)."""
        t0 = time.perf_counter()
        s = serving(app)
        query = s.resolve_query(
            body.history, body.top_k, body.exclude_seen, body.only_new, body.user
        )
        items = await s.recommend_async(query)
        return {"items": items, "latency_ms": round((time.perf_counter() - t0) * 1000, 3)}

    @app.post("/items", status_code=202)
    def add_items(body: ItemsIn) -> dict[str, Any]:
        """Add items: acknowledged (202) once durable as pending; live after their edit."""
        items = [
            NewItem(
                item_id=i.item_id,
                title=i.title,
                text=i.text,
                categories=tuple(i.categories or ()),
                description=i.description,
            )
            for i in body.items
        ]
        return {"items": serving(app).add_items(items)}

    @app.get("/items/{item_id:path}")
    async def get_item(item_id: str) -> dict[str, Any]:
        """An item's SID, status (pending | live | failed | rolled_back) and pack."""
        return serving(app).item(item_id)

    @app.get("/edits")
    def list_edits() -> dict[str, Any]:
        """The edit ledger, oldest first."""
        return {"edits": serving(app).packs()}

    @app.delete("/edits/{pack_id}")
    def rollback(pack_id: str) -> dict[str, Any]:
        """Roll back an applied edit pack; its items stop being recommended."""
        return serving(app).rollback(pack_id)


def add_probe_routes(app: FastAPI, gate: Gate) -> None:
    """/health, /ready and /metrics: answered on the event loop, never queued behind the
    model."""

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness (always 200 while the process serves) and a summary of the catalog and
        the editor (the summary only with the key under keyed reads)."""
        s = app.state.service
        status = "draining" if gate.draining else ("ok" if s is not None else "starting")
        if s is None or not (gate.open_reads or gate.key_ok(dict(request.scope["headers"]))):
            return {"status": status}
        return {**s.health(), "status": status}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: 200 when this process should get traffic; 503 while starting, draining
        or (a replica) when its catalog polls fail."""
        s = app.state.service
        reason = "draining" if gate.draining else "starting" if s is None else s.not_ready_reason()
        if reason:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "role": s.role})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        m = serving(app).metrics
        for kind, n in gate.inflight.items():
            m.set("freshrec_requests_in_flight", n, {"class": kind})
        m.set("freshrec_http_shed_total", gate.shed)
        return PlainTextResponse(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# ---------------------------------------------------------------------------------- runner
def configure_logging(level: str = "info") -> None:
    logger = logging.getLogger("freshrec")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def _draining_server(config: ServeConfig, uv_config: Any, gate: Gate) -> Any:
    """A uvicorn Server whose first SIGTERM / SIGINT drains (`gate.draining`: /ready fails,
    responses close their connections) for `drain_grace_s`, then waits up to
    `drain_timeout_s` for in-flight requests before the normal shutdown; a second signal
    stops at once."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if gate.draining:
                super().handle_exit(sig, frame)
                return
            self._captured_signals.append(sig)
            gate.draining = True
            log.info("signal %d: draining (%d request(s) in flight)", sig, gate.busy())
            threading.Thread(target=self._drain, name="freshrec-drain", daemon=True).start()

        def _drain(self) -> None:
            time.sleep(config.drain_grace_s)
            deadline = time.monotonic() + config.drain_timeout_s
            while gate.busy() and time.monotonic() < deadline:
                time.sleep(0.02)
            if gate.busy():
                log.warning("drain timeout: %d request(s) still in flight", gate.busy())
            self.should_exit = True

    return DrainingServer(uv_config)


def run(config: ServeConfig) -> None:
    """Serve `config` with uvicorn in this process (blocks until stopped)."""
    import uvicorn

    configure_logging(config.log_level)
    service = Service(config)  # load before binding the port: config errors end here
    app = create_app(config, service)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        workers=1,
        access_log=config.access_log,
        timeout_graceful_shutdown=int(config.drain_timeout_s),
    )
    _draining_server(config, uv_config, app.state.gate).run()


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
