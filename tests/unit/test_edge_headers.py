"""What every service's edge does before any handler, on the apps ``create_app`` builds
(no lifespan: nothing here needs the broker or the database): the security headers on
every answer, the documentation pages' own policy, the console's ``next`` and session
cookie, and JSON bodies only as UTF-8 with a 400 for what is not JSON."""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.console.app import SPEC as CONSOLE
from services.console.pages import safe_next
from services.consultation.app import SPEC as CONSULTATION
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION
from services.routing.app import SPEC as ROUTING
from services.runtime import auth
from services.runtime.headers import STRICT_POLICY
from services.runtime.ops import loads, utf8_problem
from services.runtime.service import ServiceSpec, create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import PERMIT, TEST_JWT_SECRET, configure_auth, staff

SPECS = {s.name: s for s in (INTAKE, ROUTING, CONSULTATION, NOTIFICATION, CONSOLE)}
DESK = "000.00.01.H29"
HEADERS = {
    "content-security-policy": STRICT_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def app_of(spec: ServiceSpec) -> FastAPI:
    return create_app(spec, configure_auth(ServiceSettings.for_service(spec.name)))


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    return {name: app_of(spec) for name, spec in SPECS.items()}


@pytest.fixture
async def client(apps: dict[str, FastAPI]) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(name: str, scheme: str = "http") -> httpx.AsyncClient:
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps[name]), base_url=f"{scheme}://{name}"
        )
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()


def assert_strict(r: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers)
    assert "strict-transport-security" not in r.headers  # plain HTTP


@pytest.mark.parametrize("service", sorted(SPECS))
async def test_every_answer_of_every_service_carries_the_security_headers(
    client: Any, service: str
) -> None:
    http = client(service)
    answers = [
        await http.get("/health"),
        await http.get("/openapi.json"),
        await http.get("/v1/ops/parked"),  # an API answer: 401 without a token
        await http.get("/nowhere"),  # 404
        await http.post("/v1/ops/outbox/1/retry", content=b"x" * (300 * 1024)),  # the edge: 413
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 404, 413]
    for r in answers:
        assert_strict(r)
    # over HTTPS (directly, or via a proxy uvicorn trusts) HSTS too
    r = await client(service, "https").get("/health")
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert r.headers["content-security-policy"] == STRICT_POLICY


def _hashes(page: str) -> list[str]:
    scripts = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    ]


async def test_the_documentation_pages_have_a_policy_of_their_own(client: Any) -> None:
    http = client("intake")
    docs = await http.get("/docs")
    assert docs.status_code == 200
    policy = docs.headers["content-security-policy"]
    (inline,) = _hashes(docs.text)  # Swagger UI's starter: allowed by its hash alone
    script_src = next(d for d in policy.split("; ") if d.startswith("script-src "))
    assert script_src == f"script-src https://cdn.jsdelivr.net {inline}"
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert "frame-ancestors 'none'" in policy and docs.headers["x-frame-options"] == "DENY"

    redirect = await http.get("/docs/oauth2-redirect")
    (inline,) = _hashes(redirect.text)
    assert f"script-src {inline}" in redirect.headers["content-security-policy"]

    redoc = await http.get("/redoc")
    policy = redoc.headers["content-security-policy"]
    assert "script-src https://cdn.jsdelivr.net;" in policy  # no inline script at all
    assert "style-src 'unsafe-inline' https://fonts.googleapis.com" in policy  # its CSS-in-JS


@pytest.mark.parametrize(
    "asked",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "//evil.example",
        "/.//evil.example",  # a browser resolves dot segments: "//evil.example"
        "/..//evil.example",
        "/%2e//evil.example",
        "/a/%2E%2E//evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "data:text/html,<script>alert(1)</script>",
        "evil.example",
        "/login",
        "",
    ],
)
async def test_the_login_page_goes_back_only_to_a_path_of_its_own(client: Any, asked: str) -> None:
    r = await client("console").get("/login", params={"next": asked})
    assert safe_next(asked) == "/"
    assert_strict(r)
    if "\t" in asked:  # the edge refuses control characters in the query first
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.next"
        return
    assert r.status_code == 200
    assert 'data-next="/"' in r.text, r.text


async def test_a_path_of_its_own_is_kept(client: Any) -> None:
    http = client("console")
    r = await http.get("/login", params={"next": "/dead-letters/0-1?reveal=true"})
    assert 'data-next="/dead-letters/0-1?reveal=true"' in r.text
    # a page asked for without a session: the login page, back to that page afterwards
    r = await http.get("/lag", params={"minutes": 60}, headers={"accept": "text/html"})
    assert r.status_code == 401 and 'data-next="/lag?minutes=60"' in r.text
    assert_strict(r)


async def test_the_session_cookie_is_secure_over_https(client: Any) -> None:
    from datetime import UTC, datetime

    token = auth.mint(
        TEST_JWT_SECRET, agency_id=DESK, role="officer", person="a", now=datetime.now(UTC)
    )
    plain = await client("console").post("/login", json={"token": token})
    assert plain.status_code == 200, plain.text
    cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    secure = await client("console", "https").post("/login", json={"token": token})
    cookie = secure.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "; secure" in cookie
    out = await client("console", "https").post("/logout")
    assert "; secure" in out.headers["set-cookie"].lower()


ENCODINGS = [
    ("utf-16", "UTF-16"),  # with its BOM
    ("utf-16-le", "UTF-16"),  # without
    ("utf-16-be", "UTF-16"),
    ("utf-32", "UTF-16 hoặc UTF-32"),
    ("utf-8-sig", "BOM"),
]


@pytest.mark.parametrize(("encoding", "said"), ENCODINGS)
async def test_a_json_body_is_accepted_only_in_utf8(client: Any, encoding: str, said: str) -> None:
    body = json.dumps(PERMIT, ensure_ascii=False).encode(encoding)
    r = await client("intake").post(
        "/v1/dossiers",
        content=body,
        headers={**staff(DESK), "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "body" and said in error["reason"] and "UTF-8" in error["reason"]
    assert_strict(r)


async def test_invalid_utf8_and_a_declared_charset_are_refused(client: Any) -> None:
    http = client("intake")
    r = await http.post(
        "/v1/dossiers",
        content=b'{"procedure_code": "\xff"}',
        headers={**staff(DESK), "content-type": "application/json"},
    )
    assert r.status_code == 400 and "byte thứ 20" in r.json()["errors"][0]["reason"]
    r = await http.post(
        "/v1/dossiers",
        content=json.dumps(PERMIT).encode("utf-16"),
        headers={**staff(DESK), "content-type": "application/json; charset=UTF-16"},
    )
    assert r.status_code == 415, r.text
    assert r.json()["errors"] == [
        {
            "field": "header.content-type",
            "reason": "JSON chỉ nhận mã hoá UTF-8, không nhận charset=utf-16",
        }
    ]
    # UTF-8 said out loud is UTF-8: through the edge to the request's validation
    r = await http.post(
        "/v1/dossiers",
        content=b"{}",
        headers={**staff(DESK), "content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("intake", "/v1/dossiers"),
        ("routing", "/v1/routes/000.00.01.H29-251124-0001/decision"),
        ("console", "/v1/console/dead-letters/0-1/replay"),
        ("console", "/login"),
    ],
)
async def test_a_body_that_is_not_json_is_400_naming_the_body(
    client: Any, service: str, path: str
) -> None:
    r = await client(service).post(
        path,
        content=b'{"decision": "approved",',
        headers={**staff(DESK), "content-type": "application/json"},
    )
    assert r.status_code == 400, r.text
    assert r.json() == {
        "detail": "Nội dung không phải JSON hợp lệ",
        "errors": [
            {
                "field": "body",
                "reason": "Nội dung không phải JSON hợp lệ: Expecting property name enclosed"
                " in double quotes (ở ký tự thứ 24)",
            }
        ],
    }


def test_a_body_read_by_hand_is_held_to_the_same_rule() -> None:
    assert loads('{"a": "Ở"}'.encode()) == {"a": "Ở"}
    assert json.loads('{"a": 1}'.encode("utf-16")) == {"a": 1}  # what bytes alone would do
    for raw in ('{"a": 1}'.encode("utf-16"), codecs.BOM_UTF8 + b"{}", b"\xc3("):
        with pytest.raises(ValueError, match="UTF-8"):
            loads(raw)
    with pytest.raises(ValueError, match="không phải JSON"):
        loads(b"{")
    assert utf8_problem(b'{"a": "\xe1\xbb\x9e"}') is None


def test_the_document_declares_what_the_edge_answers(apps: dict[str, FastAPI]) -> None:
    for name, app in apps.items():
        for path, item in app.openapi()["paths"].items():
            for method, op in item.items():
                declared = set(op["responses"])
                if "requestBody" in op or method in ("post", "put", "patch"):
                    assert "413" in declared, (name, method, path)
                content = op.get("requestBody", {}).get("content", {})
                if "application/json" in content:
                    assert {"400", "413", "415"} <= declared, (name, method, path)
    decision = apps["routing"].openapi()["paths"]["/v1/routes/{code}/decision"]["post"]
    assert {"400", "413", "415", "422"} <= set(decision["responses"])
    # the event stream: each event's data is a JSON ConsoleEvent, not any string
    stream = apps["console"].openapi()["paths"]["/v1/console/stream"]["get"]
    event = stream["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert event["properties"]["data"]["contentMediaType"] == "application/json"
    assert event["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/ConsoleEvent"
    }
    assert "ConsoleEvent" in apps["console"].openapi()["components"]["schemas"]


async def test_a_query_parameter_without_a_name_is_refused_at_the_edge(client: Any) -> None:
    """``?=false`` (schemathesis found one accepted): 422 before any route runs."""
    r = await client("notification").get("/v1/ops/inbound-rejects?=false")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query"


async def test_a_chunked_body_over_the_limit_is_refused_whatever_the_method(client: Any) -> None:
    """No Content-Length: the edge reads no more than the limit (256 KiB), for a GET with a
    JSON body as for a POST, instead of buffering all of it."""

    async def big() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 65536  # 4 MiB in all

    for method in ("GET", "POST"):
        r = await client("intake").request(
            method, "/v1/procedures", content=big(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413, (method, r.status_code, r.text)


async def test_an_unhandled_error_still_carries_the_security_headers() -> None:
    """Starlette answers a 500 outside every middleware: the handler sets them itself."""
    app = app_of(SPECS["routing"])

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://routing") as c:
        r = await c.get("/boom")
    assert r.status_code == 500 and r.json() == {"detail": "internal error", "errors": []}
    assert_strict(r)
