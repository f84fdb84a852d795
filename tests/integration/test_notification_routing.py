"""Notification's routing handlers on real PostgreSQL: Form 04 to the applicant by the
channel the dossier came in, the drafted apology to the agency at fault, the result notice
with Form 05 appended; each queued once (deterministic ids) for the sender loop, and an
event that overtakes the dossier's receipt parks until the receipt arrives.

Events go through ``EventConsumer.consume`` as the Kafka subscriber hands them over (inbox,
parking, handlers), without a broker: no record here reaches the dead letters, the only
path that would need a producer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from contracts.common import (
    Applicant,
    Channel,
    DocumentRef,
    Duration,
    Office,
    ReturnMethod,
    Timeliness,
)
from contracts.envelope import EventPayload, new_envelope
from contracts.events import (
    ApologyDrafted,
    ApologyIssued,
    DossierReceived,
    HandOver,
    Holder,
    ResultDecision,
    ResultReady,
)
from contracts.topics import topic_for
from deploy.local import SmtpSink
from services.notification import domain, handlers
from services.notification.app import SPEC
from services.notification.delivery import Deliveries, DeliveryPolicy, HandedOver, SmtpSender
from services.notification.handlers import Notifier
from services.runtime.clock import SystemClock
from services.runtime.consumer import EventConsumer, Raw
from services.runtime.db import create_pool, migrate
from services.runtime.forms import FormBook
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth

CODE = "000.01.50.H29-250702-0001"
AGENCY = "000.00.06.H29"
AT = datetime(2025, 7, 2, 2, 0, tzinfo=UTC)  # 09:00 on 2 July 2025 in Hồ Chí Minh City
OFFICE = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Ủy ban nhân dân phường Sài Gòn",
    desk="Trung tâm Phục vụ hành chính công phường Sài Gòn",
    place="Sài Gòn",
    phone="02838291234",
)
BUILDING = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Sở Xây dựng Thành phố Hồ Chí Minh",
    place="Thành phố Hồ Chí Minh",
)
APPLICANT = Applicant(
    name="Nguyễn Thị Lan",
    id_number="079190000001",
    phone="0912345678",
    email="lan@example.vn",
    address="12 Lê Lợi, phường Sài Gòn",
    birth_date=datetime(1990, 1, 2).date(),
)
FAST = DeliveryPolicy(
    batch_size=20,
    lease=timedelta(seconds=60),
    max_attempts=3,
    retry_base=timedelta(milliseconds=100),
    retry_max=timedelta(milliseconds=400),
    poll_interval=0.1,
)


@pytest.fixture
async def rt(database_url: str) -> AsyncIterator[Runtime]:
    settings = configure_auth(ServiceSettings.for_service("notification"))
    settings.database_url = database_url
    runtime = Runtime("notification", settings, SystemClock())
    runtime._pool = await create_pool(database_url, "notification", max_size=5)
    await migrate(runtime.pool, "notification", SPEC.migrations)
    yield runtime
    await runtime.pool.close()


@pytest.fixture
def consumer(rt: Runtime) -> EventConsumer:
    """Notification's consumer as ``create_app`` builds it: its handlers, its topics, and
    the receipt that parked routing notices wait for not queueing behind them."""
    return EventConsumer(
        service="notification",
        group_id="lienthong-notification",
        topics=SPEC.topics,
        handlers=handlers.build(Notifier(rt, FormBook.load())),
        unblocking=handlers.UNBLOCKING,
        parked_poll_s=0.1,
    )


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


class Feed:
    """Records as Kafka would hand them over, offsets counted per topic."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}

    def raw(self, payload: EventPayload, producer: str) -> Raw:
        topic = topic_for(payload.event_type).name
        offset = self.offsets[topic] = self.offsets.get(topic, -1) + 1
        env = new_envelope(payload, subject=CODE, producer=producer, occurred_at=AT)
        return Raw(
            topic=topic,
            partition=0,
            offset=offset,
            key=CODE.encode(),
            value=env.model_dump_json().encode(),
        )


def received(**changes: Any) -> DossierReceived:
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.009972",
        procedure_version=1,
        procedure_name="Cấp giấy phép xây dựng",
        channel=Channel.ONLINE,
        applicant=APPLICANT,
        documents=(DocumentRef(code="DDN", name="Đơn đề nghị cấp giấy phép xây dựng"),),
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        lead_agency=AGENCY,
        processing_time=Duration(value=20),
        received_at=AT,
        clock_starts_at=AT,
        appointment_at=AT + timedelta(days=28),
        office=OFFICE,
        received_by="Trần Văn Bình",
    )
    fields.update(changes)
    return DossierReceived(**fields)


def drafted() -> ApologyDrafted:
    return ApologyDrafted(
        apology_id=uuid.UUID(int=7),
        code=CODE,
        number=2,
        agency_id=AGENCY,
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        reason="Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
        previous_appointment_at=AT + timedelta(days=28),
        proposed_appointment_at=AT + timedelta(days=35),
        latest_issue_at=AT + timedelta(days=27),
        drafted_at=AT + timedelta(days=25),
    )


def issued(number: int = 2) -> ApologyIssued:
    return ApologyIssued(
        apology_id=uuid.UUID(int=7),
        code=CODE,
        number=number,
        repeat=number > 1,
        agency_id=AGENCY,
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        reason="Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
        previous_appointment_at=AT + timedelta(days=28),
        appointment_at=AT + timedelta(days=35),
        issued_at=AT + timedelta(days=26),
        issued_by=Holder(
            agency_id=AGENCY, agency_name="Sở Xây dựng Thành phố Hồ Chí Minh", person="Võ Thanh Hải"
        ),
        procedure_name="Cấp giấy phép xây dựng",
        received_at=AT,
        office=BUILDING,
    )


def result() -> ResultReady:
    desk = Holder(
        agency_id="000.01.50.H29", agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn"
    )
    building = Holder(agency_id=AGENCY, agency_name="Sở Xây dựng Thành phố Hồ Chí Minh")
    return ResultReady(
        code=CODE,
        procedure_code="1.009972",
        procedure_name="Cấp giấy phép xây dựng",
        decision=ResultDecision.APPROVED,
        documents=(DocumentRef(code="GPXD", name="Giấy phép xây dựng"),),
        ready_at=AT + timedelta(days=33),
        received_at=AT,
        appointment_at=AT + timedelta(days=35),
        legal_appointment_at=AT + timedelta(days=28),
        timeliness=Timeliness.LATE,
        apologies=2,
        return_method=ReturnMethod.AT_DESK,
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn",
        lead_agency=AGENCY,
        lead_agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        coordinating=("Công an Thành phố Hồ Chí Minh",),
        handovers=(
            HandOver(
                seq=1,
                giver=desk,
                receiver=building,
                at=AT + timedelta(minutes=10),
                step=2,
                step_action="Thẩm định hồ sơ",
                step_deadline_at=AT + timedelta(days=20),
            ),
            HandOver(
                seq=2,
                giver=building,
                receiver=desk,
                at=AT + timedelta(days=33),
                step=3,
                step_action="Trả kết quả",
                giver_step=2,
                giver_deadline_at=AT + timedelta(days=20),
                giver_timeliness=Timeliness.LATE,
            ),
        ),
    )


async def notifications(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(
        await pool.fetch("SELECT * FROM notifications WHERE dossier_code = $1 ORDER BY kind", CODE)
    )


async def consume(consumer: EventConsumer, rt: Runtime, raw: Raw) -> None:
    await consumer.consume(raw, rt.pool, None)  # type: ignore[arg-type]


async def test_apology_draft_form04_and_result_each_queued_once_for_the_sender(
    rt: Runtime, consumer: EventConsumer, smtp: SmtpSink
) -> None:
    feed = Feed()
    records = [
        feed.raw(received(), "intake"),
        feed.raw(drafted(), "routing"),
        feed.raw(issued(), "routing"),
        feed.raw(result(), "routing"),
    ]
    for raw in records:
        await consume(consumer, rt, raw)
    for raw in records[1:]:  # redelivered after a crash before the offset commit
        await consume(consumer, rt, raw)
    rows = {r["kind"]: r for r in await notifications(rt.pool)}
    assert sorted(rows) == ["apology_draft", "form01", "form04", "result_ready"]
    assert await rt.pool.fetchval("SELECT count(*) FROM notifications") == 4
    assert await rt.pool.fetchval("SELECT count(*) FROM parked") == 0

    draft = rows["apology_draft"]
    assert (draft["channel"], draft["recipient"]) == ("agency", AGENCY)
    assert draft["status"] == "pending" and draft["due_at"] is not None
    assert "POST" not in draft["body_text"] and "/v1/" not in draft["body_text"]
    assert "ký phiếu" in draft["body_text"] or "ký văn bản" in draft["body_text"]
    # drafted 2 July 2025, before Circular 03/2025/TT-VPCP's forms (15 September 2025)
    assert "Phiếu xin lỗi và hẹn lại ngày trả kết quả" in draft["body_text"]

    apology = rows["form04"]
    assert (apology["channel"], apology["recipient"]) == ("email", "lan@example.vn")
    # issued in July 2025: the 2018 form, Circular 03/2025's applies from 15 September 2025
    assert apology["form_version"] == 1 and apology["status"] == "pending"
    text = apology["body_text"].splitlines()
    assert "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ" in text
    assert "Kính gửi: Ông/Bà Nguyễn Thị Lan" in text
    assert (
        "Đây là lần thứ 2 Sở Xây dựng Thành phố Hồ Chí Minh xin lỗi và hẹn lại ngày trả kết quả"
        " đối với hồ sơ này." in text
    )
    assert apology["subject"].endswith("(lần thứ 2)")
    assert "Võ Thanh Hải" in text

    notice = rows["result_ready"]
    assert (notice["channel"], notice["recipient"]) == ("email", "lan@example.vn")
    body = notice["body_text"]
    assert "Hồ sơ được giải quyết: Quá hạn" in body
    assert "PHIẾU KIỂM SOÁT QUÁ TRÌNH GIẢI QUYẾT HỒ SƠ" in body
    assert "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG PHƯỜNG SÀI GÒN" in body  # the stored office
    assert "Nhận kết quả tại: Bộ phận tiếp nhận và trả kết quả, Trung tâm Phục vụ" in body
    assert '<article lang="vi" class="form form05">' in notice["body_html"]

    for kind, row in rows.items():
        env_id = row["caused_by"]
        assert row["id"] == domain.notification_id(env_id, kind, row["recipient"])

    # the email loop delivers the two emails of the routing events (and Form 01); the
    # agency's notice is handed over in the system by a loop of its own
    loop = Deliveries(
        rt, SmtpSender("127.0.0.1", smtp.port, "mot-cua@lienthong.local", timeout=5), FAST
    )
    assert await loop.run_once() == 3
    await loop.sender.close()
    assert await Deliveries(rt, HandedOver(), FAST).run_once() == 1
    statuses = {r["kind"]: r["status"] for r in await notifications(rt.pool)}
    assert set(statuses.values()) == {"sent"}
    subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert any(s.startswith("Phiếu xin lỗi và hẹn lại ngày trả kết quả") for s in subjects)
    assert any("đã có kết quả giải quyết - Quá hạn" in s for s in subjects)


async def test_a_routing_event_before_the_receipt_parks_then_follows_it(
    rt: Runtime, consumer: EventConsumer
) -> None:
    """Routing's events travel on their own topic: the Form 04 can be read before the
    dossier's receipt. It parks; the receipt is applied (it does not queue behind what
    waits for it) and the parked Form 04 and result follow in order."""
    feed = Feed()
    apology, ready, receipt = (
        feed.raw(issued(number=1), "routing"),
        feed.raw(result(), "routing"),
        feed.raw(
            received(channel=Channel.POST, applicant=APPLICANT.model_copy(update={"email": None})),
            "intake",
        ),
    )
    await consume(consumer, rt, apology)
    await consume(consumer, rt, ready)
    parked = await rt.pool.fetch("SELECT event_type, reason FROM parked ORDER BY id")
    assert [p["event_type"] for p in parked] == ["routing.apology_issued", "routing.result_ready"]
    assert (
        "the receipt of" in parked[0]["reason"] and parked[1]["reason"] == "behind a parked event"
    )
    assert await notifications(rt.pool) == []

    await consume(consumer, rt, receipt)
    assert [r["kind"] for r in await notifications(rt.pool)] == ["form01"]
    assert await rt.pool.fetchval(
        "SELECT bool_and(next_attempt_at <= now()) FROM parked"
    )  # due at once, not after a backoff

    assert await consumer.retry_parked(rt.pool, None) == 2  # type: ignore[arg-type]
    assert await rt.pool.fetchval("SELECT count(*) FROM parked") == 0
    rows = {r["kind"]: r for r in await notifications(rt.pool)}
    assert sorted(rows) == ["form01", "form04", "result_ready"]
    # by the channel the dossier came in: by post, to the applicant's address
    for kind in ("form04", "result_ready"):
        assert (rows[kind]["channel"], rows[kind]["recipient"]) == (
            "post",
            "12 Lê Lợi, phường Sài Gòn",
        )
    assert "lần thứ" not in rows["form04"]["body_text"]  # a first apology is not flagged
    assert "Theo Giấy tiếp nhận và hẹn trả kết quả, thời hạn" in rows["form04"]["body_text"]


async def test_what_notification_keeps_of_the_receipt_is_what_a_notice_needs(
    rt: Runtime, consumer: EventConsumer
) -> None:
    await consume(consumer, rt, Feed().raw(received(), "intake"))
    row = await rt.pool.fetchrow("SELECT * FROM dossier_receipts WHERE dossier_code = $1", CODE)
    assert row["applicant"] == {
        "name": "Nguyễn Thị Lan",
        "email": "lan@example.vn",
        "address": "12 Lê Lợi, phường Sài Gòn",
        "phone": "0912345678",  # later notices go by SMS too
    }  # no ID number or birth date
    assert (
        row["channel"] == int(Channel.ONLINE) and row["procedure_name"] == "Cấp giấy phép xây dựng"
    )
    assert row["received_at"] == AT and row["office"]["desk"] == OFFICE.desk
    with pytest.raises(asyncpg.CheckViolationError):
        await rt.pool.execute(
            "INSERT INTO dossier_receipts VALUES ('x', '{}'::jsonb, 1, 'p', now(), NULL)"
        )
