"""Notices people receive, on real PostgreSQL: email, SMS through a gateway (delivery
receipts by a signed webhook) and messages on the national portal, one sender loop per
channel outside any transaction.

The gateway and the portal are small local fakes (``httpx.MockTransport``) speaking the
protocols the senders speak (``deploy/simulators/sms.py`` and the portal simulator speak
the same); the email server is a real one (aiosmtpd). Events reach the handlers through
``EventConsumer.consume`` as the Kafka subscriber hands them over."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from contracts.common import (
    Applicant,
    Channel,
    DocumentRef,
    DossierStatus,
    Duration,
    ObjectType,
    Office,
    StepKind,
)
from contracts.envelope import EventPayload, new_envelope
from contracts.events import (
    ConsultationRequested,
    DossierReceived,
    FeeRequested,
    Holder,
    RouteClosed,
    StepRef,
)
from contracts.topics import topic_for
from deploy.local import SmtpSink
from services.notification import api, domain, handlers
from services.notification.app import SPEC
from services.notification.channels import PortalSender, SmsSender
from services.notification.delivery import (
    Deliveries,
    DeliveryPolicy,
    RecipientLimit,
    Result,
    SmtpSender,
)
from services.notification.handlers import Notifier
from services.runtime.clock import ManualClock
from services.runtime.consumer import EventConsumer, Raw
from services.runtime.db import create_pool, migrate
from services.runtime.forms import FormBook
from services.runtime.ops import install_edge_guards
from services.runtime.portal_client import PortalClient, PortalConfig
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, eventually, staff

SECRET = "test-webhook-secret-0123456789abcdef"
API_KEY = "test-sms-api-key"
SMS_URL, PORTAL_URL, PUBLIC_URL = "http://sms.test", "http://portal.test", "http://notify.test"
OPS, DESK = "000.00.00.H29", "000.00.01.H29"
AT = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
LOOKUP_LINE = "Mã tra cứu"
FAST = DeliveryPolicy(
    batch_size=20,
    lease=timedelta(seconds=60),
    max_attempts=3,
    retry_base=timedelta(milliseconds=100),
    retry_max=timedelta(milliseconds=400),
    poll_interval=0.05,
)
PERSON = Applicant(
    name="Nguyễn Thị Lan",
    id_number="079190000001",
    phone="0912345678",
    email="lan@example.vn",
    address="12 Lê Lợi, phường Sài Gòn",
    portal_account="cd-079190000001",
)
OFFICE = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Ủy ban nhân dân phường Sài Gòn",
    desk="Trung tâm Phục vụ hành chính công phường Sài Gòn",
    place="Sài Gòn",
)


def code(i: int = 1) -> str:
    return f"000.00.01.H29-261120-{i:04d}"


class _Clock(ManualClock):
    """Wall time plus an offset the test moves (leases and hours pass without waiting)."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


# --- the fakes --------------------------------------------------------------------------------


@dataclass
class FakeGateway:
    """The SMS gateway's protocol: POST /v1/messages with a bearer key; 202 with a new id,
    200 with the same id for a client_ref it already has; 400 {error, field}."""

    mode: str = "ok"  # ok | 503 | refuse
    refused: set[str] = field(default_factory=set)
    ids: dict[str, str] = field(default_factory=dict)  # client_ref -> gateway id
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[dict[str, Any]], httpx.Response | None] | None = None
    """Answers a message in its own way (None: as the protocol says)."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "refuse":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.mode == "503":
            return httpx.Response(503, json={"error": "service unavailable"})
        assert (request.method, request.url.path) == ("POST", "/v1/messages")
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"error": "bad key"})
        body = json.loads(request.content)
        self.requests.append(body)
        special = self.answer(body) if self.answer else None
        if special is not None:
            return special
        if not re.fullmatch(r"0[0-9]{9,10}", body.get("to", "")) or body["to"] in self.refused:
            return httpx.Response(
                400, json={"error": "số điện thoại không nhận tin", "field": "to"}
            )
        ref = body["client_ref"]
        if ref in self.ids:
            return httpx.Response(200, json={"id": self.ids[ref], "status": "accepted"})
        self.ids[ref] = f"gw-{len(self.ids) + 1}"
        return httpx.Response(202, json={"id": self.ids[ref], "status": "accepted"})

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle), base_url=SMS_URL)

    def receipt(
        self, nid: uuid.UUID, status: str = "delivered", reason: str | None = None, **over: Any
    ) -> bytes:
        ref = str(nid)
        body = {
            "id": self.ids.get(ref, "gw-unknown"),
            "client_ref": ref,
            "to": next(r["to"] for r in self.requests if r["client_ref"] == ref),
            "status": status,
            "reason": reason,
            "at": "2026-11-20T02:05:00Z",
            **over,
        }
        return json.dumps(body).encode()


@dataclass
class FakePortal:
    """The portal's envelope: log in for a session, then every call to one endpoint,
    answered {error_code, message}."""

    mode: str = "ok"  # ok | code | garbage
    calls: list[dict[str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/api/auth":
            return httpx.Response(200, json={"error_code": 0, "session": "phien-1"})
        self.calls.append(body)
        if self.mode == "garbage":
            return httpx.Response(200, text="<html><body>502 Bad Gateway</body></html>")
        if self.mode == "code":
            return httpx.Response(
                200, json={"error_code": 3, "message": "Không tìm thấy tài khoản", "ref": "X1"}
            )
        return httpx.Response(200, json={"error_code": 0, "message": "Thành công"})

    def client(self) -> PortalClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle), base_url=PORTAL_URL)
        return PortalClient(PortalConfig(PORTAL_URL, "u", "p", "000.00.01.H29"), http)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def rt(database_url: str) -> AsyncIterator[Runtime]:
    settings = configure_auth(ServiceSettings.for_service("notification"))
    settings.database_url = database_url
    settings.sms_url, settings.sms_api_key = SMS_URL, API_KEY
    settings.sms_webhook_secret, settings.public_url = SECRET, PUBLIC_URL
    settings.portal_url = PORTAL_URL
    runtime = Runtime("notification", settings, _Clock())
    runtime._pool = await create_pool(database_url, "notification", max_size=8)
    await migrate(runtime.pool, "notification", SPEC.migrations)
    yield runtime
    await runtime.pool.close()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def portal() -> FakePortal:
    return FakePortal()


@pytest.fixture
async def http(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_edge_guards(app, rt.settings.max_body_bytes)
    app.include_router(api.build_router(rt))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://notification"
    ) as client:
        yield client


class World:
    """Notification's consumer and one loop per channel, on the fakes."""

    def __init__(
        self,
        rt: Runtime,
        smtp: SmtpSink,
        gateway: FakeGateway,
        portal: FakePortal,
        channels: tuple[str, ...] = ("email", "sms", "portal"),
        per_hour: int = 10,
    ) -> None:
        self.rt = rt
        self.gateway = gateway
        self.consumer = EventConsumer(
            service="notification",
            group_id="lienthong-notification",
            topics=SPEC.topics,
            handlers=handlers.build(Notifier(rt, FormBook.load(), channels)),
            unblocking=handlers.UNBLOCKING,
        )
        self.offsets: dict[str, int] = {}
        self.email = Deliveries(
            rt, SmtpSender("127.0.0.1", smtp.port, "mot-cua@lienthong.local", timeout=5), FAST
        )
        self.sms = self.sms_loop(per_hour)
        self.portal = Deliveries(rt, PortalSender(portal.client()), FAST)

    def sms_loop(self, per_hour: int = 10) -> Deliveries:
        sender = SmsSender(
            SMS_URL,
            API_KEY,
            public_url=PUBLIC_URL,
            rate_per_second=50,
            client=self.gateway.client(),
        )
        return Deliveries(self.rt, sender, FAST, limit=RecipientLimit("sms", per_hour))

    async def feed(self, payload: EventPayload, producer: str = "intake") -> Raw:
        """The event as Kafka hands it over; the record, to hand over again."""
        topic = topic_for(payload.event_type).name
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        subject = payload.code  # type: ignore[attr-defined]
        env = new_envelope(payload, subject=subject, producer=producer, occurred_at=AT)
        raw = Raw(topic, 0, offset, subject.encode(), env.model_dump_json().encode())
        await self.consume(raw)
        return raw

    async def consume(self, raw: Raw) -> None:
        await self.consumer.consume(raw, self.rt.pool, None)  # type: ignore[arg-type]

    async def close(self) -> None:
        for loop in (self.email, self.sms, self.portal):
            await loop.sender.close()


@pytest.fixture
async def world(
    rt: Runtime, smtp: SmtpSink, gateway: FakeGateway, portal: FakePortal
) -> AsyncIterator[World]:
    w = World(rt, smtp, gateway, portal)
    yield w
    await w.close()


def received(i: int = 1, applicant: Applicant = PERSON, **changes: Any) -> DossierReceived:
    fields: dict[str, Any] = dict(
        code=code(i),
        procedure_code="1.000894",
        procedure_version=1,
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=applicant,
        documents=(DocumentRef(code="TK", name="Tờ khai đăng ký kết hôn"),),
        receiving_agency=DESK,
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        lead_agency=DESK,
        processing_time=Duration(value=5),
        received_at=AT,
        clock_starts_at=AT,
        appointment_at=AT + timedelta(days=7),
        office=OFFICE,
    )
    fields.update(changes)
    return DossierReceived(**fields)


def fee(i: int = 1) -> FeeRequested:
    holder = Holder(agency_id=DESK, agency_name="Ủy ban nhân dân phường Sài Gòn")
    step = StepRef(
        order=2,
        kind=StepKind.APPRAISE,
        action="Thẩm định",
        agency_id=DESK,
        agency_name="Ủy ban nhân dân phường Sài Gòn",
        duration=Duration(value=3),
    )
    return FeeRequested(
        code=code(i), step=step, amount_vnd=50000, requested_by=holder, requested_at=AT
    )


async def rows(rt: Runtime, channel: str | None = None) -> list[asyncpg.Record]:
    return list(
        await rt.pool.fetch(
            "SELECT * FROM notifications WHERE ($1::text IS NULL OR channel = $1)"
            " ORDER BY dossier_code, kind, channel",
            channel,
        )
    )


async def one(rt: Runtime, nid: uuid.UUID) -> asyncpg.Record:
    row = await rt.pool.fetchrow("SELECT * FROM notifications WHERE id = $1", nid)
    assert row is not None
    return row


async def sent_events(rt: Runtime) -> list[dict[str, Any]]:
    return [
        json.loads(r["payload"])["data"]
        for r in await rt.pool.fetch(
            "SELECT payload FROM outbox WHERE event_type = 'notification.sent' ORDER BY id"
        )
    ]


def signed(body: bytes) -> dict[str, str]:
    return {"x-signature": domain.sign(SECRET, body), "content-type": "application/json"}


OPERATOR = staff(OPS, "operator")


def errors(r: httpx.Response) -> list[dict[str, Any]]:
    """A refusal's ``errors``: the service flattens a structured ``detail`` into the body
    (``runtime.service``); this bare test app leaves it under ``detail``."""
    body = r.json()
    shaped = body["detail"] if isinstance(body.get("detail"), dict) else body
    return list(shaped["errors"])


# --- tests ------------------------------------------------------------------------------------


async def test_an_applicant_with_email_phone_and_portal_account_gets_three_per_notice(
    world: World, rt: Runtime, smtp: SmtpSink, gateway: FakeGateway, portal: FakePortal
) -> None:
    await world.feed(received(lookup_code_sealed=None))
    await world.feed(fee(), "routing")
    notes = await rows(rt)
    by = {(r["kind"], r["channel"]): r for r in notes}
    assert sorted(by) == [
        ("fee_requested", "email"),
        ("fee_requested", "portal"),
        ("fee_requested", "sms"),
        ("form01", "email"),
        ("form01", "portal"),
        ("form01", "sms"),
    ]  # the fee notice, after the receipt, reaches the applicant by the same three
    assert by[("form01", "sms")]["recipient"] == "0912345678"
    assert by[("form01", "portal")]["recipient"] == "cd-079190000001"
    sms = by[("form01", "sms")]["body_text"]
    assert sms.startswith(f"Hồ sơ {code()} đã được tiếp nhận") and "\n" not in sms
    assert "Hẹn trả kết quả: 09:00 ngày 27/11/2026" in sms
    assert "GIẤY TIẾP NHẬN HỒ SƠ" in by[("form01", "portal")]["body_text"]
    assert len({r["id"] for r in notes}) == 6

    assert await world.email.run_once() == 2
    assert await world.sms.run_once() == 2
    assert await world.portal.run_once() == 2
    after = {(r["kind"], r["channel"]): r for r in await rows(rt)}
    assert {k: r["status"] for k, r in after.items()} == {
        ("fee_requested", "email"): "sent",
        ("fee_requested", "portal"): "delivered",
        ("fee_requested", "sms"): "sent",
        ("form01", "email"): "sent",
        ("form01", "portal"): "delivered",
        ("form01", "sms"): "sent",
    }
    f01 = after[("form01", "sms")]
    assert gateway.requests[0] == {
        "to": "0912345678",
        "text": sms,
        "client_ref": str(f01["id"]),
        "callback_url": f"{PUBLIC_URL}/v1/sms/receipts",
    }
    assert f01["message_id"] == gateway.ids[str(f01["id"])]
    p01 = after[("form01", "portal")]
    call = portal.calls[0]
    assert call["service"] == "GuiThongBaoNguoiDan" and call["session"] == "phien-1"
    assert call["data"] == [
        {
            "MaThongBao": str(p01["id"]),
            "MaHoSo": code(),
            "MaDoiTuong": "cd-079190000001",
            "TieuDe": p01["subject"],
            "NoiDung": p01["body_text"],
        }
    ]
    assert p01["message_id"] == str(p01["id"]) and p01["answer"]["error_code"] == 0
    assert sorted(m["To"] for m in smtp.messages) == ["lan@example.vn"] * 2
    assert sorted(e["channel"] for e in await sent_events(rt)) == sorted(
        ["email", "sms", "portal"] * 2
    )


async def test_the_lookup_code_goes_by_email_only(
    world: World, rt: Runtime, smtp: SmtpSink
) -> None:
    """Form 01 prints the applicant's lookup code: in the email, not in the SMS nor on the
    portal, which are other systems."""
    from services.runtime import auth

    sealed = auth.seal(rt.settings.lookup_seal_public_key, "K7Q2-M9XD-4TPW", code())
    await world.feed(received(lookup_code_sealed=sealed))
    by = {r["channel"]: r for r in await rows(rt)}
    assert "K7Q2-M9XD-4TPW" in by["email"]["body_text"]
    assert "K7Q2-M9XD-4TPW" not in by["sms"]["body_text"] + by["sms"]["body_html"]
    assert "K7Q2-M9XD-4TPW" not in by["portal"]["body_text"] + by["portal"]["body_html"]
    assert LOOKUP_LINE not in by["portal"]["body_text"]


async def test_sms_sent_then_delivered_or_failed_by_signed_receipts(
    world: World, rt: Runtime, gateway: FakeGateway, http: httpx.AsyncClient
) -> None:
    await world.feed(received(1))
    await world.feed(received(2, PERSON.model_copy(update={"phone": "0987654321"})))
    await world.sms.run_once()
    first, second = await rows(rt, "sms")
    assert (first["status"], second["status"]) == ("sent", "sent")

    body = gateway.receipt(first["id"])
    r = await http.post("/v1/sms/receipts", content=body, headers=signed(body))
    assert (r.status_code, r.json()) == (202, {"status": "accepted", "outcome": "applied"})
    row = await one(rt, first["id"])
    assert row["status"] == "delivered"
    assert row["delivered_at"] == datetime(2026, 11, 20, 2, 5, tzinfo=UTC)
    r = await http.post("/v1/sms/receipts", content=body, headers=signed(body))
    assert (r.status_code, r.json()["outcome"]) == (202, "duplicate")

    body = gateway.receipt(second["id"], "failed", "Thuê bao không liên lạc được")
    r = await http.post("/v1/sms/receipts", content=body, headers=signed(body))
    assert r.status_code == 202
    row = await one(rt, second["id"])
    assert row["status"] == "failed"
    assert row["last_error"] == "the gateway reports: Thuê bao không liên lạc được"
    # a late contrary receipt does not undo the settled state
    late = gateway.receipt(second["id"], "delivered", at="2026-11-20T02:09:00Z")
    r = await http.post("/v1/sms/receipts", content=late, headers=signed(late))
    assert (r.status_code, r.json()["outcome"]) == (202, "ignored")

    views = (
        await http.get("/v1/notifications", params={"dossier": code(1)}, headers=OPERATOR)
    ).json()
    shown = {v["channel"]: v for v in views}
    assert shown["sms"]["status"] == "delivered" and shown["sms"]["message_id"] == "gw-1"
    assert shown["sms"]["recipient"] == "*******678"  # operators: masked
    assert shown["email"]["status"] == "queued"  # the email loop has not run
    assert await rt.pool.fetchval("SELECT count(*) FROM inbound_rejects") == 0


async def test_forged_and_malformed_receipts_are_refused_and_stored(
    world: World, rt: Runtime, gateway: FakeGateway, http: httpx.AsyncClient
) -> None:
    await world.feed(received())
    await world.sms.run_once()
    (sms,) = await rows(rt, "sms")
    good = gateway.receipt(sms["id"])
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (good, {"content-type": "application/json"}, 401, "header.X-Signature"),
        (good, {"x-signature": domain.sign("not-the-secret", good)}, 401, "header.X-Signature"),
        (good, {"x-signature": domain.sign(SECRET, good + b" ")}, 401, "header.X-Signature"),
        (b"{not json", signed(b"{not json"), 400, "body"),
        (b'{"id": "gw-1"}', signed(b'{"id": "gw-1"}'), 422, "client_ref"),
        (gateway.receipt(sms["id"], "lost"), {}, 422, "status"),
        (gateway.receipt(sms["id"], client_ref="khong-phai-ma"), {}, 422, "client_ref"),
        (gateway.receipt(sms["id"], client_ref=str(uuid.uuid4())), {}, 422, "client_ref"),
        (gateway.receipt(sms["id"], to="0900000000"), {}, 422, "to"),
        (gateway.receipt(sms["id"], id="gw-999"), {}, 422, "id"),
    ]
    for body, headers, status, where in cases:
        r = await http.post("/v1/sms/receipts", content=body, headers=headers or signed(body))
        assert r.status_code == status, (body, r.text)
        assert r.json()["errors"][0]["field"] == where, r.text
    r = await http.post("/v1/sms/receipts", content=b"x" * (300 * 1024), headers=signed(b"x"))
    assert r.status_code == 413  # the edge guard: never read, never stored
    assert (await one(rt, sms["id"]))["status"] == "sent"  # nothing moved it

    stored = await rt.pool.fetch("SELECT * FROM inbound_rejects ORDER BY id")
    assert [(s["source"], s["status"], s["field"]) for s in stored] == [
        ("sms-receipt", status, where) for _, _, status, where in cases
    ]
    assert bytes(stored[3]["body"]) == b"{not json" and not stored[3]["truncated"]
    assert stored[0]["headers"]["content-type"] == "application/json"
    assert stored[1]["reason"] == "does not match the body"

    huge = b'{"pad": "' + b"x" * 100_000 + b'"}'
    r = await http.post("/v1/sms/receipts", content=huge)
    assert r.status_code == 401
    kept = await rt.pool.fetchrow("SELECT * FROM inbound_rejects ORDER BY id DESC LIMIT 1")
    assert kept["truncated"] and len(kept["body"]) == 8 * 1024 and kept["size"] == len(huge)

    # operators see them, masked; nobody else does
    r = await http.get("/v1/ops/inbound-rejects", params={"limit": 50}, headers=OPERATOR)
    assert r.status_code == 200 and len(r.json()) == len(cases) + 1
    assert "0912345678" not in r.text and "*******678" in r.text
    r = await http.get("/v1/ops/inbound-rejects", headers=staff(DESK, "officer"))
    assert r.status_code == 403
    assert (await http.get("/v1/ops/inbound-rejects")).status_code == 401
    # and the pipeline goes on: a valid receipt after all that is applied
    r = await http.post("/v1/sms/receipts", content=good, headers=signed(good))
    assert (r.status_code, r.json()["outcome"]) == (202, "applied")


async def test_a_gateway_outage_while_email_keeps_flowing(
    world: World, rt: Runtime, smtp: SmtpSink, gateway: FakeGateway
) -> None:
    gateway.mode = "503"
    for i in range(1, 4):
        await world.feed(received(i, PERSON.model_copy(update={"portal_account": None})))
    tasks = [asyncio.create_task(loop.run()) for loop in (world.email, world.sms)]
    try:
        await eventually(
            lambda: rows(rt, "email"), lambda rs: all(r["status"] == "sent" for r in rs)
        )
        await eventually(
            lambda: rows(rt, "sms"),
            lambda rs: all(
                r["status"] == "pending" and "503" in (r["last_error"] or "") for r in rs
            ),
        )
        assert world.sms.outage_since is not None
        gateway.mode = "refuse"
        await eventually(
            lambda: rows(rt, "sms"),
            lambda rs: all("ConnectError" in (r["last_error"] or "") for r in rs),
        )
        assert all(r["attempts"] == 0 for r in await rows(rt, "sms"))  # not their fault
        assert len(smtp.messages) == 3  # email went on all along
        gateway.mode = "ok"
        await eventually(lambda: rows(rt, "sms"), lambda rs: all(r["status"] == "sent" for r in rs))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert world.sms.outage_since is None
    assert sorted(r["client_ref"] for r in gateway.requests) == sorted(
        str(r["id"]) for r in await rows(rt, "sms")
    )  # each handed over once, after the outage
    assert len(await sent_events(rt)) == 6


async def test_a_crash_between_send_and_mark_resends_with_the_same_client_ref(
    world: World, rt: Runtime, gateway: FakeGateway, http: httpx.AsyncClient
) -> None:
    await world.feed(received())
    first = world.sms
    claim, claimed = await first.claim()
    (n,) = claimed
    outcome = await first.attempt(n)
    assert (outcome.result, outcome.message_id) == (Result.SENT, "gw-1")
    # ...the process dies here: handed to the gateway, not marked. Its receipt comes first.
    body = gateway.receipt(n["id"])
    r = await http.post("/v1/sms/receipts", content=body, headers=signed(body))
    assert (r.status_code, r.json()["outcome"]) == (202, "waiting")
    second = world.sms_loop()
    assert await second.run_once() == 0  # the claim holds until its lease ends
    rt.clock.offset += FAST.lease + timedelta(seconds=1)  # type: ignore[attr-defined]
    assert await second.run_once() == 1
    assert [x["client_ref"] for x in gateway.requests] == [str(n["id"])] * 2
    assert gateway.ids == {str(n["id"]): "gw-1"}  # the gateway knew it: same id
    row = await one(rt, n["id"])
    assert (row["status"], row["message_id"], row["attempts"]) == ("delivered", "gw-1", 2)
    outcomes = await rt.pool.fetch("SELECT outcome FROM sms_receipts")
    assert [o["outcome"] for o in outcomes] == ["applied"]
    await first.record(claim, n, outcome)  # the dead sender's late mark is refused
    assert len([e for e in await sent_events(rt) if e["channel"] == "sms"]) == 1
    await second.sender.close()


async def test_the_per_recipient_limit_postpones_not_fails(
    rt: Runtime, smtp: SmtpSink, gateway: FakeGateway, portal: FakePortal
) -> None:
    w = World(rt, smtp, gateway, portal, channels=("sms",), per_hour=2)
    try:
        for i in range(1, 4):  # three dossiers of the same person
            await w.feed(received(i))
        assert await w.sms.run_once() == 3
        notes = await rows(rt, "sms")
        assert [r["status"] for r in notes] == ["sent", "sent", "pending"]
        waiting = notes[2]
        assert waiting["attempts"] == 0 and "recipient's limit" in waiting["last_error"]
        first_sent = min(r["sent_at"] for r in notes[:2])
        assert waiting["due_at"] >= first_sent + timedelta(hours=1) - timedelta(seconds=1)
        assert len(gateway.requests) == 2
        assert await w.sms.run_once() == 0  # not due yet
        rt.clock.offset += timedelta(hours=1, seconds=1)  # type: ignore[attr-defined]
        assert await w.sms.run_once() == 1
        assert (await one(rt, waiting["id"]))["status"] == "sent"
        # another recipient was never held back by this one
        other = PERSON.model_copy(update={"phone": "0987654321"})
        await w.feed(received(4, other))
        assert await w.sms.run_once() == 1
    finally:
        await w.close()


async def test_an_operator_resend_keeps_the_id(
    world: World, rt: Runtime, gateway: FakeGateway, http: httpx.AsyncClient
) -> None:
    gateway.refused.add("0912345678")
    await world.feed(received())
    await world.sms.run_once()
    (sms,) = await rows(rt, "sms")
    assert (
        sms["status"] == "failed" and "số điện thoại không nhận tin (field to)" in sms["last_error"]
    )
    assert sms["answer"] == {"error": "số điện thoại không nhận tin", "field": "to"}
    url = f"/v1/notifications/{sms['id']}/resend"
    reason = {"reason": "Người dân xác nhận đã mở lại thuê bao"}
    assert (await http.post(url, json={})).status_code == 401
    assert (await http.post(url, json=reason, headers=staff(DESK, "officer"))).status_code == 403
    r = await http.post(url, json={}, headers=OPERATOR)
    assert r.status_code == 422
    r = await http.post(url, json=reason, headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["status"], r.json()["resends"]) == (
        str(sms["id"]),
        "queued",
        1,
    )
    r = await http.post(url, json=reason, headers=OPERATOR)
    assert r.status_code == 409  # already in line: said in Vietnamese, field and reason
    assert errors(r) == [
        {
            "field": "nid",
            "reason": f"Thông báo {sms['id']} đang chờ gửi: đã ở trong hàng chờ gửi,"
            " không cần gửi lại",
        }
    ]
    missing = uuid.uuid4()
    r = await http.post(f"/v1/notifications/{missing}/resend", json=reason, headers=OPERATOR)
    assert r.status_code == 404
    assert errors(r) == [{"field": "nid", "reason": f"Không có thông báo {missing}"}]

    gateway.refused.clear()
    assert await world.sms.run_once() == 1
    row = await one(rt, sms["id"])
    assert (row["status"], row["message_id"], row["resends"]) == ("sent", "gw-1", 1)
    assert [x["client_ref"] for x in gateway.requests] == [str(sms["id"])] * 2

    # delivered, then disputed: back in line once more, the same id at the gateway
    body = gateway.receipt(sms["id"])
    await http.post("/v1/sms/receipts", content=body, headers=signed(body))
    assert (await one(rt, sms["id"]))["status"] == "delivered"
    r = await http.post(url, json={"reason": "Người dân nói chưa nhận được"}, headers=OPERATOR)
    assert r.status_code == 200
    assert await world.sms.run_once() == 1
    row = await one(rt, sms["id"])
    assert (row["status"], row["message_id"], row["resends"]) == ("sent", "gw-1", 2)
    log = await rt.pool.fetch("SELECT * FROM notification_resends ORDER BY id")
    assert [(x["previous_status"], x["role"], x["agency_id"]) for x in log] == [
        ("failed", "operator", OPS),
        ("delivered", "operator", OPS),
    ]
    assert log[0]["reason"] == reason["reason"] and log[0]["person"] == f"operator@{OPS}"
    assert "số điện thoại không nhận tin" in log[0]["previous_error"]


async def test_the_portal_message_path(
    world: World, rt: Runtime, portal: FakePortal, http: httpx.AsyncClient
) -> None:
    only_portal = PERSON.model_copy(update={"email": None, "phone": None})
    await world.feed(received(1, only_portal))
    await world.feed(received(2, only_portal))
    await world.feed(received(3, only_portal.model_copy(update={"portal_account": None})))
    # an online dossier without an account: nobody would read it on the portal
    await world.feed(
        received(4, only_portal.model_copy(update={"portal_account": None}), channel=Channel.ONLINE)
    )
    first, second, third, fourth = await rows(rt)
    assert [r["channel"] for r in (first, second, third, fourth)] == [
        "portal",
        "portal",
        "desk",
        "desk",
    ]

    portal.mode = "garbage"
    assert await world.portal.run_once() == 2
    assert len(portal.calls) == 1  # unreachable: the rest handed back untried
    stored = await rt.pool.fetch("SELECT * FROM inbound_rejects")
    assert [(s["source"], s["status"]) for s in stored] == [("portal", 200)]
    assert b"502 Bad Gateway" in bytes(stored[0]["body"])
    pending = await rows(rt, "portal")
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in pending)
    assert "not JSON" in pending[0]["last_error"]

    portal.mode = "code"
    rt.clock.offset += timedelta(seconds=1)  # type: ignore[attr-defined]
    await world.portal.run_once()
    failed = await rows(rt, "portal")
    assert {r["status"] for r in failed} == {"failed"}
    assert failed[0]["last_error"] == "the portal refused it: 3 Không tìm thấy tài khoản"
    assert failed[0]["answer"] == {
        "error_code": 3,
        "message": "Không tìm thấy tài khoản",
        "ref": "X1",
    }  # kept whole for inspection

    portal.mode = "ok"
    for r in failed:
        res = await http.post(
            f"/v1/notifications/{r['id']}/resend",
            json={"reason": "Tài khoản đã được cổng khôi phục"},
            headers=OPERATOR,
        )
        assert res.status_code == 200
    await world.portal.run_once()
    done = await rows(rt, "portal")
    assert [(r["status"], r["message_id"]) for r in done] == [
        ("delivered", str(r["id"])) for r in done
    ]
    assert all(c["data"][0]["MaDoiTuong"] for c in portal.calls)  # always an account
    assert {c["data"][0]["MaThongBao"] for c in portal.calls} == {str(r["id"]) for r in done}


async def test_an_answer_postgresql_cannot_store_never_stalls_the_loop(
    world: World, rt: Runtime, gateway: FakeGateway
) -> None:
    """A refusal whose text holds a NUL (PostgreSQL text and jsonb refuse one) is stored
    escaped: the mark commits and the next message goes."""

    def nul(body: dict[str, Any]) -> httpx.Response | None:
        if body["to"] != "0912345678":
            return None
        return httpx.Response(
            400,
            content=b'{"error": "sai\\u0000s\xe1\xbb\x91", "field": "to\\ud800"}',
            headers={"content-type": "application/json"},
        )

    gateway.answer = nul
    await world.feed(received(1))
    await world.feed(received(2, PERSON.model_copy(update={"phone": "0987654321"})))
    assert await world.sms.run_once() == 2
    first, second = await rows(rt, "sms")
    assert first["status"] == "failed" and "sai\\u0000số" in first["last_error"]
    assert first["answer"] == {"error": "sai\\u0000số", "field": "to\\ud800"}
    assert second["status"] == "sent"


async def test_the_asked_agency_is_told_of_its_opinion_request(world: World, rt: Runtime) -> None:
    request = ConsultationRequested(
        request_id=uuid.UUID(int=9),
        code=code(),
        lead_agency="000.00.06.H29",
        agency_id="000.02.30.H29",
        agency_name="Công an Thành phố Hồ Chí Minh",
        template_id="pccc",
        template_version=1,
        subject="Thẩm duyệt phòng cháy, chữa cháy",
        requested_at=AT,
        due_at=AT + timedelta(days=5),
    )
    raw = await world.feed(request, "consultation")
    await world.consume(raw)  # redelivered: one notice
    (row,) = await rows(rt)
    assert (row["kind"], row["channel"], row["recipient"]) == (
        "consultation_request",
        "agency",
        "000.02.30.H29",
    )
    assert "Kính gửi: Công an Thành phố Hồ Chí Minh" in row["body_text"]
    assert "Thẩm duyệt phòng cháy, chữa cháy" in row["body_text"]
    # how to answer, in words: no HTTP path, no service name (issue 23, item 7)
    assert "/v1/" not in row["body_text"] and "POST" not in row["body_text"]
    assert "trả lời trên Hệ thống bằng văn bản có chữ ký số" in row["body_text"]
    assert row["subject"].startswith(f"Đề nghị cho ý kiến hồ sơ {code()} - hạn")


async def test_the_applicant_reads_only_the_notices_addressed_to_them__issue_23_e(
    world: World, rt: Runtime, http: httpx.AsyncClient
) -> None:
    """With the lookup code the applicant lists their own notices (Form 01 by email, SMS and
    the portal), never the agencies' (here the opinion request to the police); the agencies
    of the dossier still read everything."""
    from services.runtime import auth

    sealed = auth.seal(rt.settings.lookup_seal_public_key, "K7Q2-M9XD-4TPW", code())
    await world.feed(received(lookup_code_sealed=sealed))
    request = ConsultationRequested(
        request_id=uuid.UUID(int=7),
        code=code(),
        lead_agency=DESK,
        agency_id="000.02.30.H29",
        agency_name="Công an Thành phố Hồ Chí Minh",
        template_id="pccc",
        template_version=1,
        subject="Thẩm duyệt phòng cháy, chữa cháy",
        requested_at=AT,
        due_at=AT + timedelta(days=5),
    )
    await world.feed(request, "consultation")
    lookup = {auth.LOOKUP_HEADER: "K7Q2-M9XD-4TPW"}
    r = await http.get("/v1/notifications", params={"dossier": code()}, headers=lookup)
    assert r.status_code == 200, r.text
    assert sorted((n["kind"], n["channel"]) for n in r.json()) == [
        ("form01", "email"),
        ("form01", "portal"),
        ("form01", "sms"),
    ]
    (agency,) = [x for x in await rows(rt) if x["channel"] == "agency"]
    for path in (f"/v1/notifications/{agency['id']}", f"/v1/notifications/{agency['id']}/html"):
        r = await http.get(path, headers=lookup)
        assert r.status_code == 404
        assert errors(r) == [{"field": "nid", "reason": f"Không có thông báo {agency['id']}"}]
    r = await http.get("/v1/notifications", params={"dossier": code()}, headers=staff(DESK))
    assert r.status_code == 200
    assert sorted(n["kind"] for n in r.json()) == ["consultation_request"] + ["form01"] * 3


async def test_a_stopped_dossier_tells_the_applicant_on_every_channel__circular_03_2025_form_05(
    world: World, rt: Runtime, smtp: SmtpSink, gateway: FakeGateway, portal: FakePortal
) -> None:
    """routing.route_closed (stopped): the stop notice (Mẫu số 05 of Annex I, Circular
    03/2025/TT-VPCP) by email, SMS and the portal, with the reason, once per channel
    however often the event comes; a company addressed by its name (issue 23, E and 5)."""
    company = Applicant(
        name="Công ty TNHH Xây dựng An Phú",
        object_type=ObjectType.ORGANISATION,
        id_number="0301234567",
        phone="0912345678",
        email="anphu@example.vn",
        portal_account="dn-0301234567",
    )
    await world.feed(
        received(
            applicant=company, procedure_name="Cấp giấy phép xây dựng", lookup_code_sealed=None
        )
    )
    reason = "Cơ quan có thẩm quyền phát hiện giấy tờ trong hồ sơ bị giả mạo"
    stop = RouteClosed(
        code=code(),
        state=DossierStatus.STOPPED,
        status=DossierStatus.STOPPED.portal,
        reason=reason,
        at_step=2,
        closed_at=AT + timedelta(days=1),
        agency_id=DESK,
        agency_name="Ủy ban nhân dân phường Sài Gòn",
        office=OFFICE,
        procedure_name="Cấp giấy phép xây dựng",
        received_at=AT,
    )
    raw = await world.feed(stop, "routing")
    await world.consume(raw)  # redelivered: still one notice per channel
    notes = {r["channel"]: r for r in await rows(rt) if r["kind"] == "stop_notice"}
    assert sorted(notes) == ["email", "portal", "sms"]
    email = notes["email"]["body_text"]
    assert "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ" in email
    assert "Kính gửi: Công ty TNHH Xây dựng An Phú" in email and "Ông/Bà" not in email
    assert f"Lý do: {reason}" in email
    assert notes["sms"]["body_text"] == (
        f"Hồ sơ {code()} đã dừng giải quyết từ 09:00 ngày 21/11/2026. Lý do: {reason}."
    )
    assert notes["portal"]["recipient"] == "dn-0301234567"
    assert notes["portal"]["subject"] == f"Thông báo dừng giải quyết hồ sơ - Mã hồ sơ {code()}"
    assert await world.email.run_once() == 2  # Form 01 and the stop notice
    assert await world.sms.run_once() == 2
    assert await world.portal.run_once() == 2
    after = {r["channel"]: r["status"] for r in await rows(rt) if r["kind"] == "stop_notice"}
    assert after == {"email": "sent", "sms": "sent", "portal": "delivered"}
