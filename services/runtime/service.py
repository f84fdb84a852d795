"""Assembles a service from its parts: the only place wiring happens.

A service module provides a ``ServiceSpec``; ``create_app`` turns it into a FastAPI app
whose lifespan opens the pool, applies migrations, creates topics, starts the producer,
the consumer, the outbox relay and the timer scheduler, and stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.topics import TOPICS, Topic
from services.runtime import logging as rlog
from services.runtime.acl import SERVICES, service_topics
from services.runtime.auth import Authenticator, Guards
from services.runtime.broker import ensure_topics, make_broker, make_producer
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import Clock, make_clock
from services.runtime.consumer import EventConsumer, Handler
from services.runtime.db import create_pool, is_transient, migrate
from services.runtime.headers import (
    FIXED,
    OAUTH2_REDIRECT,
    REDOC,
    STRICT_POLICY,
    SWAGGER,
    SecurityHeaders,
)
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.lag import LagProbe, PartitionLag, export
from services.runtime.ops import (
    NOT_JSON,
    install_edge_guards,
    json_reason,
    ops_router,
    refresh_gauges,
)
from services.runtime.outbox import (
    Outbox,
    OutboxRelay,
    Waker,
    reset_correlation,
    set_correlation,
)
from services.runtime.settings import ServiceSettings
from services.runtime.timers import TimerHandler, TimerScheduler

T = TypeVar("T")


@dataclass
class Wiring:
    """What a service contributes: handlers per event type, timer kinds, HTTP routes."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    timers: dict[str, TimerHandler] = field(default_factory=dict)
    router: APIRouter | None = None
    on_start: Callable[[], Awaitable[None]] | None = None
    unblocking: frozenset[str] = frozenset()
    """Event types that do not queue behind their dossier's parked events (see
    ``EventConsumer.unblocking``)."""
    consumer_class: type[EventConsumer] = EventConsumer
    """The consumer to build: a subclass may take records the envelope path cannot (the
    console reads the dead-letter topic raw)."""
    error_page: Callable[[Request, int, dict[str, Any]], Response] | None = None
    """A service with screens: how an error looks to a browser that asked for a page (the
    JSON problem otherwise)."""


@dataclass
class ServiceSpec:
    name: str
    migrations: Path
    topics: Sequence[Topic]
    wire: Callable[[Runtime], Wiring]


class Runtime:
    """The shared parts a service's handlers and API use."""

    def __init__(self, name: str, settings: ServiceSettings, clock: Clock | None = None) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock or make_clock(settings.clock_file)
        # the shipped official decisions, then the deployment's own file over them
        self.calendar = WorkingCalendar.load(settings.calendar_overrides, settings.office_hours)
        self.outbox = Outbox(name, self.clock, settings.topic_prefix)
        self.auth = Authenticator(settings, self.clock)  # refuses insecure configurations
        self.guards = Guards(self.auth)
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.scheduler: TimerScheduler | None = None
        self.consumer: EventConsumer | None = None
        self.lag_probe: LagProbe | None = None

    async def lag(self) -> list[PartitionLag]:
        """This service's consumer lag per topic and partition (empty without a consumer)."""
        if self.consumer is None or self.lag_probe is None:
            return []
        topics = [t.full_name(self.settings.topic_prefix) for t in self.consumer.topics]
        async with asyncio.timeout(3.0):
            rows = await self.lag_probe.group_lag(self.consumer.group_id, topics)
        export(rows)
        return rows

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database pool not started")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("producer not started")
        return self._producer


def _problem_422(_: Request, exc: RequestValidationError) -> JSONResponse:
    """Invalid input is 422 with each field and why; a body that is not JSON at all is
    400 (the parser's position goes in the reason, the field is ``body``)."""
    syntax = [e for e in exc.errors() if e.get("type") == "json_invalid"]
    if syntax:
        e = syntax[0]
        position = e["loc"][-1] if isinstance(e["loc"][-1], int) else 0
        reason = json_reason(str((e.get("ctx") or {}).get("error", e["msg"])), position)
        return JSONResponse(
            status_code=400,
            content={"detail": NOT_JSON, "errors": [{"field": "body", "reason": reason}]},
        )
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"] if p not in ("body",)) or "body",
            "reason": e["msg"],
            "type": e["type"],
        }
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": "invalid request", "errors": errors})


def _problem_500(_: Request, exc: Exception) -> JSONResponse:
    """An unhandled error: the same error shape, and the security headers too (Starlette
    answers it outside every middleware, ``SecurityHeaders`` included)."""
    return JSONResponse(
        status_code=500,
        content={"detail": "internal error", "errors": []},
        headers={"content-security-policy": STRICT_POLICY, **FIXED},
    )


def _problem_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every error answer has the same shape: ``{detail, errors: [{field, reason}]}``."""
    if isinstance(exc.detail, dict):
        content = exc.detail
    else:
        content = {"detail": exc.detail, "errors": []}
    return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)


async def _patiently(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """Run a start-up step until it succeeds while the database or the broker is away or
    still starting: a service started in the middle of an outage waits for it, it does
    not exit (nothing would start it again under ``make run``)."""
    attempt = 0
    while True:
        try:
            return await step()
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, KafkaError)):
                raise
            attempt += 1
            rlog.get_logger("runtime").warning(
                "waiting_to_start", step=what, attempt=attempt, error=repr(exc)
            )
            await asyncio.sleep(min(0.2 * 2**attempt, 5.0))


def create_app(
    spec: ServiceSpec, settings: ServiceSettings | None = None, clock: Clock | None = None
) -> FastAPI:
    settings = settings or ServiceSettings.for_service(spec.name)
    rt = Runtime(spec.name, settings, clock)
    wiring = spec.wire(rt)
    # The service's own principal: {NAME}_KAFKA_SASL_USERNAME, else KAFKA_SASL_USERNAME.
    security = KafkaSecurity.from_env(spec.name)
    broker = make_broker(settings.kafka_bootstrap_servers, f"lienthong-{spec.name}", security)
    if wiring.handlers:
        rt.consumer = wiring.consumer_class(
            group_id=settings.group_id(spec.name),
            topics=spec.topics,
            service=spec.name,
            handlers=wiring.handlers,
            topic_prefix=settings.topic_prefix,
            max_attempts=settings.handler_max_attempts,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            unblocking=wiring.unblocking,
        )
        rt.consumer.register(broker, lambda: rt.pool, lambda: rt.producer)
    log = rlog.get_logger(spec.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rlog.configure(spec.name, settings.log_level)
        if settings.dev_mode:
            log.warning(
                "development_mode",
                hint="LIENTHONG_DEV_MODE=1: development secrets and token minting are on",
            )
        schema = settings.db_schema

        async def open_pool() -> asyncpg.Pool:
            return await create_pool(
                settings.database_url,
                schema,
                min_size=settings.pool_min_size,
                max_size=settings.pool_max_size,
            )

        rt._pool = await _patiently("database", open_pool)
        applied = await _patiently("migrations", lambda: migrate(rt.pool, schema, spec.migrations))
        await _patiently(
            "topics",
            lambda: ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.topic_prefix,
                security=security,
                topics=service_topics(spec.name) if spec.name in SERVICES else TOPICS,
            ),
        )

        async def start_producer() -> AIOKafkaProducer:
            producer = make_producer(
                settings.kafka_bootstrap_servers, f"lienthong-{spec.name}", security
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            return producer

        rt._producer = await _patiently("producer", start_producer)
        rt.lag_probe = LagProbe(
            settings.kafka_bootstrap_servers, f"lienthong-{spec.name}-lag", security
        )
        wakers = [
            Waker(settings.database_url, f"{schema}_outbox"),
            Waker(settings.database_url, f"{schema}_timers"),
        ]
        for w in wakers:
            await w.start()
        rt.relay = OutboxRelay(
            rt.pool,
            rt.producer,
            wakers[0],
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval_s,
        )
        rt.scheduler = TimerScheduler(
            rt.pool,
            rt.clock,
            wiring.timers,
            wakers[1],
            batch_size=settings.timer_batch_size,
            poll_interval=settings.timer_poll_interval_s,
            replica=settings.replica,
        )
        tasks = [asyncio.create_task(rt.relay.run(), name="outbox-relay")]
        if rt.consumer is not None:
            tasks.append(
                asyncio.create_task(rt.consumer.run_parked(rt.pool, rt.producer), name="parked")
            )
        if wiring.timers:
            tasks.append(asyncio.create_task(rt.scheduler.run(), name="timers"))
        if wiring.on_start:
            await _patiently("on_start", wiring.on_start)
        await _patiently("consumer", broker.start)
        log.info("service_started", port=settings.http_port, migrations=applied)
        try:
            yield
        finally:
            log.info("service_stopping")
            await broker.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in wakers:
                await w.stop()
            await rt.lag_probe.stop()
            await rt.producer.stop()
            await rt.pool.close()

    app = FastAPI(title=f"Liên thông {spec.name}", version="0.1.0", lifespan=lifespan)
    app.state.runtime = rt
    page = wiring.error_page

    def as_page(request: Request, answer: JSONResponse) -> Response:
        """The JSON problem, or the service's error page for a browser asking for one
        (never for the API under /v1 or the ops endpoints)."""
        wants_html = "text/html" in request.headers.get("accept", "")
        path = request.url.path
        if page is None or not wants_html or path.startswith(("/v1/", "/ops")):
            return answer
        return page(request, answer.status_code, json.loads(bytes(answer.body)))

    def problem_422(request: Request, exc: RequestValidationError) -> Response:
        return as_page(request, _problem_422(request, exc))

    def problem_http(request: Request, exc: StarletteHTTPException) -> Response:
        return as_page(request, _problem_http(request, exc))

    app.add_exception_handler(RequestValidationError, problem_422)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, problem_http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _problem_500)
    install_edge_guards(app, settings.max_body_bytes)

    @app.middleware("http")
    async def correlation(request: Request, call_next: Any) -> Response:
        """Take ``X-Correlation-ID`` (or make one), bind it to logs and to the events this
        request causes, and echo it back."""
        header = request.headers.get("x-correlation-id", "")
        try:
            cid = uuid.UUID(header)
        except ValueError:
            cid = uuid.uuid4()
        token = set_correlation(cid)
        try:
            with rlog.bound_contextvars(correlation_id=str(cid)):
                response: Response = await call_next(request)
        finally:
            reset_correlation(token)
        response.headers["X-Correlation-ID"] = str(cid)
        return response

    # outermost: every answer, the edge's refusals included (services/runtime/headers.py)
    docs = {app.docs_url: SWAGGER, app.redoc_url: REDOC}
    docs[app.swagger_ui_oauth2_redirect_url] = OAUTH2_REDIRECT
    app.add_middleware(SecurityHeaders, docs={k: v for k, v in docs.items() if k})

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": spec.name}

    @app.get("/ready", tags=["ops"], responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            checks["database"] = await asyncio.wait_for(rt.pool.fetchval("SELECT 1"), 2) == 1
        except Exception:
            checks["database"] = False
        try:
            checks["broker"] = bool(await broker.ping(timeout=2))
        except Exception:
            checks["broker"] = False
        if rt.consumer is not None:
            checks["consuming"] = rt.consumer.assigned()
        ok = all(checks.values())
        content: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
        if rt.consumer is not None:
            try:
                rows = await rt.lag()
                content["lag"] = {
                    "group": rt.consumer.group_id,
                    "total": sum(r.lag for r in rows),
                    "partitions": [r.as_dict() for r in rows],
                }
            except Exception as exc:  # lag is information, not a readiness condition
                content["lag"] = {"error": repr(exc)}
        return JSONResponse(status_code=200 if ok else 503, content=content)

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        if rt.relay is not None:
            with contextlib.suppress(Exception):
                await rt.relay.pending()
        with contextlib.suppress(Exception):
            await refresh_gauges(rt.pool)
        with contextlib.suppress(Exception):
            await rt.lag()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if wiring.router is not None:
        app.include_router(wiring.router)
    app.include_router(ops_router(rt))
    _document_body_errors(app, settings.max_body_bytes)
    return app


def _document_body_errors(app: FastAPI, max_body_bytes: int) -> None:
    """What the edge answers before any handler runs, in the OpenAPI document: 413 for a
    body over the size limit (any operation a body may be sent to: the edge refuses it
    whatever the route), and for a JSON body 400 (not JSON, or not UTF-8 without a BOM)
    and 415 (a declared charset other than UTF-8)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        problem = {"$ref": "#/components/schemas/Problem"}
        for item in schema.get("paths", {}).values():
            for method, operation in item.items():
                if not isinstance(operation, dict):
                    continue
                body = operation.get("requestBody")
                codes = []
                if body is not None or method in ("post", "put", "patch"):
                    codes.append(
                        ("413", f"The body is over the size limit ({max_body_bytes} bytes)")
                    )
                if body is not None and any(
                    ct == "application/json" or ct.endswith("+json") for ct in body["content"]
                ):
                    codes.append(("400", "The body is not JSON, or not UTF-8 without a BOM"))
                    codes.append(
                        ("415", "The body's Content-Type names a charset other than UTF-8")
                    )
                answers = operation.setdefault("responses", {})
                for code, what in codes:
                    answers.setdefault(
                        code,
                        {
                            "description": what,
                            "content": {"application/json": {"schema": problem}},
                        },
                    )
        if "Problem" not in schema.get("components", {}).get("schemas", {}):
            from contracts.api import Problem

            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def main(spec: ServiceSpec) -> None:
    """Run one service: ``python -m services.<name>``."""
    settings = ServiceSettings.for_service(spec.name)
    app = create_app(spec, settings)
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
