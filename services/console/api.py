"""The console's JSON API, ``/v1/console/...``: what operators and agencies watch.

Who sees what: an operator sees every row; any other staff member (an agency user) only
the rows of its own agency (an event, dead letter or dossier naming it; SLA and figures
rows of it), and asking for another agency's is 403. Event data is stored with personal
data masked, so nobody reads an applicant's name, phone, id or email here; only an
operator may read a dead letter's whole payload (``reveal=true``), which is audited in
``pii_reads``. Replay and discard are for operators, audited in ``dead_letter_actions``;
a replay goes through the console's transactional outbox (the action and the outbox row
commit together; the relay publishes; the result shows when the broker acknowledged).

Credentials: a staff bearer token, or the console's session cookie set by ``/login``
(pages and EventSource send it); a cookie-authenticated POST must carry ``X-Console: 1``
(a cross-site form cannot set it).
"""

import asyncio
import base64
import contextlib
import json
import re
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
import httpx
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import APIKeyCookie
from pydantic import BaseModel, ValidationError

from contracts import console as c
from contracts.agencies import default_book
from contracts.envelope import DOSSIER_CODE_PATTERN, Envelope
from contracts.events import EVENT_TYPES, parse_payload
from contracts.topics import REPLAYS as REPLAY_TOPICS
from services.console import domain, store
from services.runtime import auth
from services.runtime.acl import CONSUMES, SERVICES
from services.runtime.auth import Staff, forbidden, responses, unauthorized
from services.runtime.lag import PartitionLag
from services.runtime.outbox import MAX_EVENT_BYTES, Waker
from services.runtime.service import Runtime

M = TypeVar("M", bound=BaseModel)
COOKIE = "lienthong_console"
CSRF_HEADER = "X-Console"
_cookie = APIKeyCookie(
    name=COOKIE,
    auto_error=False,
    scheme_name="consoleSession",
    description="The console's session cookie (a staff token set by POST /login)",
)
CookieCred = Annotated[str | None, Depends(_cookie)]
Code = Annotated[str, Path(pattern=DOSSIER_CODE_PATTERN, max_length=26)]
# "<writer>-<partition>-<offset>"; entries read before writers had topics of their own
# keep "<partition>-<offset>" (shown, discardable, not replayable)
EntryId = Annotated[str, Path(pattern=r"^(?:[a-z]{1,20}-)?[0-9]{1,6}-[0-9]{1,19}$", max_length=48)]
# A filter field a form sent empty (``?type=&agency=``) is no filter: the patterns accept
# the empty string and the handlers read it as None (``or None``).
TypeFilter = Annotated[
    str | None,
    Query(alias="type", pattern=r"^(|[a-z_]+(\.[a-z_]+|\.\*))$", max_length=80),
]
AgencyFilter = Annotated[
    str | None,
    Query(pattern=r"^(|[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2})$", max_length=13),
]
DossierFilter = Annotated[
    str | None, Query(pattern="^(|" + DOSSIER_CODE_PATTERN.strip("^$") + ")$", max_length=26)
]
Month = Annotated[str | None, Query(pattern=r"^(|\d{4}-(0[1-9]|1[0-2]))$")]
# the dossier search (``/dossiers``) and the dead-letter filters; empty is no filter
SearchText = Annotated[str | None, Query(max_length=100, description="Words, all must match")]
CodePrefix = Annotated[
    str | None,
    Query(pattern=r"^[0-9A-Za-z.\-]{0,26}$", description="A dossier code or its beginning"),
]
StateFilter = Annotated[str | None, Query(pattern=r"^(|[a-z_]{1,30})$")]
SearchCursor = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9_\-]{0,200}$", description="``next_after``")
]
WriterFilter = Annotated[
    str | None, Query(pattern=r"^(|[a-z]{1,20})$", description="The service that wrote it")
]
EventTypeFilter = Annotated[
    str | None, Query(pattern=r"^(|[a-z_]+(\.[a-z_]+|\.\*))$", max_length=80)
]
DeadLetterCursor = Annotated[
    str | None,
    Query(
        pattern=r"^(|(?:[a-z]{1,20}-)?[0-9]{1,6}-[0-9]{1,19})$",
        max_length=48,
        description="The id of the last dead letter of the page before",
    ),
]
ProcedureFilter = Annotated[str | None, Query(pattern=r"^[0-9A-Za-z.\-]{0,40}$", max_length=40)]


SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event: a console event, as JSON in `data`",
    "properties": {
        "event": {"const": "event"},
        "id": {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "Its seq"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/ConsoleEvent"},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
    "required": ["event", "id", "data"],
}
"""What ``/stream`` sends, per event (comments such as ``: keep-alive`` are no events)."""


def problem(field: str, reason: str) -> dict[str, Any]:
    return {"detail": reason, "errors": [{"field": field, "reason": reason}]}


def caller_dependency(rt: Runtime) -> Callable[..., Awaitable[Staff]]:
    """A staff member from a bearer token or the session cookie."""

    async def dependency(request: Request, cred: auth.BearerCred, cookie: CookieCred) -> Staff:
        if cred is not None and cred.scheme.lower() == "bearer":
            token = cred.credentials
        elif cookie:
            if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
                raise forbidden(f"send {CSRF_HEADER}: 1 with the session cookie", "header")
            token = cookie
        else:
            raise unauthorized("missing bearer token or console session")
        return await rt.auth.tokens.verify(token, rt.auth.now())

    return dependency


def scope(who: Staff, asked: str | None = None) -> str | None:
    """The agency whose rows the caller may see (None: every agency, an operator). An
    empty field of a form asks for no agency."""
    asked = asked or None
    if who.is_operator:
        return asked
    if asked and asked != who.agency_id:
        raise forbidden("an agency sees only its own rows", "agency")
    return who.agency_id


def from_row(model: type[M], r: asyncpg.Record) -> M:
    """A response model from the row's columns of the same names."""
    return model.model_validate({k: r[k] for k in model.model_fields if k in r})


def event_view(r: asyncpg.Record) -> c.ConsoleEvent:
    return from_row(c.ConsoleEvent, r)


class Broadcaster(Waker):
    """Wakes every open stream when events commit (LISTEN on the trigger's channel): each
    stream takes a ticket before it reads, and a commit after that sets it."""

    def _on_notify(self, *_: object) -> None:
        ev, self._event = self._event, asyncio.Event()
        ev.set()

    def ticket(self) -> asyncio.Event:
        return self._event

    async def wait_ticket(self, ticket: asyncio.Event, seconds: float) -> bool:
        """True if events committed since ``ticket`` was taken, False after ``seconds``."""
        if self._conn is None or self._conn.is_closed():
            await self.start()
        try:
            await asyncio.wait_for(ticket.wait(), seconds)
        except TimeoutError:
            return False
        return True


class Monitor:
    """Consumer lag of every service's group, read on demand and sampled every 5 s."""

    def __init__(self, rt: Runtime, keep: int = 720) -> None:
        self.rt = rt
        self.samples: deque[c.LagSample] = deque(maxlen=keep)

    def groups(self) -> dict[str, tuple[str, list[str]]]:
        s = self.rt.settings
        return {
            svc: (s.group_id(svc), [t.full_name(s.topic_prefix) for t in CONSUMES[svc]])
            for svc in SERVICES
        }

    async def read(self) -> tuple[list[c.PartitionLagView], dict[str, str]]:
        probe = self.rt.lag_probe
        rows: list[c.PartitionLagView] = []
        errors: dict[str, str] = {}
        if probe is None:
            return rows, {"*": "lag probe not started"}
        for svc, (group, topics) in self.groups().items():
            try:
                async with asyncio.timeout(5):
                    found: list[PartitionLag] = await probe.group_lag(group, topics)
            except Exception as exc:
                errors[group] = repr(exc)[:300]
                continue
            rows += [
                c.PartitionLagView(
                    service=svc,
                    group=group,
                    topic=r.topic,
                    partition=r.partition,
                    committed=r.committed,
                    end=r.end,
                    lag=r.lag,
                )
                for r in found
            ]
        return rows, errors

    async def sample(self) -> None:
        rows, _ = await self.read()
        now = self.rt.clock.now()
        for group, total in totals(rows).items():
            self.samples.append(c.LagSample(at=now, group=group, total=total))

    async def run(self, interval: float = 5.0) -> None:
        while not self.rt.pool.is_closing():
            with contextlib.suppress(Exception):
                await self.sample()
            await asyncio.sleep(interval)


def totals(rows: list[c.PartitionLagView]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.group] = out.get(r.group, 0) + r.lag
    return out


def service_urls(spec: str) -> dict[str, str]:
    """``intake=http://…,routing=http://…`` -> {name: url}."""
    out = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, url = item.partition("=")
        if name and url:
            out[name] = url.rstrip("/")
    return out


async def service_status(rt: Runtime, lag: dict[str, int]) -> list[c.ServiceStatus]:
    urls = service_urls(rt.settings.service_urls)

    async def one(client: httpx.AsyncClient, name: str) -> c.ServiceStatus:
        group = rt.settings.group_id(name)
        if name == "console":
            consuming = rt.consumer.assigned() if rt.consumer else False
            return c.ServiceStatus(
                name=name,
                url=None,
                ready=consuming,
                checks={"consuming": consuming},
                lag_total=lag.get(group),
            )
        url = urls.get(name)
        if url is None:
            return c.ServiceStatus(name=name, url=None, ready=None, lag_total=lag.get(group))
        try:
            r = await client.get(f"{url}/ready")
            body = r.json()
            return c.ServiceStatus(
                name=name,
                url=url,
                ready=r.status_code == 200,
                checks=body.get("checks", {}),
                lag_total=lag.get(group),
            )
        except (httpx.HTTPError, ValueError) as exc:
            return c.ServiceStatus(
                name=name,
                url=url,
                ready=False,
                checks={"error": repr(exc)[:200]},
                lag_total=lag.get(group),
            )

    async with httpx.AsyncClient(timeout=2.0) as client:
        return list(await asyncio.gather(*(one(client, n) for n in SERVICES)))


def action_result(r: asyncpg.Record) -> str:
    if r["action"] == "discard":
        return "done"
    if r["published_at"] is not None:
        return "published"
    if r["failed_at"] is not None:
        return "failed"
    return "pending"


def validate_replacement(payload: dict[str, Any]) -> Envelope:
    """A fixed payload must be a valid event of a known type: 422 naming the fields."""

    def refuse(exc: ValidationError, prefix: str) -> HTTPException:
        return HTTPException(
            422,
            detail={
                "detail": "the fixed payload is not a valid event",
                "errors": [
                    {"field": ".".join([prefix, *map(str, e["loc"])]), "reason": e["msg"]}
                    for e in exc.errors(include_url=False)
                ],
            },
        )

    try:
        env = Envelope.model_validate(payload)
    except ValidationError as exc:
        raise refuse(exc, "payload") from None
    if env.type not in EVENT_TYPES:
        raise HTTPException(
            422, detail=problem("payload.type", f"event type {env.type!r} is unknown")
        )
    try:
        parse_payload(env.type, env.data)
    except ValidationError as exc:
        raise refuse(exc, "payload.data") from None
    return env


def build_router(rt: Runtime, broadcaster: Broadcaster, monitor: Monitor) -> APIRouter:
    caller = caller_dependency(rt)
    Caller = Annotated[Staff, Depends(caller)]

    async def operator(who: Caller) -> Staff:
        if not who.is_operator:
            raise forbidden(f"role {who.role} may not do this", "role")
        return who

    Operator = Annotated[Staff, Depends(operator)]
    r = APIRouter(prefix="/v1/console", tags=["console"], responses=responses(401, 403))

    @r.get("/status", response_model=c.ConsoleStatus)
    async def status(who: Caller) -> c.ConsoleStatus:
        """Per service: ready or not and its consumer lag; event counts; open dead letters."""
        agency = scope(who)
        rows, _ = await monitor.read()
        lag = totals(rows)
        where = "" if agency is None else " WHERE $1 = ANY(agencies)"
        args = [] if agency is None else [agency]
        since = datetime.now().astimezone() - timedelta(minutes=5)
        counts = await rt.pool.fetch(
            f"SELECT type, count(*) AS n FROM events{where} GROUP BY type ORDER BY type", *args
        )
        recent = await rt.pool.fetchval(
            "SELECT count(*) FROM events WHERE recorded_at >= $1"
            + ("" if agency is None else " AND $2 = ANY(agencies)"),
            since,
            *args,
        )
        dossiers = await rt.pool.fetchval(
            "SELECT count(*) FROM dossiers"
            + ("" if agency is None else " WHERE $1 IN (agency, receiving_agency)"),
            *args,
        )
        open_dl = len(await store.dead_letters(rt.pool, agency=agency, status="open", limit=10000))
        return c.ConsoleStatus(
            services=await service_status(rt, lag) if who.is_operator else [],
            lag_totals=lag if who.is_operator else {},
            events_total=sum(x["n"] for x in counts),
            events_last_5_minutes=recent,
            event_types={x["type"]: x["n"] for x in counts},
            dossiers=dossiers,
            open_dead_letters=open_dl,
            generated_at=rt.clock.now(),
        )

    @r.get("/events", response_model=c.EventPage, responses=responses(422))
    async def events(
        who: Caller,
        type_: TypeFilter = None,
        agency: AgencyFilter = None,
        dossier: DossierFilter = None,
        after: Annotated[int | None, Query(ge=0)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> c.EventPage:
        """Events, newest first; with ``after`` (a ``seq``), the ones after it, oldest
        first (page on with ``next_after``)."""
        rows = await store.events(
            rt.pool,
            type_=type_,
            agency=scope(who, agency),
            dossier=dossier,
            after=after,
            limit=limit,
        )
        items = [event_view(x) for x in rows]
        return c.EventPage(items=items, next_after=max((i.seq for i in items), default=after))

    @r.get(
        "/stream",
        response_class=StreamingResponse,
        responses={
            **responses(422),
            200: {
                "description": "Server-sent events: `id: <seq>`, `event: event`, `data: <JSON"
                " ConsoleEvent>`; `: keep-alive` every 15 s; resume with Last-Event-ID",
                # Open API 3.1 reads an event stream's ``schema`` as one event's: its fields
                # as the WHATWG parser gives them, ``data`` a JSON ConsoleEvent in a string
                "content": {"text/event-stream": {"schema": SSE_EVENT}},
            },
        },
    )
    async def stream(
        request: Request,
        who: Caller,
        type_: TypeFilter = None,
        agency: AgencyFilter = None,
        dossier: DossierFilter = None,
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,19}$")
        ] = None,
        keepalive: Annotated[float, Query(ge=0.2, le=60)] = 15.0,
        seconds: Annotated[float | None, Query(gt=0, le=86400)] = None,
    ) -> StreamingResponse:
        """New events as they commit, with the same filters as ``/events``; ``seconds``
        ends the stream after that long (a script's bounded watch)."""
        own = scope(who, agency)
        start = int(last_event_id) if last_event_id else after
        if start is None:
            start = int(await rt.pool.fetchval("SELECT COALESCE(max(seq), 0) FROM events"))

        async def gen() -> AsyncIterator[str]:
            last = start
            ends = None if seconds is None else time.monotonic() + seconds
            yield f"retry: 2000\n: connected at {last}\n\n"
            while ends is None or time.monotonic() < ends:
                ticket = broadcaster.ticket()
                rows = await store.events(
                    rt.pool, type_=type_, agency=own, dossier=dossier, after=last, limit=200
                )
                for x in rows:
                    last = x["seq"]
                    body = event_view(x).model_dump_json()
                    yield f"id: {last}\nevent: event\ndata: {body}\n\n"
                if len(rows) == 200:
                    continue
                if await request.is_disconnected():
                    return
                wait = (
                    keepalive if ends is None else max(0.0, min(keepalive, ends - time.monotonic()))
                )
                if not await broadcaster.wait_ticket(ticket, wait):
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @r.get("/dossiers/{code}", response_model=c.DossierTimeline, responses=responses(404, 422))
    async def dossier(code: Code, who: Caller) -> c.DossierTimeline:
        """Every event of the dossier across services, in order, with causation links."""
        return await timeline(rt, who, code)

    @r.get("/lag", response_model=c.LagReport, responses=responses(422))
    async def lag(who: Operator, minutes: Annotated[int, Query(ge=1, le=240)] = 30) -> c.LagReport:
        """Lag per group, topic and partition of every service; events per minute."""
        return await lag_report(rt, monitor, minutes)

    @r.get("/dossiers", response_model=c.DossierPage, responses=responses(422))
    async def search(
        who: Caller,
        q: SearchText = None,
        code: CodePrefix = None,
        state: StateFilter = None,
        agency: AgencyFilter = None,
        after: SearchCursor = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> c.DossierPage:
        """Dossiers by code (whole or its beginning), words of their procedure (code or
        name) or agencies (id or name, with or without accents) and state, most recently
        active first; page on with ``after=next_after``. Nothing of the applicant's is
        searched. An agency sees its own dossiers only."""
        return await search_dossiers(
            rt, scope(who, agency), q=q, code=code, state=state, after=after, limit=limit
        )

    @r.get("/dead-letters", response_model=list[c.DeadLetterSummary], responses=responses(422))
    async def dead_letters(
        who: Caller,
        status: Annotated[c.DeadLetterStatus | Literal[""] | None, Query()] = None,
        writer: WriterFilter = None,
        event_type: EventTypeFilter = None,
        dossier: DossierFilter = None,
        after: DeadLetterCursor = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[c.DeadLetterSummary]:
        """Dead letters, newest first, narrowed by every filter given (an empty one is
        none); the next page: ``after`` = the last one's id."""
        rows = await store.dead_letters(
            rt.pool,
            agency=scope(who),
            status=status or None,
            limit=limit,
            writer=writer or None,
            event_type=event_type or None,
            dossier=dossier or None,
            after=after or None,
        )
        return [summary(x) for x in rows]

    @r.get(
        "/dead-letters/{entry_id}",
        response_model=c.DeadLetterDetail,
        responses=responses(404, 422),
    )
    async def dead_letter(
        entry_id: EntryId, who: Caller, reveal: Annotated[bool, Query()] = False
    ) -> c.DeadLetterDetail:
        """One dead letter with its payload (masked unless an operator reveals it,
        audited), reasons and what was done with it."""
        return await detail(rt, who, entry_id, reveal)

    @r.post(
        "/dead-letters/{entry_id}/replay",
        response_model=c.ActionAccepted,
        status_code=202,
        responses=responses(404, 409, 422),
    )
    async def replay(
        entry_id: EntryId, body: c.ReplayDeadLetter, who: Operator
    ) -> c.ActionAccepted:
        """Publish it again to its original topic with its original key (or a fixed
        payload), through the outbox; ``result`` turns ``published`` once acknowledged."""
        return await do_replay(rt, who, entry_id, body)

    @r.post(
        "/dead-letters/{entry_id}/discard",
        response_model=c.ActionAccepted,
        responses=responses(404, 409, 422),
    )
    async def discard(
        entry_id: EntryId, body: c.DiscardDeadLetter, who: Operator
    ) -> c.ActionAccepted:
        """Close it without replay, with the reason (audited)."""
        async with rt.pool.acquire() as conn, conn.transaction():
            row = await _lock_entry(conn, entry_id)
            if row["status"] not in ("open", "replay_failed"):
                raise HTTPException(409, detail=problem("status", f"it is {row['status']}"))
            aid = await conn.fetchval(
                "INSERT INTO dead_letter_actions(entry_id, action, person, role, agency_id,"
                " reason) VALUES ($1, 'discard', $2, $3, $4, $5) RETURNING id",
                entry_id,
                who.person,
                who.role,
                who.agency_id,
                body.reason,
            )
        return c.ActionAccepted(id=aid, entry_id=entry_id, action="discard", result="done")

    @r.get("/sla", response_model=c.SlaBoard, responses=responses(422))
    async def sla(
        who: Caller,
        agency: AgencyFilter = None,
        hours: Annotated[int, Query(ge=1, le=720)] = 24,
        procedure: ProcedureFilter = None,
    ) -> c.SlaBoard:
        """Dossiers and opinion requests within ``hours`` of their deadline or past it,
        and the dossiers finished late in the last ``hours``."""
        return await sla_board(rt, scope(who, agency), hours, procedure or None)

    @r.get("/figures", response_model=c.Figures, responses=responses(422))
    async def figures(
        who: Caller,
        agency: AgencyFilter = None,
        procedure: ProcedureFilter = None,
        from_month: Month = None,
        to_month: Month = None,
    ) -> c.Figures:
        """Decision 766 figures per agency, procedure and month, and the monthly trend."""
        return await figures_of(
            rt, scope(who, agency), procedure or None, from_month or None, to_month or None
        )

    return r


# --- the work behind the routes (the pages call these too) ------------------------------


async def timeline(rt: Runtime, who: Staff, code: str) -> c.DossierTimeline:
    rows = await store.timeline(rt.pool, code)
    d = await rt.pool.fetchrow("SELECT * FROM dossiers WHERE code = $1", code)
    if not rows and d is None:
        raise HTTPException(404, detail=problem("code", f"no events of dossier {code}"))
    if not who.is_operator:
        named = {a for x in rows for a in x["agencies"]}
        if d is not None:
            named |= {d["agency"], d["receiving_agency"], d["lead_agency"]}
        if who.agency_id not in named:
            raise forbidden("this dossier belongs to another agency", "agency")
    items = [event_view(x) for x in rows]
    ids = {i.event_id for i in items}
    requests = await rt.pool.fetch(
        "SELECT * FROM opinion_requests WHERE dossier_code = $1 ORDER BY requested_at", code
    )
    return c.DossierTimeline(
        code=code,
        dossier=None if d is None else c.DossierSummary.model_validate(dict(d)),
        events=items,
        links=[
            c.CausalLink(cause=i.causation_id, effect=i.event_id)
            for i in items
            if i.causation_id in ids and i.causation_id is not None
        ],
        correlations=list(dict.fromkeys(i.correlation_id for i in items)),
        opinion_requests=[c.OpinionRequestView.model_validate(dict(q)) for q in requests],
    )


async def lag_report(rt: Runtime, monitor: Monitor, minutes: int) -> c.LagReport:
    rows, errors = await monitor.read()
    since = datetime.now().astimezone() - timedelta(minutes=minutes)
    points = await store.throughput(rt.pool, since)
    return c.LagReport(
        partitions=rows,
        totals=totals(rows),
        throughput=[
            c.ThroughputPoint(minute=p["minute"], topic=p["topic"], events=p["n"]) for p in points
        ],
        samples=[s for s in monitor.samples if s.at >= rt.clock.now() - timedelta(minutes=minutes)],
        errors=errors,
    )


def encode_cursor(at: datetime, code: str) -> str:
    """A search page's last row as the opaque ``next_after``."""
    raw = f"{at.isoformat()}|{code}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, code = raw.split("|", 1)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not re.fullmatch(DOSSIER_CODE_PATTERN, code):
            raise ValueError(raw)
    except ValueError:
        raise HTTPException(
            422, detail=problem("query.after", "not a cursor this search gave")
        ) from None
    return when, code


async def search_dossiers(
    rt: Runtime,
    agency: str | None,
    *,
    q: str | None,
    code: str | None,
    state: str | None,
    after: str | None,
    limit: int,
) -> c.DossierPage:
    """The dossier search (the API's and the page's): each word of ``q`` also matches the
    agencies whose name holds it."""
    book = default_book()
    terms = []
    for word in store.fold(unicodedata.normalize("NFC", q or "")).split()[:8]:
        ids = [a.id for a in book.agencies if word in store.fold(a.name)]
        terms.append((word, ids))
    rows = await store.search_dossiers(
        rt.pool,
        agency=agency,
        terms=terms,
        code=(code or "").upper() or None,
        state=state or None,
        after=decode_cursor(after) if after else None,
        limit=limit + 1,
    )
    items = [from_row(c.DossierSummary, x) for x in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return c.DossierPage(
        items=items,
        next_after=encode_cursor(last["sort_at"], last["code"]) if last is not None else None,
    )


def summary(x: asyncpg.Record) -> c.DeadLetterSummary:
    return from_row(c.DeadLetterSummary, x)


async def detail(rt: Runtime, who: Staff, entry_id: str, reveal: bool) -> c.DeadLetterDetail:
    x = await store.dead_letter(rt.pool, entry_id)
    if x is None or (not who.is_operator and who.agency_id not in x["agencies"]):
        raise HTTPException(404, detail=problem("entry_id", f"no dead letter {entry_id}"))
    if reveal and not who.is_operator:
        raise forbidden("only operators may read a dead letter whole", "reveal")
    value = bytes(x["value"])
    if reveal:
        await auth.audit_read(
            rt.pool,
            who,
            x["dossier_code"] or f"dead-letter:{entry_id}",
            f"GET /v1/console/dead-letters/{entry_id}?reveal=true",
            rt.clock.now(),
        )
        try:
            payload: Any = json.loads(value)
        except ValueError:
            payload = value.decode("utf-8", "replace")
    else:
        payload = domain.masked_payload(value)
    actions = await store.dead_letter_actions(rt.pool, entry_id)
    base = summary(x).model_dump()
    return c.DeadLetterDetail(
        **base,
        key=x["key"],
        headers=x["headers"],
        detail=x["detail"],
        payload=payload,
        payload_revealed=reveal,
        actions=[
            c.DeadLetterAction(
                id=a["id"],
                action=a["action"],
                person=a["person"],
                role=a["role"],
                agency_id=a["agency_id"],
                reason=a["reason"],
                edited=a["edited"],
                created_at=a["created_at"],
                result=action_result(a),
                failure=a["failure"],
            )
            for a in actions
        ],
    )


async def _lock_entry(conn: asyncpg.Connection, entry_id: str) -> asyncpg.Record:
    """The entry, locked against a concurrent replay or discard; 404 if unknown."""
    found = await conn.fetchval(
        "SELECT id FROM dead_letter_entries WHERE id = $1 FOR UPDATE", entry_id
    )
    if found is None:
        raise HTTPException(404, detail=problem("entry_id", f"no dead letter {entry_id}"))
    row = await store.dead_letter(conn, entry_id)
    assert row is not None
    return row


async def do_replay(
    rt: Runtime, who: Staff, entry_id: str, body: c.ReplayDeadLetter
) -> c.ActionAccepted:
    """Give a dead letter back to the consumer that wrote it: a row of the console's outbox
    for that consumer's replay topic (the only topics the console may write), committed
    with the audited action. Refused for a dead letter whose writer is unknown or the
    console itself (rebuild the read models instead), whose claimed origin its writer
    could not have had, or whose fixed payload changes the event id."""
    env = validate_replacement(body.payload) if body.payload is not None else None
    async with rt.pool.acquire() as conn, conn.transaction():
        x = await _lock_entry(conn, entry_id)
        if x["status"] not in ("open", "replay_failed"):
            raise HTTPException(409, detail=problem("status", f"it is {x['status']}"))
        writer = x["writer"]
        if writer == "console":
            raise HTTPException(
                409,
                detail=problem(
                    "writer",
                    "thư chết của chính bảng điều khiển không phát lại được: dựng lại mô hình"
                    " đọc (lienthong replay-read-models)",
                ),
            )
        if writer not in REPLAY_TOPICS:
            raise HTTPException(
                409, detail=problem("writer", "không rõ dịch vụ đã ghi thư chết này")
            )
        if x["forged"]:
            raise HTTPException(
                409,
                detail=problem("origin", f"nguồn khai trong thư chết không thể có: {x['forged']}"),
            )
        if x["origin_topic"] == REPLAY_TOPICS[writer].full_name(rt.settings.topic_prefix):
            raise HTTPException(
                409,
                detail=problem(
                    "origin",
                    "thư chết của một lần phát lại: thư gốc vẫn còn mở, hãy phát lại thư gốc",
                ),
            )
        if body.payload is not None:
            value = json.dumps(body.payload, ensure_ascii=False)
        elif x["stored_elsewhere"]:
            raise HTTPException(
                422,
                detail=problem(
                    "payload",
                    f"the original is stored by {x['consumer']} (dead letter"
                    f" {x['stored_id']}): send a fixed payload",
                ),
            )
        else:
            try:
                value = bytes(x["value"]).decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(
                    422, detail=problem("payload", "the original is not text: send a fixed one")
                ) from None
        # the consumer replays only the event it held, same id, type and subject
        # (claim_replay); too large for the topic, the original is with the consumer
        held = {} if x["stored_elsewhere"] else domain.held_event(bytes(x["value"]))
        if held is None:
            raise HTTPException(
                409, detail=problem("payload", "thư chết không chứa sự kiện nào để phát lại")
            )
        if env is not None and held:
            carried = {"event_id": str(env.event_id), "type": env.type, "subject": env.subject}
            for name, value_now in carried.items():
                if held.get(name) != value_now:
                    raise HTTPException(
                        422,
                        detail=problem(
                            f"payload.{name}",
                            f"a replay keeps the dead letter's {name} ({held.get(name)!r})",
                        ),
                    )
        if len(value.encode()) > MAX_EVENT_BYTES:
            raise HTTPException(422, detail=problem("payload", "over the 256 KiB limit"))
        outbox_id = uuid.uuid4()
        headers = domain.replay_headers(x["headers"])
        headers.update(
            {
                "replay_of": str(x["stored_id"]),
                "replayed_from": entry_id,
                "replayed_by": who.actor,
                **({"event_id": str(env.event_id), "event_type": env.type} if env else {}),
            }
        )
        await conn.execute(
            "INSERT INTO outbox(event_id, topic, key, event_type, payload, headers)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            outbox_id,
            REPLAY_TOPICS[writer].full_name(rt.settings.topic_prefix),
            env.subject if env else domain.replay_key(value, x["key"]),
            env.type if env else (x["event_type"] or "unknown"),
            value,
            headers,
        )
        aid = await conn.fetchval(
            "INSERT INTO dead_letter_actions(entry_id, action, person, role, agency_id, reason,"
            " edited, outbox_event_id) VALUES ($1, 'replay', $2, $3, $4, $5, $6, $7)"
            " RETURNING id",
            entry_id,
            who.person,
            who.role,
            who.agency_id,
            body.reason,
            body.payload is not None,
            outbox_id,
        )
    return c.ActionAccepted(
        id=aid, entry_id=entry_id, action="replay", result="pending", outbox_event_id=outbox_id
    )


async def sla_board(
    rt: Runtime, agency: str | None, hours: int, procedure: str | None = None
) -> c.SlaBoard:
    """What is due within ``hours`` or past it, and what finished late in the last
    ``hours``; of one agency and one procedure when given (empty: every one)."""
    now = rt.clock.now()
    until = now + timedelta(hours=hours)
    args: list[Any] = [until]
    own = ""
    if agency:
        args.append(agency)
        own = " AND $2 IN (agency, receiving_agency, lead_agency)"
    proc, proc_q, proc_a = "", "", ""
    if procedure:
        args.append(procedure)
        n = len(args)
        proc = f" AND procedure_code = ${n}"
        proc_q = f" AND dossier_code IN (SELECT code FROM dossiers WHERE procedure_code = ${n})"
    ds = await rt.pool.fetch(
        "SELECT * FROM dossiers WHERE finished_at IS NULL AND appointment_at IS NOT NULL"
        " AND (state IS NULL OR state NOT IN ('result_ready', 'returned', 'withdrawn',"
        " 'stopped', 'refused', 'not_received')) AND appointment_at <= $1"
        + own
        + proc
        + " ORDER BY appointment_at LIMIT 500",
        *args,
    )
    # finished late within the period: the same parameters, $1 the period's start
    late = await rt.pool.fetch(
        "SELECT * FROM dossiers WHERE finished_at IS NOT NULL AND timeliness = 'late'"
        " AND finished_at >= $1" + own + proc + " ORDER BY finished_at DESC LIMIT 500",
        now - timedelta(hours=hours),
        *args[1:],
    )
    own_q = " AND $2 IN (agency_id, lead_agency)" if agency else ""
    qs = await rt.pool.fetch(
        "SELECT * FROM opinion_requests WHERE closed_at IS NULL AND due_at IS NOT NULL"
        " AND due_at <= $1" + own_q + proc_q + " ORDER BY due_at LIMIT 500",
        *args,
    )

    own_a = " AND $1 = ANY(d.agencies)" if agency else ""
    args_a: list[Any] = [agency] if agency else []
    if procedure:
        args_a.append(procedure)
        proc_a = (
            " AND d.dossier_code IN (SELECT code FROM dossiers"
            f" WHERE procedure_code = ${len(args_a)})"
        )
    drafts = await rt.pool.fetch(
        "SELECT d.dossier_code, d.data AS draft, x.data AS up FROM events d"
        " LEFT JOIN events x ON x.type = 'routing.apology_escalated'"
        " AND x.dossier_code = d.dossier_code AND x.data->>'apology_id' = d.data->>'apology_id'"
        " WHERE d.type = 'routing.apology_drafted'" + own_a + proc_a + " AND NOT EXISTS (SELECT 1"
        " FROM events e WHERE e.dossier_code = d.dossier_code"
        " AND e.type IN ('routing.apology_issued', 'routing.apology_withdrawn')"
        " AND e.data->>'apology_id' = d.data->>'apology_id')"
        " ORDER BY d.data->>'latest_issue_at' LIMIT 500",
        *args_a,
    )

    def left(t: datetime) -> float:
        return round((t - now).total_seconds() / 3600, 2)

    unsigned = []
    for r in drafts:
        draft = json.loads(r["draft"]) if isinstance(r["draft"], str) else r["draft"]
        up = json.loads(r["up"]) if isinstance(r["up"], str) else r["up"]
        latest = datetime.fromisoformat(draft["latest_issue_at"])
        unsigned.append(
            c.UnsignedApology(
                dossier_code=r["dossier_code"],
                apology_id=draft["apology_id"],
                number=draft["number"],
                agency=draft["agency_id"],
                agency_name=draft.get("agency_name"),
                reason=draft.get("reason"),
                drafted_at=datetime.fromisoformat(draft["drafted_at"]),
                latest_issue_at=latest,
                hours_left=left(latest),
                past=latest < now,
                escalated_at=datetime.fromisoformat(up["escalated_at"]) if up else None,
                superior=up.get("superior") if up else None,
            )
        )

    dossiers = [
        c.SlaItem(
            kind="dossier",
            dossier_code=d["code"],
            agency=d["agency"],
            what=d["procedure_name"],
            due_at=d["appointment_at"],
            hours_left=left(d["appointment_at"]),
            past=d["appointment_at"] < now,
            state=d["state"],
            escalations=d["overdue_steps"],
        )
        for d in ds
    ]
    requests = [
        c.SlaItem(
            kind="opinion_request",
            dossier_code=q["dossier_code"],
            request_id=q["request_id"],
            agency=q["agency_id"],
            what=q["subject"],
            due_at=q["due_at"],
            hours_left=left(q["due_at"]),
            past=q["due_at"] < now,
            state=q["status"],
            escalations=q["escalations"],
            last_escalation=q["last_escalation"],
        )
        for q in qs
    ]
    per: dict[str, c.SlaAgency] = {}
    for item in (*dossiers, *requests):
        a = per.setdefault(
            item.agency or "?",
            c.SlaAgency(agency=item.agency or "?", near=0, past=0, escalations=0),
        )
        if item.past:
            a.past += 1
        else:
            a.near += 1
        a.escalations += item.escalations
    return c.SlaBoard(
        generated_at=now,
        horizon_hours=hours,
        dossiers=dossiers,
        opinion_requests=requests,
        agencies=sorted(per.values(), key=lambda a: (-a.past, -a.near, a.agency)),
        unsigned_apologies=unsigned,
        finished_late=[
            c.FinishedLate(
                dossier_code=d["code"],
                agency=d["agency"],
                procedure_code=d["procedure_code"],
                what=d["procedure_name"],
                due_at=(due := d["legal_appointment_at"] or d["appointment_at"]),
                finished_at=d["finished_at"],
                hours_late=(
                    round((d["finished_at"] - due).total_seconds() / 3600, 2) if due else None
                ),
                state=d["state"],
            )
            for d in late
        ],
    )


MONTH_SQL = "to_char({col} AT TIME ZONE 'Asia/Ho_Chi_Minh', 'YYYY-MM')"


async def figures_of(
    rt: Runtime,
    agency: str | None,
    procedure: str | None,
    from_month: str | None,
    to_month: str | None,
) -> c.Figures:
    where, args = ["agency IS NOT NULL", "procedure_code IS NOT NULL"], []
    if agency:
        args.append(agency)
        where.append(f"agency = ${len(args)}")
    if procedure:
        args.append(procedure)
        where.append(f"procedure_code = ${len(args)}")
    cond = " AND ".join(where)
    dcond = " AND ".join(
        w.replace("agency", "d.agency").replace("procedure_code", "d.procedure_code") for w in where
    )
    received = await rt.pool.fetch(
        f"SELECT agency, procedure_code, max(procedure_name) AS name,"
        f" {MONTH_SQL.format(col='received_at')} AS month, count(*) AS n,"
        " count(*) FILTER (WHERE online) AS online FROM dossiers"
        f" WHERE received_at IS NOT NULL AND {cond} GROUP BY 1, 2, 4",
        *args,
    )
    finished = await rt.pool.fetch(
        f"SELECT agency, procedure_code, max(procedure_name) AS name,"
        f" {MONTH_SQL.format(col='finished_at')} AS month,"
        " count(*) FILTER (WHERE timeliness IN ('early', 'on_time')) AS on_time,"
        " count(*) FILTER (WHERE timeliness = 'late') AS late FROM dossiers"
        f" WHERE finished_at IS NOT NULL AND timeliness IS NOT NULL AND {cond}"
        " GROUP BY 1, 2, 4",
        *args,
    )
    apologies = await rt.pool.fetch(
        f"SELECT d.agency, d.procedure_code, max(d.procedure_name) AS name,"
        f" {MONTH_SQL.format(col='e.occurred_at')} AS month, count(*) AS n"
        " FROM events e JOIN dossiers d ON d.code = e.dossier_code"
        f" WHERE e.type = 'routing.apology_issued' AND {dcond}"
        " GROUP BY 1, 2, 4",
        *args,
    )
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}

    def cell(x: asyncpg.Record) -> dict[str, Any]:
        key = (x["agency"], x["procedure_code"], x["month"])
        return cells.setdefault(
            key,
            {
                "agency": key[0],
                "procedure_code": key[1],
                "procedure_name": x["name"],
                "month": key[2],
                "received": 0,
                "online": 0,
                "on_time": 0,
                "late": 0,
                "apologies": 0,
            },
        )

    for x in received:
        cell(x).update(received=x["n"], online=x["online"])
    for x in finished:
        cell(x).update(on_time=x["on_time"], late=x["late"])
    for x in apologies:
        cell(x)["apologies"] = x["n"]
    rows = []
    for v in sorted(cells.values(), key=lambda v: (v["month"], v["agency"], v["procedure_code"])):
        if (from_month and v["month"] < from_month) or (to_month and v["month"] > to_month):
            continue
        rows.append(
            c.FigureRow(
                **v,
                finished=v["on_time"] + v["late"],
                online_share=round(v["online"] / v["received"], 4) if v["received"] else None,
                on_time_rate=domain.on_time_rate(v["on_time"], v["late"]),
            )
        )
    trend: dict[str, dict[str, int]] = {}
    for f in rows:
        t = trend.setdefault(
            f.month, {"received": 0, "online": 0, "on_time": 0, "late": 0, "apologies": 0}
        )
        for k in t:
            t[k] += getattr(f, k)
    return c.Figures(
        rows=rows,
        trend=[
            c.FigureTrend(
                month=m,
                received=t["received"],
                finished=t["on_time"] + t["late"],
                on_time=t["on_time"],
                late=t["late"],
                on_time_rate=domain.on_time_rate(t["on_time"], t["late"]),
                online_share=round(t["online"] / t["received"], 4) if t["received"] else None,
                apologies=t["apologies"],
            )
            for m, t in sorted(trend.items())
        ],
    )


def now_ms() -> int:
    return int(time.time() * 1000)
