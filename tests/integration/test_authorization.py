"""Who may do what, everywhere: every route of the five services (enumerated from the apps,
so a new route without a rule here fails) against every kind of caller, on the real broker
and PostgreSQL, with the services configured as in production (no development mode)."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import FastAPI
from fastapi.routing import APIRoute

from contracts.events import Decision
from deploy.local import SmtpSink
from services.console.app import SPEC as CONSOLE
from services.consultation.app import SPEC as CONSULTATION
from services.consultation.domain import canonical_reply
from services.intake.app import SPEC as INTAKE
from services.notification import domain
from services.notification.app import SPEC as NOTIFICATION
from services.routing.app import SPEC as ROUTING
from services.runtime import auth
from services.runtime.service import Runtime, create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import PERMIT, TEST_JWT_SECRET, TEST_PORTAL_CLIENT, configure_auth, eventually

DESK, LEAD, FIRE, OTHER = "000.00.01.H29", "000.00.06.H29", "000.02.30.H29", "000.20.01.H29"
OPS = "000.00.00.H29"
PUBLIC = {"/health", "/ready", "/metrics"}

# Callers. Unauthenticated ones must get 401 everywhere.
KINDS = (
    "anonymous",
    "garbage_token",
    "wrong_secret",
    "expired",
    "wrong_audience",
    "century_token",  # an operator's token that would live 100 years (over the maximum)
    "applicant",
    "applicant_wrong_code",
    "desk_officer",  # officer of the receiving agency
    "lead_head",  # department head of the lead agency
    "consulted_head",  # department head of an agency asked for an opinion
    "other_agency_head",  # department head of an unrelated agency
    "operator",
    "portal",
)
UNAUTHENTICATED = (*KINDS[:6], "applicant_wrong_code")
STAFF = ("desk_officer", "lead_head", "consulted_head", "other_agency_head", "operator")


def rule(allow: set[str], *, applicant: bool = False, portal: bool = False) -> dict[str, str]:
    """Expected answer per kind: "allow", 401 or 403. Staff not allowed get 403; the
    applicant and the portal, where their credentials are not accepted, are anonymous."""
    out: dict[str, str] = {}
    for k in KINDS:
        if k in allow:
            out[k] = "allow"
        elif k in UNAUTHENTICATED:
            out[k] = "401"
        elif k == "applicant":
            out[k] = "403" if applicant else "401"
        elif k == "portal":
            out[k] = "403" if portal else "401"
        else:
            out[k] = "403"
    return out


ALL_STAFF = set(STAFF)
# What every service shows operators of what it set aside (services/runtime/ops.py).
OPS_ROUTES = (
    ("GET", "/v1/ops/outbox/failed"),
    ("POST", "/v1/ops/outbox/{row_id}/retry"),
    ("GET", "/v1/ops/timers/failed"),
    ("POST", "/v1/ops/timers/{timer_id}/retry"),
    ("GET", "/v1/ops/dead-letters"),
    ("GET", "/v1/ops/parked"),
)
RULES: dict[tuple[str, str, str], dict[str, str]] = {
    **{
        (service, method, path): rule({"operator"})
        for service in ("intake", "routing", "consultation", "notification", "console")
        for method, path in OPS_ROUTES
    },
    # intake
    ("intake", "GET", "/v1/procedures"): rule(ALL_STAFF | {"portal"}),
    ("intake", "GET", "/v1/procedures/{code}"): rule(ALL_STAFF | {"portal"}),
    ("intake", "POST", "/v1/dossiers"): rule({"desk_officer"}),
    ("intake", "GET", "/v1/dossiers/{code}"): rule(
        {"applicant", "desk_officer", "lead_head", "operator"}
    ),
    ("intake", "POST", "/v1/dossiers/{code}/supplements"): rule({"applicant", "desk_officer"}),
    ("intake", "POST", "/v1/dossiers/{code}/withdrawal"): rule({"applicant", "desk_officer"}),
    ("intake", "POST", "/v1/dossiers/{code}/stop"): rule({"lead_head"}),
    ("intake", "POST", "/v1/portal/token"): rule({"portal"}),
    ("intake", "POST", "/v1/portal/dossiers"): rule({"portal"}),
    ("intake", "GET", "/v1/stats"): rule({"operator"}),
    ("intake", "GET", "/v1/dossiers/{code}/portal-sync"): rule(
        {"desk_officer", "lead_head", "operator"}
    ),
    ("intake", "GET", "/v1/ops/portal-sync/failed"): rule({"operator"}),
    ("intake", "POST", "/v1/ops/portal-sync/{sync_id}/retry"): rule({"operator"}),
    ("intake", "POST", "/v1/ops/portal-sync/reconcile"): rule({"operator"}),
    ("intake", "GET", "/v1/registers/{agency_id}/{day}"): rule({"desk_officer", "operator"}),
    # routing: the agencies of the route read it; those acting whose turn it is not get 409
    ("routing", "GET", "/v1/routes/{code}"): rule(
        {"desk_officer", "lead_head", "consulted_head", "operator"}
    ),
    ("routing", "GET", "/v1/worklist"): rule(ALL_STAFF - {"operator"}),
    ("routing", "GET", "/v1/routes/{code}/form05"): rule(
        {"desk_officer", "lead_head", "consulted_head", "operator"}
    ),
    **{
        ("routing", "POST", path): rule({"desk_officer", "lead_head", "consulted_head"})
        for path in (
            "/v1/routes/{code}/steps/{order}/take",
            "/v1/routes/{code}/steps/{order}/complete",
            "/v1/routes/{code}/handover",
            "/v1/routes/{code}/supplement-request",
            "/v1/routes/{code}/fee-request",
            "/v1/routes/{code}/fee-paid",
            "/v1/routes/{code}/decision",
            "/v1/routes/{code}/result-ready",
            "/v1/routes/{code}/return",
            "/v1/routes/{code}/apologies/{apology_id}/confirm",
        )
    },
    # consultation
    ("consultation", "GET", "/v1/consultations"): rule(ALL_STAFF),
    ("consultation", "GET", "/v1/inbox"): rule(ALL_STAFF),
    ("consultation", "GET", "/v1/consultations/{rid}"): rule(
        {"lead_head", "consulted_head", "operator"}
    ),
    ("consultation", "POST", "/v1/consultations/{rid}/reply"): rule({"consulted_head"}),
    ("consultation", "POST", "/v1/consultations/{rid}/extension"): rule({"lead_head"}),
    ("consultation", "GET", "/v1/consultations/{rid}/audit"): rule(
        {"lead_head", "consulted_head", "operator"}
    ),
    ("consultation", "GET", "/v1/audit/verify"): rule({"operator"}),
    ("consultation", "POST", "/v1/signers"): rule({"operator"}),
    ("consultation", "GET", "/v1/templates"): rule(ALL_STAFF),
    # notification
    ("notification", "GET", "/v1/notifications"): rule(
        {"applicant", "desk_officer", "lead_head", "operator"}
    ),
    ("notification", "GET", "/v1/notifications/{nid}"): rule(
        {"applicant", "desk_officer", "lead_head", "operator"}
    ),
    ("notification", "GET", "/v1/notifications/{nid}/html"): rule(
        {"applicant", "desk_officer", "lead_head", "operator"}
    ),
    ("notification", "POST", "/v1/notifications/{nid}/resend"): rule({"operator"}),
    ("notification", "GET", "/v1/ops/inbound-rejects"): rule({"operator"}),
    # the SMS gateway's webhook: no token, the body's signature is the credential, so every
    # caller that signs gets through whatever else it sends (and none that does not:
    # test_the_receipts_webhook_answers_only_to_its_signature)
    ("notification", "POST", "/v1/sms/receipts"): rule(set(KINDS)),
    # console: operators see every agency's rows, any other staff member its own agency's
    # (a dossier of another agency: 403); acting on dead letters and lag are operators'.
    # Its pages are the same rules; the login page, sign-in/out and assets are public.
    **{
        ("console", "GET", path): rule(ALL_STAFF)
        for path in (
            "/v1/console/status",
            "/v1/console/events",
            "/v1/console/stream",
            "/v1/console/dead-letters",
            "/v1/console/dead-letters/{entry_id}",
            "/v1/console/sla",
            "/v1/console/figures",
            "/v1/console/dossiers",
            "/",
            "/dossiers",
            "/dead-letters",
            "/dead-letters/{entry_id}",
            "/sla",
            "/figures",
            "/figures.csv",
        )
    },
    **{
        ("console", "GET", path): rule(ALL_STAFF - {"other_agency_head"})
        for path in ("/v1/console/dossiers/{code}", "/dossiers/{code}")
    },
    ("console", "GET", "/v1/console/lag"): rule({"operator"}),
    ("console", "GET", "/lag"): rule({"operator"}),
    ("console", "POST", "/v1/console/dead-letters/{entry_id}/replay"): rule({"operator"}),
    ("console", "POST", "/v1/console/dead-letters/{entry_id}/discard"): rule({"operator"}),
    ("console", "GET", "/static/{name}"): rule(set(KINDS)),
    ("console", "GET", "/login"): rule(set(KINDS)),
    ("console", "POST", "/login"): rule(set(KINDS)),
    ("console", "POST", "/logout"): rule(set(KINDS)),
}
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef"


@dataclass
class World:
    clients: dict[str, httpx.AsyncClient]
    runtimes: dict[str, Runtime]
    apps: dict[str, FastAPI]
    code: str = ""
    lookup: str = ""
    request_id: str = ""
    notification_id: str = ""
    signer: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def headers(self, kind: str) -> dict[str, str]:
        now = datetime.now(UTC)

        def bearer(t: str) -> dict[str, str]:
            return {"authorization": f"Bearer {t}"}

        def token(agency: str, role: str, **kw: Any) -> str:
            return auth.mint(
                kw.pop("secret", TEST_JWT_SECRET),
                agency_id=agency,
                role=role,
                person=f"{role}@{agency}",
                now=kw.pop("now", now),
                **kw,
            )

        match kind:
            case "anonymous":
                return {}
            case "garbage_token":
                return bearer("not.a.token")
            case "wrong_secret":
                return bearer(token(OPS, "operator", secret="another-secret-0123456789abcdef01"))
            case "expired":
                return bearer(token(OPS, "operator", now=now - timedelta(hours=13)))
            case "wrong_audience":
                return bearer(token(OPS, "operator", audience="somebody-else"))
            case "century_token":
                return bearer(token(OPS, "operator", ttl=timedelta(days=36525)))
            case "applicant":
                return {auth.LOOKUP_HEADER: self.lookup}
            case "applicant_wrong_code":
                return {auth.LOOKUP_HEADER: "AAAA-BBBB-CCCC"}
            case "desk_officer":
                return bearer(token(DESK, "officer"))
            case "lead_head":
                return bearer(token(LEAD, "department_head"))
            case "consulted_head":
                return bearer(token(FIRE, "department_head"))
            case "other_agency_head":
                return bearer(token(OTHER, "department_head"))
            case "operator":
                return bearer(token(OPS, "operator"))
            case "portal":
                basic = base64.b64encode(":".join(TEST_PORTAL_CLIENT).encode()).decode()
                return {"authorization": f"Basic {basic}"}
        raise AssertionError(kind)

    def request(self, service: str, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """A well-formed request for the route, so an allowed caller is not refused for
        its input: the URL and keyword arguments for httpx."""
        url = (
            path.replace(
                "{code}",
                self.code if service != "intake" or "procedures" not in path else "1.009972",
            )
            .replace("{rid}", self.request_id)
            .replace("{nid}", self.notification_id)
            .replace("{row_id}", "1")
            .replace("{sync_id}", "1")
            .replace("{order}", "2")
            .replace("{agency_id}", DESK)
            .replace("{day}", datetime.now(UTC).date().isoformat())
            .replace("{apology_id}", str(uuid.uuid4()))
            .replace("{timer_id}", "1")
            .replace("{entry_id}", "intake-0-1")
            .replace("{name}", "console.css")
        )
        kw: dict[str, Any] = {}
        match (service, method, path):
            case ("intake", "POST", "/v1/dossiers"):
                kw["json"] = PERMIT
            case ("console", "GET", "/v1/console/stream"):
                kw["params"] = {"seconds": 0.2}
            case ("console", "POST", "/v1/console/dead-letters/{entry_id}/replay") | (
                "console",
                "POST",
                "/v1/console/dead-letters/{entry_id}/discard",
            ):
                kw["json"] = {"reason": "Đã sửa nguyên nhân"}
            case ("intake", "POST", "/v1/dossiers/{code}/supplements"):
                kw["json"] = {"documents": [{"code": "BVTK"}]}
            case ("routing", "POST", "/v1/routes/{code}/steps/{order}/take"):
                kw["json"] = {}
            case ("routing", "POST", "/v1/routes/{code}/steps/{order}/complete"):
                kw["json"] = {"result": "Đã thẩm định"}
            case ("routing", "POST", "/v1/routes/{code}/handover"):
                kw["json"] = {"to_department": "QLHDXD"}
            case ("routing", "POST", "/v1/routes/{code}/supplement-request"):
                kw["json"] = {"missing": ["QSDD"]}
            case ("routing", "POST", "/v1/routes/{code}/fee-request"):
                kw["json"] = {"amount_vnd": 50000}
            case ("routing", "POST", "/v1/routes/{code}/fee-paid"):
                kw["json"] = {}
            case ("routing", "POST", "/v1/routes/{code}/decision"):
                kw["json"] = {"decision": "approved", "documents": [{"code": "GPXD"}]}
            case ("routing", "POST", "/v1/routes/{code}/result-ready"):
                kw["json"] = {}
            case ("routing", "POST", "/v1/routes/{code}/return"):
                kw["json"] = {"method": "at_desk"}
            case ("routing", "POST", "/v1/routes/{code}/apologies/{apology_id}/confirm"):
                kw["json"] = {
                    "reason": "Chậm do khảo sát thực địa",
                    "appointment_at": "2027-12-31T17:00:00+07:00",
                    "number": "15/PXL-SXD",
                    "signer_name": "Nguyễn Văn An",
                }
            case ("intake", "POST", "/v1/dossiers/{code}/withdrawal"):
                kw["json"] = {"reason": "Không còn nhu cầu"}
            case ("intake", "POST", "/v1/dossiers/{code}/stop"):
                kw["json"] = {"reason": "Hồ sơ giả mạo"}
            case ("intake", "POST", "/v1/portal/dossiers"):
                kw["json"] = {
                    "MaHoSo": f"G22-{uuid.uuid4().hex[:8]}",
                    "MaTTHC": "1.009972",
                    "ChuHoSo": "Phạm Thị Hoa",
                    "SoGiayToChuHoSo": "001190067890",
                    "TaiLieuNop": [{"MaThanhPhanHoSo": c} for c in ("DDN", "QSDD", "BVTK")],
                }
            case ("consultation", "GET", "/v1/consultations") | (
                "notification",
                "GET",
                "/v1/notifications",
            ):
                kw["params"] = {"dossier": self.code}
            case ("consultation", "POST", "/v1/consultations/{rid}/reply"):
                nonce = uuid.uuid4().hex
                msg = canonical_reply(
                    uuid.UUID(self.request_id), Decision.AGREE, None, None, "pc07-matrix", nonce
                )
                kw["json"] = {
                    "decision": "agree",
                    "signer": "pc07-matrix",
                    "nonce": nonce,
                    "signature": base64.b64encode(self.signer.sign(msg)).decode(),
                }
            case ("notification", "POST", "/v1/notifications/{nid}/resend"):
                kw["json"] = {"reason": "Người dân nói chưa nhận được"}
            case ("notification", "POST", "/v1/sms/receipts"):
                kw["content"] = receipt_body(self.notification_id)
                kw["headers"] = {"x-signature": auth_sign(kw["content"])}
            case ("consultation", "POST", "/v1/consultations/{rid}/extension"):
                kw["json"] = {"by": {"value": 2}, "reason": "Cần khảo sát hiện trạng"}
            case ("consultation", "POST", "/v1/signers"):
                kw["json"] = {
                    "key_id": f"k-{uuid.uuid4().hex[:8]}",
                    "agency_id": FIRE,
                    "person": "Lê Văn Hùng",
                    "role": "department_head",
                    "public_key": _public(Ed25519PrivateKey.generate()),
                }
        return url, kw


def receipt_body(nid: str) -> bytes:
    """A well-formed receipt (of a notification that is no SMS: 422, but past the guard)."""
    return json.dumps(
        {
            "id": "gw-1",
            "client_ref": nid,
            "to": "0912345678",
            "status": "delivered",
            "at": datetime.now(UTC).isoformat(),
        }
    ).encode()


def auth_sign(body: bytes) -> str:
    return domain.sign(WEBHOOK_SECRET, body)


def _public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def settings_for(name: str, bootstrap: str, database_url: str, prefix: str, smtp: int) -> Any:
    s = ServiceSettings.for_service(name)
    s.kafka_bootstrap_servers = bootstrap
    s.database_url = database_url
    s.topic_prefix = prefix
    s.smtp_port = smtp
    s.sms_webhook_secret = WEBHOOK_SECRET
    return configure_auth(s)


@pytest.fixture
async def world(kafka_bootstrap: str, database_url: str, topic_prefix: str) -> AsyncIterator[World]:
    sink = SmtpSink()
    sink.start()
    specs = {s.name: s for s in (INTAKE, ROUTING, CONSULTATION, NOTIFICATION, CONSOLE)}
    apps = {
        n: create_app(spec, settings_for(n, kafka_bootstrap, database_url, topic_prefix, sink.port))
        for n, spec in specs.items()
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for n, app in apps.items():
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients[n] = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url=f"http://{n}", timeout=30
                    )
                )
            w = World(clients, {n: a.state.runtime for n, a in apps.items()}, apps)
            yield w
    finally:
        sink.stop()


async def _seed(w: World) -> None:
    """One building-permit dossier through the whole pipeline, and a registered signer."""
    r = await w.clients["intake"].post(
        "/v1/dossiers", json=PERMIT, headers=w.headers("desk_officer")
    )
    assert r.status_code == 201, r.text
    w.code, w.lookup = r.json()["code"], r.json()["lookup_code"]
    rt = w.runtimes
    await eventually(
        lambda: rt["consultation"].pool.fetchval(
            "SELECT count(*) FROM requests WHERE dossier_code = $1", w.code
        ),
        lambda n: n == 3,
        timeout=60,
    )
    await eventually(
        lambda: rt["routing"].pool.fetchval(
            "SELECT count(*) FROM routes WHERE dossier_code = $1", w.code
        ),
        lambda n: n == 1,
        timeout=60,
    )
    nid = await eventually(
        lambda: rt["notification"].pool.fetchval(
            "SELECT id FROM notifications WHERE dossier_code = $1 AND kind = 'form01'"
            " AND channel = 'email'",
            w.code,
        ),
        lambda v: v is not None,
        timeout=60,
    )
    w.notification_id = str(nid)
    w.request_id = str(
        await rt["consultation"].pool.fetchval(
            "SELECT id FROM requests WHERE dossier_code = $1 AND agency_id = $2", w.code, FIRE
        )
    )
    r = await w.clients["consultation"].post(
        "/v1/signers",
        headers=w.headers("operator"),
        json={
            "key_id": "pc07-matrix",
            "agency_id": FIRE,
            "person": "Đại tá Lê Văn Hùng",
            "role": "department_head",
            "public_key": _public(w.signer),
        },
    )
    assert r.status_code == 201, r.text


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every HTTP route of the app, from its routing table (descending into included
    routers) and from its OpenAPI document, less the public probes."""
    found: set[tuple[str, str]] = set()

    def walk(items: list[Any]) -> None:
        for r in items:
            if isinstance(r, APIRoute):
                found.update((m, r.path) for m in r.methods)
            inner = getattr(r, "original_router", None) or getattr(r, "router", None)
            if inner is not None and hasattr(inner, "routes"):
                walk(list(inner.routes))

    walk(list(app.routes))
    for path, ops in app.openapi()["paths"].items():
        found.update((m.upper(), path) for m in ops)
    return sorted((m, p) for m, p in found if p not in PUBLIC)


INVALID_BODY = ["not", "what", "any", "route", "takes"]
"""A JSON body no route accepts: whoever may not call a route hears no more about its body
than about the route (the same 401 or 403), never a 422 that tells what a valid one is."""
BODY_DECIDES: dict[tuple[str, str, str], set[str]] = {
    # The submission names the receiving agency: only the desk can tell it is not the
    # caller's own, so staff of an agency that may receive dossiers (any the catalogue
    # names) hear about the body first. Operators and agencies that receive none: 403.
    ("intake", "POST", "/v1/dossiers"): {"lead_head", "consulted_head"},
}


def with_body(app: FastAPI) -> set[tuple[str, str]]:
    """The app's routes that take a request body, from its OpenAPI document."""
    return {
        (m.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for m, op in ops.items()
        if "requestBody" in op
    }


# Mutating routes last, so reads see the dossier open; withdrawal before stop.
ORDER: Callable[[tuple[str, str, str]], int] = lambda k: (  # noqa: E731
    2 if k[1] == "POST" and "withdrawal" in k[2] else 3 if "stop" in k[2] else 1
)


async def test_authorization_matrix(world: World) -> None:
    w = world
    await _seed(w)
    cells = sorted(((n, m, p) for n, app in w.apps.items() for m, p in routes(app)), key=ORDER)
    missing = [c for c in cells if c not in RULES]
    assert not missing, f"routes without an authorization rule: {missing}"
    assert set(RULES) == set(cells), (
        f"rules for routes that do not exist: {set(RULES) - set(cells)}"
    )
    bodies = {(n, m, p) for n, app in w.apps.items() for m, p in with_body(app)}
    failures, allowed_2xx, total, invalid = [], 0, 0, 0
    for service, method, path in cells:
        for kind in KINDS:
            url, kw = w.request(service, method, path)
            headers = {**w.headers(kind), **kw.pop("headers", {})}
            r = await w.clients[service].request(method, url, headers=headers, **kw)
            expected = RULES[(service, method, path)][kind]
            total += 1
            ok = (
                r.status_code not in (401, 403) and r.status_code < 500
                if expected == "allow"
                else str(r.status_code) == expected
            )
            allowed_2xx += expected == "allow" and r.status_code < 300
            if r.status_code >= 400 and r.status_code != 404:
                body = r.json()  # every error answer has the documented shape
                assert "detail" in body or "error_code" in body, (service, path, kind, body)
            if not ok:
                failures.append(
                    f"{service} {method} {path} as {kind}: {r.status_code} "
                    f"(expected {expected}) {r.text[:160]}"
                )
            cell = (service, method, path)
            if expected == "allow" or cell not in bodies or kind in BODY_DECIDES.get(cell, ()):
                continue
            # the same caller with a body no route takes: the same refusal, not a 422
            kw = {k: v for k, v in kw.items() if k not in ("json", "content")}
            r = await w.clients[service].request(
                method, url, headers=headers, json=INVALID_BODY, **kw
            )
            total, invalid = total + 1, invalid + 1
            if str(r.status_code) != expected:
                failures.append(
                    f"{service} {method} {path} as {kind} with an invalid body:"
                    f" {r.status_code} (expected {expected}) {r.text[:160]}"
                )
    n_routes = len(cells)
    print(
        f"\nauthorization matrix: {n_routes} routes x {len(KINDS)} callers, and {invalid}"
        f" refused callers again with an invalid body = {total} checks,"
        f" {total - len(failures)} as expected, {len(failures)} not"
        f" ({allowed_2xx} allowed calls answered 2xx)"
    )
    assert not failures, "\n".join(failures)


async def test_the_receipts_webhook_answers_only_to_its_signature(world: World) -> None:
    """Whoever calls, with whatever token: no valid signature, 401, and the body stored."""
    w = world
    await _seed(w)
    notes = w.clients["notification"]
    body = receipt_body(w.notification_id)
    for kind in KINDS:
        for sig in ({}, {"x-signature": domain.sign("another-secret-0123456789abcdef", body)}):
            r = await notes.post(
                "/v1/sms/receipts", content=body, headers={**w.headers(kind), **sig}
            )
            assert r.status_code == 401, (kind, r.text)
            assert r.json()["errors"][0]["field"] == "header.X-Signature"
    stored = await w.runtimes["notification"].pool.fetchval(
        "SELECT count(*) FROM inbound_rejects WHERE source = 'sms-receipt' AND status = 401"
    )
    assert stored == 2 * len(KINDS)


async def test_personal_data_masked_for_operators_and_every_officer_read_audited(
    world: World,
) -> None:
    w = world
    await _seed(w)
    intake, notes = w.clients["intake"], w.clients["notification"]
    full = (await intake.get(f"/v1/dossiers/{w.code}", headers=w.headers("desk_officer"))).json()
    assert not full["redacted"] and full["applicant"]["id_number"] == "0101234567"
    masked = (await intake.get(f"/v1/dossiers/{w.code}", headers=w.headers("operator"))).json()
    assert masked["redacted"]
    assert masked["applicant"]["id_number"] == "*******567"
    assert masked["applicant"]["email"] == "m***@example.vn"
    assert "0101234567" not in str(masked) and "Minh Long" not in str(masked)
    mine = (await intake.get(f"/v1/dossiers/{w.code}", headers=w.headers("applicant"))).json()
    assert mine["applicant"]["name"] == PERMIT["applicant"]["name"]  # type: ignore[index]

    params = {"dossier": w.code}
    op = await notes.get("/v1/notifications", params=params, headers=w.headers("operator"))
    assert w.lookup not in op.text and "Minh Long" not in op.text
    lead = await notes.get("/v1/notifications", params=params, headers=w.headers("lead_head"))
    assert f"Mã tra cứu (giữ bí mật): {w.lookup}" in lead.json()[0]["body_text"]
    html = await notes.get(
        f"/v1/notifications/{w.notification_id}/html", headers=w.headers("applicant")
    )
    assert w.lookup in html.text

    reads = await w.runtimes["intake"].pool.fetch(
        "SELECT person, role, agency_id, endpoint FROM pii_reads WHERE dossier_code = $1",
        w.code,
    )
    assert [(r["role"], r["agency_id"]) for r in reads] == [("officer", DESK)]
    assert reads[0]["endpoint"] == f"GET /v1/dossiers/{w.code}"
    reads = await w.runtimes["notification"].pool.fetch(
        "SELECT role, agency_id, endpoint FROM pii_reads WHERE dossier_code = $1", w.code
    )
    assert [(r["role"], r["agency_id"], r["endpoint"]) for r in reads] == [
        ("department_head", LEAD, "GET /v1/notifications")
    ]
    # intake keeps only the code's hash; the event carries it sealed for notification
    row = await w.runtimes["intake"].pool.fetchrow(
        "SELECT lookup_hash, response::text AS response FROM dossiers WHERE code = $1", w.code
    )
    assert row["lookup_hash"] == auth.hash_lookup_code(w.code, w.lookup)
    assert w.lookup not in row["response"]
    assert not await w.runtimes["intake"].pool.fetchval(
        "SELECT count(*) FROM outbox WHERE payload::text LIKE '%' || $1 || '%'", w.lookup
    )
