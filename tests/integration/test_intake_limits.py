"""Limits at the edge, through intake's HTTP API on the real broker and PostgreSQL.

Every hostile input of issue 8 answers 422 naming the field (or 404 for a code that cannot
exist), never 500, and never leaves a row behind; the desk keeps receiving after them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from contracts.envelope import Envelope
from services.intake.app import SPEC
from services.runtime.calendar import VN_TZ
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import TEST_PORTAL_CLIENT, configure_auth, eventually, staff

DESK = "000.01.50.H29"  # receives 1.000894 by default
GOOD = {
    "procedure_code": "1.000894",
    "channel": 1,
    "applicant": {
        "name": "Trần Văn Bình",
        "id_number": "001090001234",
        "phone": "0987654321",
        "email": "binh@example.vn",
        "address": "Số 1 Lê Lợi, Phường Bến Thành",
        "commune": "BEN_THANH",
    },
    "summary": "Đăng ký kết hôn",
    "documents": [{"code": "TK", "name": "Tờ khai đăng ký kết hôn", "url": "https://hs.vn/tk"}],
}
PORTAL = {
    "MaHoSo": "G22.99-261120-000777",
    "MaTTHC": "1.000894",
    "KenhThucHien": 2,
    "ChuHoSo": "Trần Văn Bình",
    "LoaiDoiTuong": 1,
    "MaDoiTuong": "vneid-001",
    "SoGiayToChuHoSo": "001090001234",
    "SoDienThoai": "0987654321",
    "Email": "binh@example.vn",
    "DiaChi": "Số 1 Lê Lợi",
    "TrichYeuHoSo": "Đăng ký kết hôn",
    "DonViXuLy": "UBND phường",
    "TaiLieuNop": [{"MaThanhPhanHoSo": "TK", "TenTepDinhKem": "Tờ khai"}],
}


@pytest.fixture
async def intake(
    kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = configure_auth(ServiceSettings.for_service("intake"))
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    app = create_app(SPEC, settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://intake", auth=_Caller()
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


class _Caller(httpx.Auth):
    """The portal's client credentials on /v1/portal/*, else the desk officer of the
    agency that receives GOOD, a head (may stop and back-date); a request that brings its own
    credentials keeps them."""

    def auth_flow(self, request: httpx.Request) -> Any:
        if "authorization" not in request.headers:
            if request.url.path.startswith("/v1/portal/"):
                user, secret = TEST_PORTAL_CLIENT
                request.headers["authorization"] = httpx.BasicAuth(user, secret)._auth_header
            else:
                request.headers.update(staff(DESK, "agency_head"))
        yield request


def _pool(client: httpx.AsyncClient) -> Any:
    return client.app.state.runtime.pool  # type: ignore[attr-defined]


def _with(path: tuple[Any, ...], value: Any, body: Any) -> Any:
    """A deep copy of ``body`` with the field at ``path`` set to ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(body, list):
        return [_with(rest, value, b) if i == head else b for i, b in enumerate(body)]
    return {**body, head: _with(rest, value, body.get(head, {} if rest else None))}


DESK_FIELDS: dict[tuple[Any, ...], str] = {
    ("procedure_code",): "1.000894",
    ("applicant", "name"): "Trần Văn Bình",
    ("applicant", "id_number"): "001090001234",
    ("applicant", "phone"): "0987654321",
    ("applicant", "email"): "binh@example.vn",
    ("applicant", "address"): "Số 1 Lê Lợi",
    ("summary",): "Đăng ký kết hôn",
    ("documents", 0, "code"): "TK",
    ("documents", 0, "name"): "Tờ khai",
    ("documents", 0, "url"): "https://hs.vn/tk",
    ("receiving_agency",): "000.01.50.H29",
}


async def _no_rows(client: httpx.AsyncClient) -> None:
    pool = _pool(client)
    assert await pool.fetchval("SELECT count(*) FROM dossiers") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE topic LIKE '%dossier%'") == 0


async def test_a_million_dashes_in_an_id_number(intake: httpx.AsyncClient) -> None:
    body = _with(("applicant", "id_number"), "-" * 1_000_000 + "001090001234", GOOD)
    r = await intake.post("/v1/dossiers", json=body)
    assert r.status_code == 413, r.text  # over the body limit: refused before parsing
    assert r.json()["errors"][0]["field"] == "body"
    body = _with(("applicant", "id_number"), "-" * 100_000 + "001090001234", GOOD)
    r = await intake.post("/v1/dossiers", json=body)
    assert r.status_code == 422, r.text
    (err,) = r.json()["errors"]
    assert err["field"] == "applicant.id_number" and "at most 14" in err["reason"]
    assert len(r.content) < 2000  # the answer does not echo the input
    padded = _with(("applicant", "id_number"), "001-090-001234", GOOD)
    r = await intake.post("/v1/dossiers", json=padded)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "applicant.id_number"
    phone = _with(("applicant", "phone"), "0987654321" + " " * 100_000, GOOD)
    r = await intake.post("/v1/dossiers", json=phone)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "applicant.phone"
    await _no_rows(intake)


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\x9b", "\u202e"])
async def test_control_characters_in_every_desk_field(intake: httpx.AsyncClient, char: str) -> None:
    for path, value in DESK_FIELDS.items():
        bad = value[:3] + char + value[3:]
        r = await intake.post("/v1/dossiers", json=_with(path, bad, GOOD))
        assert r.status_code == 422, (path, r.status_code, r.text)
        fields = [e["field"] for e in r.json()["errors"]]
        assert fields == [".".join(map(str, path))], (path, fields)
    await _no_rows(intake)
    ok = await intake.post("/v1/dossiers", json=GOOD)
    assert ok.status_code == 201, ok.text
    code = ok.json()["code"]
    for path, body in (
        ("withdrawal", {"reason": f"a{char}b"}),
        ("stop", {"reason": f"a{char}b"}),
        ("supplements", {"documents": [{"code": "TK", "name": f"a{char}b"}]}),
    ):
        r = await intake.post(f"/v1/dossiers/{code}/{path}", json=body)
        assert r.status_code == 422, (path, r.text)
    # A code that cannot exist is not looked up: 404, or 422 where the edge already refuses
    # a control character in the path.
    for raw in (f"{code}{char}", f"{code[:5]}{char}{code[5:]}", "x" * 5000):
        where = quote(raw, safe="")
        assert (await intake.get(f"/v1/dossiers/{where}")).status_code in (404, 422)
        r = await intake.post(f"/v1/dossiers/{where}/withdrawal", json={})
        assert r.status_code in (404, 422)


async def test_control_characters_in_every_portal_field(intake: httpx.AsyncClient) -> None:
    for name, value in PORTAL.items():
        if not isinstance(value, str):
            continue
        r = await intake.post("/v1/portal/dossiers", json={**PORTAL, name: f"{value}\x00"})
        assert r.status_code == 422, (name, r.text)
        body = r.json()
        assert body["error_code"] != 0 and body["field"] == name, (name, body)
        assert body["message"].startswith(f"{name}: ")
    nested = {**PORTAL, "TaiLieuNop": [{"MaThanhPhanHoSo": "TK", "TenTepDinhKem": "a\x00"}]}
    r = await intake.post("/v1/portal/dossiers", json=nested)
    assert r.status_code == 422 and r.json()["field"] == "TaiLieuNop.0.TenTepDinhKem"
    dashes = {**PORTAL, "SoGiayToChuHoSo": "-" * 100_000 + "001090001234"}
    r = await intake.post("/v1/portal/dossiers", json=dashes)
    assert r.status_code == 422 and r.json()["field"] == "SoGiayToChuHoSo"
    # A rule only the desk's model knows is still reported under the portal's name.
    r = await intake.post("/v1/portal/dossiers", json={**PORTAL, "SoGiayToChuHoSo": "12345"})
    assert r.status_code == 422 and r.json()["field"] == "SoGiayToChuHoSo", r.text
    await _no_rows(intake)
    r = await intake.post("/v1/portal/dossiers", json=PORTAL)
    assert r.status_code == 200 and r.json()["error_code"] == 0, r.text


async def test_a_field_the_desk_does_not_know_is_refused_from_the_portal_as_at_the_desk(
    intake: httpx.AsyncClient,
) -> None:
    """The portal's door is as strict as the desk's: an unknown field, at the top or in a
    document, is a 422 naming it, not silently dropped."""
    r = await intake.post("/v1/dossiers", json={**GOOD, "Foo": 1})
    assert r.status_code == 422
    assert [(e["field"], e["type"]) for e in r.json()["errors"]] == [("Foo", "extra_forbidden")]
    reason = r.json()["errors"][0]["reason"]
    r = await intake.post("/v1/portal/dossiers", json={**PORTAL, "Foo": 1})
    assert r.status_code == 422, r.text
    assert r.json() == {"error_code": -1, "message": f"Foo: {reason}", "field": "Foo"}
    docs = [{"MaThanhPhanHoSo": "TK", "TepDinhKemId": "f-1"}]
    r = await intake.post("/v1/portal/dossiers", json={**PORTAL, "TaiLieuNop": docs})
    assert r.status_code == 422 and r.json()["field"] == "TaiLieuNop.0.TepDinhKemId", r.text
    await _no_rows(intake)


async def test_over_long_fields(intake: httpx.AsyncClient) -> None:
    limits = {
        ("procedure_code",): 40,
        ("applicant", "name"): 200,
        ("applicant", "address"): 500,
        ("summary",): 2000,
        ("documents", 0, "code"): 40,
        ("documents", 0, "name"): 300,
        ("documents", 0, "url"): 2000,
    }
    for path, n in limits.items():
        r = await intake.post("/v1/dossiers", json=_with(path, "A" * (n + 1), GOOD))
        assert r.status_code == 422, (path, r.text)
        (err,) = r.json()["errors"]
        assert err["field"] == ".".join(map(str, path)) and f"at most {n}" in err["reason"]
    many = {**GOOD, "documents": [{"code": "TK"}] * 51}
    r = await intake.post("/v1/dossiers", json=many)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "documents"
    email = _with(("applicant", "email"), "a" * 250 + "@example.vn", GOOD)
    r = await intake.post("/v1/dossiers", json=email)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "applicant.email"
    await _no_rows(intake)


async def test_bad_agency_ids(intake: httpx.AsyncClient) -> None:
    for bad in ("H29", "not an agency", "000.00.01.H29x", "０００.00.16.H29", "000.00.01.H29\n"):
        r = await intake.post("/v1/dossiers", json={**GOOD, "receiving_agency": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["errors"][0]["field"] == "receiving_agency"
    r = await intake.post("/v1/dossiers", json={**GOOD, "receiving_agency": "000.99.99.H99"})
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {
            "field": "receiving_agency",
            "reason": "000.99.99.H99 không phải cơ quan trong danh mục hay bộ phận một cửa",
        }
    ]
    r = await intake.post(  # in the agency book, but it keeps no one-stop desk: its own
        "/v1/dossiers",  # staff may not submit at all (403, before the body is read)
        json={**GOOD, "receiving_agency": "000.00.52.H29"},
        headers=staff("000.00.52.H29"),
    )
    assert r.status_code == 403 and "nor a one-stop desk" in r.json()["errors"][0]["reason"]
    assert r.json()["errors"][0]["field"] == "agency"
    await _no_rows(intake)
    r = await intake.post(
        "/v1/dossiers",
        json={**GOOD, "receiving_agency": "000.00.01.H29"},
        headers=staff("000.00.01.H29"),
    )
    assert r.status_code == 201 and r.json()["code"].startswith("000.00.01.H29-")


async def test_idempotency_key_empty_too_long_or_not_ascii(intake: httpx.AsyncClient) -> None:
    for key in ("", " ", "k" * 201, "khóa-1", "a\tb"):
        r = await intake.post(
            "/v1/dossiers", json=GOOD, headers=[(b"Idempotency-Key", key.encode())]
        )
        assert r.status_code == 422, (key, r.text)
        assert r.json()["errors"][0]["field"].lower() == "header.idempotency-key"
    r = await intake.post("/v1/dossiers", json=GOOD, headers={"Idempotency-Key": "portal:G22.1"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
    await _no_rows(intake)
    ok = await intake.post("/v1/dossiers", json=GOOD, headers={"Idempotency-Key": "k" * 200})
    assert ok.status_code == 201


async def test_the_10000th_dossier_of_a_day_widens_the_serial(intake: httpx.AsyncClient) -> None:
    """Past 9,999 in a day the serial takes 5 digits; past 99,999 the desk says when to
    come back. The day's counter is set directly; everything else is the real path."""
    pool = _pool(intake)
    # An hour ago: within the 72 hours a head may record back, and a day earlier too.
    received = (datetime.now(VN_TZ) - timedelta(hours=1)).replace(second=0, microsecond=0)
    day = received.strftime("%y%m%d")
    body = {**GOOD, "received_at": received.isoformat(), "backdate_reason": "Nhập lại sổ"}
    await pool.execute(
        "INSERT INTO serials(agency_id, day, last) VALUES ('000.01.50.H29', $1, 9998)",
        received.date(),
    )
    codes = []
    for _ in range(3):
        r = await intake.post("/v1/dossiers", json=body)
        assert r.status_code == 201, r.text
        codes.append(r.json()["code"])
    assert codes == [
        f"000.01.50.H29-{day}-9999",
        f"000.01.50.H29-{day}-10000",
        f"000.01.50.H29-{day}-10001",
    ]
    view = await intake.get(f"/v1/dossiers/{codes[1]}")
    assert view.status_code == 200 and view.json()["code"] == codes[1]
    r = await intake.post(f"/v1/dossiers/{codes[1]}/withdrawal", json={"reason": "Rút"})
    assert r.status_code == 200, r.text
    rows = await eventually(
        lambda: pool.fetch(
            "SELECT payload, published_at FROM outbox WHERE key = $1 ORDER BY id", codes[1]
        ),
        lambda rs: len(rs) == 2 and all(x["published_at"] for x in rs),
    )
    assert [Envelope.model_validate_json(x["payload"]).subject for x in rows] == [codes[1]] * 2
    await pool.execute(
        "UPDATE serials SET last = 99999 WHERE agency_id = '000.01.50.H29' AND day = $1",
        received.date(),
    )
    full = await intake.post("/v1/dossiers", json=body)
    assert full.status_code == 503, full.text
    assert full.json()["errors"][0]["field"] == "receiving_agency"
    assert int(full.headers["Retry-After"]) >= 1
    before = received - timedelta(days=1)
    other_day = {**body, "received_at": before.isoformat()}
    r = await intake.post("/v1/dossiers", json=other_day)
    assert r.status_code == 201, r.text
    assert r.json()["code"] == f"000.01.50.H29-{before:%y%m%d}-0001"
