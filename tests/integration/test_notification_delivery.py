"""Email delivery outside database transactions, on real PostgreSQL and a real SMTP
server (aiosmtpd): bad addresses fail alone, the session is reset after a refusal, a
server outage delays but loses nothing, and a crash between send and mark re-sends with
the same Message-ID."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from contracts.envelope import Envelope, new_envelope
from contracts.events import DossierWithdrawn
from deploy.local import SmtpSink
from services.notification import api
from services.notification.app import SPEC
from services.notification.delivery import Deliveries, DeliveryPolicy, Result, SmtpSender
from services.notification.domain import Recipient
from services.notification.handlers import Notifier
from services.runtime.clock import ManualClock
from services.runtime.db import create_pool, migrate
from services.runtime.forms import FormBook
from services.runtime.ops import install_edge_guards
from services.runtime.outbox import Waker
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, eventually, staff

CODE = "000.00.01.H29-261120-0001"
FAST = DeliveryPolicy(
    batch_size=20,
    lease=timedelta(seconds=60),
    max_attempts=3,
    retry_base=timedelta(milliseconds=100),
    retry_max=timedelta(milliseconds=400),
    poll_interval=0.1,
)


class _Clock(ManualClock):
    """Wall time plus an offset the test moves (leases end without waiting)."""

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def rt(database_url: str) -> AsyncIterator[Runtime]:
    settings = configure_auth(ServiceSettings.for_service("notification"))
    settings.database_url = database_url
    runtime = Runtime("notification", settings, _Clock())
    runtime._pool = await create_pool(database_url, "notification", max_size=5)
    await migrate(runtime.pool, "notification", SPEC.migrations)
    yield runtime
    await runtime.pool.close()


def _sender(smtp: SmtpSink) -> SmtpSender:
    return SmtpSender("127.0.0.1", smtp.port, "mot-cua@lienthong.local", timeout=5)


async def _queue(rt: Runtime, addresses: list[str]) -> list[uuid.UUID]:
    """One notification per address, queued as the event handlers queue them."""
    notifier = Notifier(rt, FormBook.load())
    ids = []
    async with rt.pool.acquire() as conn, conn.transaction():
        for i, address in enumerate(addresses):
            env: Envelope = new_envelope(
                DossierWithdrawn(code=CODE, withdrawn_at=rt.clock.now()),
                subject=CODE,
                producer="test",
                occurred_at=rt.clock.now(),
            )
            await notifier.notify(
                conn,
                env,
                "consultation_reminder",
                Recipient("email", address),
                {"code": CODE, "agency_name": f"Sở {i}", "due_local": "17:00 ngày 30/11/2026"},
            )
            ids.append(
                await conn.fetchval(
                    "SELECT id FROM notifications WHERE caused_by = $1", env.event_id
                )
            )
    return ids


async def _rows(rt: Runtime, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    rows = await rt.pool.fetch("SELECT * FROM notifications WHERE id = ANY($1)", ids)
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in ids]


async def _sent_events(rt: Runtime) -> list[str]:
    return [
        r["payload"]
        for r in await rt.pool.fetch(
            "SELECT payload FROM outbox WHERE event_type = 'notification.sent' ORDER BY id"
        )
    ]


async def test_a_bad_address_between_two_good_ones(rt: Runtime, smtp: SmtpSink) -> None:
    """Invalid at creation: failed with the reason, never on the wire. Refused by the
    server: failed with the server's answer, the session reset, the next one sent."""
    smtp.refuse.add("khong-ton-tai@example.vn")
    ids = await _queue(
        rt,
        [
            "an@example.vn",
            "binh\r\nRCPT TO:<x@example.vn>@example.vn",
            "chi@example.vn",
            "khong-ton-tai@example.vn",
            "dung@example.vn",
            "nul\x00@example.vn",
        ],
    )
    before = await _rows(rt, ids)
    assert [r["status"] for r in before] == [
        "pending",
        "failed",
        "pending",
        "pending",
        "pending",
        "failed",
    ]
    assert "invalid address" in before[1]["last_error"] and before[1]["attempts"] == 0
    assert before[5]["recipient"] == "nul\\u0000@example.vn"  # kept readable, not raw
    loop = Deliveries(rt, _sender(smtp), FAST)
    assert await loop.run_once() == 4  # the two invalid ones are never claimed
    after = await _rows(rt, ids)
    assert [r["status"] for r in after] == ["sent", "failed", "sent", "failed", "sent", "failed"]
    assert after[3]["last_error"].startswith("550") and after[3]["attempts"] == 1
    assert all(after[i]["attempts"] == 1 for i in (0, 2, 4))
    assert smtp.resets >= 1  # the session was reset after the refusal
    got = sorted(str(m["To"]) for m in smtp.messages)
    assert got == ["an@example.vn", "chi@example.vn", "dung@example.vn"]
    assert len(await _sent_events(rt)) == 3
    await loop.sender.close()


async def test_one_connection_carries_every_batch_until_idle(rt: Runtime, smtp: SmtpSink) -> None:
    """Messages of a batch and of the next batches share one SMTP connection; one idle
    too long is closed and the next send connects again; a connection the server dropped
    is replaced and the message still goes once."""
    sender = _sender(smtp)
    loop = Deliveries(rt, sender, FAST)
    await _queue(rt, [f"nguoi{i}@example.vn" for i in range(5)])
    assert await loop.run_once() == 5
    await _queue(rt, [f"khac{i}@example.vn" for i in range(3)])
    assert await loop.run_once() == 3
    assert len(smtp.messages) == 8
    assert sender.connections == 1
    sender.idle_s = 0.0  # every kept connection is now idle too long
    await _queue(rt, ["sau-nghi@example.vn"])
    assert await loop.run_once() == 1
    assert sender.connections == 2
    sender.idle_s = 60.0
    smtp.stop()  # the server goes away and comes back: the kept connection is dead
    smtp.start()
    await _queue(rt, ["sau-khoi-dong@example.vn"])
    assert await loop.run_once() == 1
    assert sender.connections == 3
    got = [str(m["To"]) for m in smtp.messages]
    assert got.count("sau-khoi-dong@example.vn") == 1 and len(got) == 10
    assert len(await _sent_events(rt)) == 10
    await sender.close()


async def test_smtp_down_then_up_delivers_everything_once(rt: Runtime, smtp: SmtpSink) -> None:
    smtp.stop()
    addresses = [f"nguoi{i}@example.vn" for i in range(6)]
    ids = await _queue(rt, addresses)
    loop = Deliveries(rt, _sender(smtp), FAST)
    waker = Waker(rt.settings.database_url, "notification_deliveries")
    await waker.start()
    task = asyncio.create_task(loop.run(waker))
    try:
        # Every notification was tried and put back; none failed for the outage.
        await eventually(
            lambda: _rows(rt, ids),
            lambda rs: all(r["status"] == "pending" and r["last_error"] for r in rs),
        )
        rows = await _rows(rt, ids)
        # an outage is not the message's fault
        assert all(r["attempts"] == 0 for r in rows), [dict(r) for r in rows]
        assert "Connect" in rows[0]["last_error"] or "refused" in rows[0]["last_error"]
        smtp.start()  # the same port again
        await eventually(lambda: _rows(rt, ids), lambda rs: all(r["status"] == "sent" for r in rs))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ids_on_wire = [m["Message-ID"] for m in smtp.messages]
    assert sorted(ids_on_wire) == sorted(f"<{i}@lienthong.local>" for i in ids)
    assert [r["message_id"] for r in await _rows(rt, ids)] == [
        f"<{i}@lienthong.local>" for i in ids
    ]
    assert len(await _sent_events(rt)) == 6


async def test_a_crash_between_send_and_mark_resends_with_the_same_message_id(
    rt: Runtime, smtp: SmtpSink
) -> None:
    ids = await _queue(rt, ["an@example.vn", "binh@example.vn"])
    first = Deliveries(rt, _sender(smtp), FAST)
    claim, rows = await first.claim()
    assert [r["id"] for r in rows] == ids
    outcome = await first.attempt(rows[0])
    assert outcome.result is Result.SENT
    # ...the process dies here: sent, not marked. The claim holds until its lease ends.
    await first.sender.close()
    second = Deliveries(rt, _sender(smtp), FAST)
    assert await second.run_once() == 0
    assert len(smtp.messages) == 1
    rt.clock.offset += FAST.lease + timedelta(seconds=1)  # type: ignore[attr-defined]
    assert await second.run_once() == 2
    rows_after = await _rows(rt, ids)
    assert [r["status"] for r in rows_after] == ["sent", "sent"]
    assert [r["attempts"] for r in rows_after] == [2, 2]
    by_id = [m["Message-ID"] for m in smtp.messages]
    assert by_id == [f"<{ids[0]}@lienthong.local>"] * 2 + [f"<{ids[1]}@lienthong.local>"]
    # The dead sender's late mark is refused: one notification.sent per notification.
    await first.record(claim, rows[0], outcome)
    assert len(await _sent_events(rt)) == 2
    await second.sender.close()


async def test_a_transient_refusal_is_retried_then_given_up(rt: Runtime, smtp: SmtpSink) -> None:
    """A 4xx answer counts an attempt; after ``max_attempts`` the reason is kept."""
    (nid,) = await _queue(rt, ["ban@example.vn"])
    smtp.refuse.add("ban@example.vn")
    loop = Deliveries(rt, _sender(smtp), FAST)
    await loop.run_once()
    (row,) = await _rows(rt, [nid])
    assert (row["status"], row["attempts"]) == ("failed", 1)  # 550 is permanent at once
    assert row["failed_at"] is not None and "550" in row["last_error"]
    await loop.sender.close()


async def test_the_api_shows_why_and_never_sends_a_nul_to_postgresql(rt: Runtime) -> None:
    (nid,) = await _queue(rt, ["sai dia chi@example.vn"])
    app = FastAPI()
    install_edge_guards(app, rt.settings.max_body_bytes)
    app.include_router(api.build_router(rt))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://n",
        headers=staff("000.00.00.H29", "operator"),
    ) as client:
        (view,) = (await client.get("/v1/notifications", params={"dossier": CODE})).json()
        assert view["id"] == str(nid) and view["status"] == "failed"
        assert view["last_error"].startswith("invalid address") and view["attempts"] == 0
        for bad in (f"{CODE}\x00", "\x00", CODE.replace("-", "\x00")):
            r = await client.get("/v1/notifications", params={"dossier": bad})
            assert r.status_code == 422, r.text  # refused at the edge, never looked up
            assert r.json()["errors"][0]["field"] == "query.dossier"
