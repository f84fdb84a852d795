"""The portal sync's sender on the real PostgreSQL, against a small in-process portal that
answers as the portal does (``httpx.MockTransport``): updates of a dossier in order,
batched across dossiers, a create of a known dossier turned into an update, a refused
record set aside while the others go on, an outage that costs no attempt and drains at
once when the portal answers again, and reconciliation re-sending what differs."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from contracts.envelope import Envelope
from deploy.simulators import Simulator
from services.intake import portal, store
from services.intake.app import SPEC
from services.intake.domain import Catalogue
from services.intake.portal_sync import PortalSync, SyncPolicy
from services.runtime.calendar import VN_TZ
from services.runtime.clock import FileOffsetClock, ManualClock
from services.runtime.portal_client import PortalClient, PortalConfig
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, staff

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=VN_TZ)
DESK = "000.01.50.H29"
BODY = {
    "procedure_code": "1.009973",
    "channel": 1,
    "applicant": {"name": "Phạm Thị Hoa", "id_number": "001190067890"},
    "property_commune": "SAI_GON",
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}


class FakePortal:
    """The portal as far as the sender needs it: sessions, all-or-nothing batches, codes 3
    (exists), -4 (unknown), -1 (a refused field), and being away."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.progress: dict[str, list[dict[str, Any]]] = {}
        self.down = False
        self.garbage = False  # answers a proxy's error page instead of the portal's JSON
        self.refuse: str | None = None  # a MaHoSo whose record is refused
        self.progress_error: int | None = None  # an answer to progress lines we cannot read

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        if self.garbage and request.url.path != "/api/auth":
            return httpx.Response(200, text="<html><h1>502 Bad Gateway\x00</h1></html>")
        if request.url.path == "/api/auth":
            return httpx.Response(200, json={"error_code": 0, "message": "ok", "session": "s1"})
        self.calls.append(body)
        service, data = body["service"], body.get("data", [])
        if service == "DongBoHoSoMC":
            for rec in data:
                code = rec["MaHoSo"]
                if code == self.refuse:
                    return self.answer(-1, f"MaHoSo {code}: NgayHenTra: không hợp lệ", code)
                if body["isUpdating"] == "False" and code in self.records:
                    return self.answer(3, f"MaHoSo {code}: hồ sơ đã tồn tại", code)
                if body["isUpdating"] == "True" and code not in self.records:
                    return self.answer(-4, f"MaHoSo {code}: hồ sơ chưa tồn tại", code)
            for rec in data:
                self.records[rec["MaHoSo"]] = rec
        elif service == "CapNhatTienDoHoSoMC":
            if self.progress_error is not None:
                return self.answer(self.progress_error, "Hệ thống đang bận")
            for step in data:  # as the portal (and our simulator): only a held dossier
                if step["MaHoSo"] not in self.records:
                    code = step["MaHoSo"]
                    return self.answer(-4, f"MaHoSo {code}: hồ sơ chưa tồn tại", code)
            for step in data:
                self.progress.setdefault(step["MaHoSo"], []).append(step)
        elif service == "TraCuuHoSo":
            held = self.records.get(body["mahoso"])
            return httpx.Response(200, json={"error_code": 0, "result": [held] if held else []})
        return self.answer(0, "Đồng bộ thành công")

    @staticmethod
    def answer(code: int, message: str, ma: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"error_code": code, "message": message}
        if ma:
            body["MaHoSo"] = ma
        return httpx.Response(200, json=body)


@pytest.fixture
async def world(
    kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, PortalSync, FakePortal, ManualClock]]:
    settings = ServiceSettings.for_service("intake")
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    configure_auth(settings)
    clock = ManualClock(NOW)
    app = create_app(SPEC, settings, clock)
    fake = FakePortal()
    client = PortalClient(
        PortalConfig(base_url="http://portal", username="u", password="p", unit_code="H29"),
        httpx.AsyncClient(base_url="http://portal", transport=httpx.MockTransport(fake.handle)),
    )
    async with app.router.lifespan_context(app):
        rt = app.state.runtime
        sync = PortalSync(
            pool=lambda: rt.pool,
            clock=clock,
            catalogue=Catalogue.load(),
            client=client,
            policy=SyncPolicy(batch_size=10),
            rng=lambda: 0.5,
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http, sync, fake, clock


def env(code: str) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        type="dossier.received",
        schema_version=1,
        occurred_at=NOW,
        subject=code,
        correlation_id=uuid.uuid4(),
        producer="test",
        data={},
    )


async def submit(http: httpx.AsyncClient) -> str:
    r = await http.post("/v1/dossiers", json=BODY, headers=staff(DESK, now=NOW))
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


async def queue(http: httpx.AsyncClient, sync: PortalSync, code: str, status: int) -> None:
    """A status change of the dossier, queued as the consumer would queue it."""
    rt = http.app.state.runtime  # type: ignore[attr-defined]
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE dossiers SET status = $2 WHERE code = $1", code, status)
        await sync.record(conn, code, env(code))


async def drain(sync: PortalSync, rounds: int = 50) -> None:
    """Every round that finds something due, up to ``rounds`` (an update tried again at
    once, forever, would otherwise never let a test end)."""
    for _ in range(rounds):
        if not await sync.run_once():
            return


def line(code: str, n: int) -> dict[str, str]:
    return portal.progress_step(
        code,
        who="Lê Văn Hải",
        title="Chuyên viên",
        department="Phòng Quản lý đô thị",
        what=f"Bước {n}",
        at=NOW,
        status=4,
        started_at=None,
        deadline_at=None,
    )


async def progress(http: httpx.AsyncClient, sync: PortalSync, code: str, n: int) -> None:
    rt = http.app.state.runtime  # type: ignore[attr-defined]
    async with rt.pool.acquire() as conn, conn.transaction():
        await sync.progress(conn, code, line(code, n), env(code))


async def test_updates_arrive_in_order_batched_across_dossiers(world: Any) -> None:
    http, sync, fake, _ = world
    codes = [await submit(http) for _ in range(3)]
    for status in (2, 4, 9, 10):
        for code in codes:
            await queue(http, sync, code, status)
    await drain(sync)
    records = [c for c in fake.calls if c["service"] == "DongBoHoSoMC"]
    assert len(records) == 4  # one call per round, the three dossiers together
    assert [c["isUpdating"] for c in records] == ["False", "True", "True", "True"]
    for code in codes:
        seen = [r["TrangThaiHoSo"] for c in records for r in c["data"] if r["MaHoSo"] == code]
        assert seen == ["2", "4", "9", "10"]
        assert fake.records[code]["TrangThaiHoSo"] == "10"
    rt = http.app.state.runtime
    view = (
        await http.get(f"/v1/dossiers/{codes[0]}/portal-sync", headers=staff(DESK, now=NOW))
    ).json()
    assert view["pending"] == 0 and view["sent"] == 4 and view["portal_known"]
    assert not await rt.pool.fetchval("SELECT count(*) FROM portal_sync WHERE status <> 'sent'")


async def test_a_dossier_the_portal_already_holds_is_updated_instead(world: Any) -> None:
    http, sync, fake, _ = world
    code = await submit(http)
    fake.records[code] = {"MaHoSo": code}  # came in from the portal: it holds it already
    await queue(http, sync, code, 2)
    await drain(sync)
    assert [c["isUpdating"] for c in fake.calls] == ["False", "True"]
    assert fake.records[code]["TrangThaiHoSo"] == "2"


async def test_a_refused_record_is_set_aside_and_the_others_go_on(world: Any) -> None:
    http, sync, fake, _ = world
    bad, good = await submit(http), await submit(http)
    fake.refuse = bad
    await queue(http, sync, bad, 2)
    await queue(http, sync, good, 2)
    await queue(http, sync, bad, 4)
    await drain(sync)
    assert fake.records[good]["TrangThaiHoSo"] == "2"
    rt = http.app.state.runtime
    failed = await store.failed_sync(rt.pool, 10)
    assert [r["dossier_code"] for r in failed] == [bad, bad]  # both of its records refused
    assert "NgayHenTra" in failed[0]["last_error"]
    view = (await http.get(f"/v1/dossiers/{bad}/portal-sync", headers=staff(DESK, now=NOW))).json()
    assert view["status"] == "failing" and "NgayHenTra" in view["last_error"]
    fake.refuse = None  # fixed: an operator puts them back
    for r in reversed(failed):
        assert await store.retry_failed_sync(rt.pool, r["id"], NOW)
    await drain(sync)
    assert fake.records[bad]["TrangThaiHoSo"] == "4"


async def test_an_outage_costs_no_attempt_and_drains_when_the_portal_answers(world: Any) -> None:
    http, sync, fake, clock = world
    codes = [await submit(http) for _ in range(12)]
    fake.down = True
    for code in codes:
        await queue(http, sync, code, 2)
        await queue(http, sync, code, 4)
    for _ in range(5):
        await sync.run_once()
        clock.advance(sync.policy.retry_max)  # every backoff passes
    assert sync.streak == 5 and not fake.records
    rt = http.app.state.runtime
    assert not await rt.pool.fetchval("SELECT max(attempts) FROM portal_sync")
    fake.down = False
    clock.advance(sync.policy.retry_max)
    await drain(sync)
    assert {c: fake.records[c]["TrangThaiHoSo"] for c in codes} == dict.fromkeys(codes, "4")
    assert sync.streak == 0 and sync.stats.outages


async def test_reconciliation_resends_what_the_portal_lost(world: Any) -> None:
    http, sync, fake, _ = world
    kept, lost = await submit(http), await submit(http)
    for code in (kept, lost):
        await queue(http, sync, code, 2)
    await drain(sync)
    del fake.records[lost]
    report = await sync.reconcile()
    assert report == {"checked": 2, "missing": 1, "different": 0}
    await drain(sync)
    assert fake.records[lost]["TrangThaiHoSo"] == "2"
    assert [c["isUpdating"] for c in fake.calls if c["service"] == "DongBoHoSoMC"][-1] == "False"


async def test_an_answer_we_cannot_read_is_kept_and_the_update_waits(world: Any) -> None:
    http, sync, fake, clock = world
    code = await submit(http)
    await queue(http, sync, code, 2)
    fake.garbage = True
    await sync.run_once()
    rt = http.app.state.runtime
    row = await rt.pool.fetchrow("SELECT * FROM portal_sync WHERE dossier_code = $1", code)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert "502 Bad Gateway" in row["answer"]["body"] and row["answer"]["status_code"] == 200
    assert "not JSON" in row["last_error"]
    fake.garbage = False
    clock.advance(sync.policy.probe_max)
    await drain(sync)
    assert fake.records[code]["TrangThaiHoSo"] == "2"


# --- issue 23, G: the record before its progress lines; refusals with backoff -----------------


async def test_progress_lines_wait_for_the_record_a_refused_create_set_aside(world: Any) -> None:
    """The create is refused (-1) and set aside: the progress lines are not sent (the portal
    cannot place them) and do not block the next record, which creates the dossier; then
    every line goes, in order."""
    http, sync, fake, _ = world
    code = await submit(http)
    fake.refuse = code
    await queue(http, sync, code, 2)
    for n in (1, 2, 3):
        await progress(http, sync, code, n)
    await drain(sync)
    assert code not in fake.records
    assert not [c for c in fake.calls if c["service"] == "CapNhatTienDoHoSoMC"]
    fake.refuse = None  # fixed: the next change of the dossier creates it
    await queue(http, sync, code, 4)
    await drain(sync)
    assert fake.records[code]["TrangThaiHoSo"] == "4"
    assert [s["NoiDungXuLy"] for s in fake.progress[code]] == ["Bước 1", "Bước 2", "Bước 3"]
    services = [c["service"] for c in fake.calls if c["service"] != "TraCuuHoSo"]
    assert services == ["DongBoHoSoMC", "DongBoHoSoMC"] + ["CapNhatTienDoHoSoMC"] * 3


async def test_a_line_the_portal_cannot_place_brings_the_record_first_then_waits(
    world: Any,
) -> None:
    """The portal lost the dossier (-4 to a progress line): the line is tried again after a
    backoff, counted, and the whole record goes before it."""
    http, sync, fake, clock = world
    code = await submit(http)
    await queue(http, sync, code, 4)
    await drain(sync)
    del fake.records[code]
    await progress(http, sync, code, 1)
    await sync.run_once()  # the line: -4
    rt = http.app.state.runtime
    row = await rt.pool.fetchrow(
        "SELECT * FROM portal_sync WHERE dossier_code = $1 AND kind = 'progress'", code
    )
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["due_at"] > clock.now()  # not at once
    await drain(sync)  # the record, queued ahead of the line, creates the dossier
    assert fake.records[code]["TrangThaiHoSo"] == "4" and code not in fake.progress
    clock.advance(sync.policy.backoff(1, lambda: 0.5))
    await drain(sync)
    assert [s["NoiDungXuLy"] for s in fake.progress[code]] == ["Bước 1"]
    calls = [(c["service"], c.get("isUpdating")) for c in fake.calls]
    assert calls[-3:] == [
        ("CapNhatTienDoHoSoMC", None),
        ("DongBoHoSoMC", "False"),
        ("CapNhatTienDoHoSoMC", None),
    ]


async def test_a_refused_line_backs_off_is_counted_and_set_aside_with_its_reason(
    world: Any,
) -> None:
    http, sync, fake, clock = world
    code = await submit(http)
    await queue(http, sync, code, 4)
    await drain(sync)
    fake.progress_error = 99
    await progress(http, sync, code, 1)
    tries = 0
    for n in range(1, sync.policy.max_attempts + 1):
        assert await sync.run_once() == 1
        tries += 1
        assert not await sync.run_once()  # nothing due before its backoff
        clock.advance(sync.policy.backoff(n, lambda: 1.0))
    assert tries == sync.policy.max_attempts
    rt = http.app.state.runtime
    (failed,) = await store.failed_sync(rt.pool, 10)
    assert failed["kind"] == "progress" and failed["attempts"] == sync.policy.max_attempts
    assert f"từ chối {sync.policy.max_attempts} lần" in failed["last_error"]
    view = (await http.get(f"/v1/dossiers/{code}/portal-sync", headers=staff(DESK, now=NOW))).json()
    assert "99" in view["last_error"]


async def test_reconciliation_rescues_a_dossier_whose_record_is_missing(world: Any) -> None:
    http, sync, fake, _ = world
    code = await submit(http)
    fake.refuse = code
    await queue(http, sync, code, 4)
    await progress(http, sync, code, 1)
    await drain(sync)
    assert code not in fake.records
    fake.refuse = None
    report = await sync.reconcile()
    assert report == {"checked": 1, "missing": 1, "different": 0}
    await drain(sync)
    assert fake.records[code]["TrangThaiHoSo"] == "4"
    assert [s["NoiDungXuLy"] for s in fake.progress[code]] == ["Bước 1"]


async def test_reconciliation_compares_only_what_the_portal_answers(world: Any) -> None:
    http, sync, fake, _ = world
    code = await submit(http)
    await queue(http, sync, code, 2)
    await drain(sync)
    held = fake.records[code]
    fake.records[code] = {k: held[k] for k in ("MaHoSo", "TrangThaiHoSo", "NgayTiepNhan")}
    assert await sync.reconcile() == {"checked": 1, "missing": 0, "different": 0}


async def test_a_create_refused_then_fixed_reaches_the_simulator_with_all_its_lines(
    world: Any, tmp_path: Any
) -> None:
    """Issue 23's scenario over HTTP, against the portal simulator (deploy/simulators): the
    create is refused (-1) and set aside; the progress lines wait; the portal then answers
    what we cannot read, and each try comes after a backoff on the shared clock, counted;
    once fixed, the record and then every progress line reach the portal, in order, with
    no line ever refused as unknown (-4)."""
    http, _, _, _ = world
    rt = http.app.state.runtime
    shared = FileOffsetClock(tmp_path / "clock-offset")
    sim = Simulator(
        "portal",
        env={"PORTAL_SIM_USERS": "lienthong:pw"},
        clock_file=shared.path,
        log=tmp_path / "portal.log",
    ).start()
    client = PortalClient(PortalConfig(sim.service_url, "lienthong", "pw", "000.00.00.H29"))
    sync = PortalSync(
        pool=lambda: rt.pool,
        clock=shared,
        catalogue=Catalogue.load(),
        client=client,
        policy=SyncPolicy(batch_size=10),
        rng=lambda: 0.5,
    )
    try:
        code = await submit(http)
        sim.fault("reject", field="TrichYeuHoSo")
        await queue(http, sync, code, 2)
        for n in (1, 2, 3):
            await progress(http, sync, code, n)
        await drain(sync)
        (failed,) = await store.failed_sync(rt.pool, 10)
        assert failed["kind"] == "record" and "TrichYeuHoSo" in failed["last_error"]
        assert sim.admin("GET", f"/progress/{code}") == []
        # fixed on our side; the operator puts it back, and the portal is busy for a while
        sim.fault("error", status=400)
        assert await store.retry_failed_sync(rt.pool, failed["id"], shared.now())
        for n in (1, 2, 3):
            assert await sync.run_once() == 1
            assert not await sync.run_once()  # nothing before the backoff has passed
            shared.advance(sync.policy.backoff(n, lambda: 0.5))
        sim.fault("ok")
        await drain(sync)
        shared.advance(sync.policy.backoff(4, lambda: 0.5))
        await drain(sync)
        assert sim.admin("GET", f"/records/{code}")["TrangThaiHoSo"] == "2"
        lines = sim.admin("GET", f"/progress/{code}")
        assert [s["NoiDungXuLy"] for s in lines] == ["Bước 1", "Bước 2", "Bước 3"]
        log = [e for e in sim.admin("GET", f"/log?code={code}&limit=0")]
        tries = [e for e in log if e.get("fault") == "error"]
        assert len(tries) == 3
        gaps = [
            datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])
            for a, b in itertools.pairwise(tries)
        ]
        assert all(g >= sync.policy.backoff(n, lambda: 0.0) for n, g in enumerate(gaps, 1))
        accepted = [e["service"] for e in log if e["outcome"] == "accepted"]
        assert accepted == ["DongBoHoSoMC"] + ["CapNhatTienDoHoSoMC"] * 3
        assert "-4" not in sim.stats()["refused"]
        attempts = await rt.pool.fetchval(
            "SELECT attempts FROM portal_sync WHERE id = $1", failed["id"]
        )
        assert attempts == 4  # three refused tries and the one that went
    finally:
        await client.close()
        sim.stop()
