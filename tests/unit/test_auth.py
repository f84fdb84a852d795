"""Credentials and configuration: no app, broker or database needed."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import HTTPException
from fastapi.routing import APIRoute
from jwt.algorithms import OKPAlgorithm

from services.console.app import SPEC as CONSOLE
from services.consultation.app import SPEC as CONSULTATION
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION
from services.routing.app import SPEC as ROUTING
from services.runtime import auth
from services.runtime.clock import ManualClock
from services.runtime.service import create_app
from services.runtime.settings import DEV_JWT_SECRET, ServiceSettings
from tests.helpers import configure_auth

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
SPECS = (INTAKE, ROUTING, CONSULTATION, NOTIFICATION, CONSOLE)


def _settings(name: str, **kw: Any) -> ServiceSettings:
    s = ServiceSettings.for_service(name)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_services_refuse_the_built_in_secret_outside_development_mode(spec: Any) -> None:
    s = _settings(spec.name, dev_mode=False, jwt_secret=DEV_JWT_SECRET)
    with pytest.raises(auth.InsecureConfiguration, match="built-in"):
        create_app(spec, s)
    with pytest.raises(auth.InsecureConfiguration, match="32"):
        create_app(spec, _settings(spec.name, dev_mode=False, jwt_secret="short"))
    create_app(spec, _settings(spec.name, dev_mode=True))  # development mode: allowed


def test_lookup_sealing_keys_are_required_outside_development_mode() -> None:
    s = configure_auth(_settings("intake"))
    s.lookup_seal_public_key = ""
    with pytest.raises(auth.InsecureConfiguration, match="SEAL"):
        create_app(INTAKE, s)
    n = configure_auth(_settings("notification"))
    n.lookup_seal_private_key = ""
    with pytest.raises(auth.InsecureConfiguration, match="SEAL"):
        create_app(NOTIFICATION, n)


def _paths(app: Any) -> set[str]:
    return set(app.openapi()["paths"])


def test_token_minting_exists_only_in_development_mode() -> None:
    assert "/v1/dev/tokens" in _paths(
        create_app(CONSULTATION, _settings("consultation", dev_mode=True))
    )
    prod = create_app(CONSULTATION, configure_auth(_settings("consultation")))
    assert "/v1/dev/tokens" not in _paths(prod)
    a = auth.Authenticator(configure_auth(_settings("consultation")), lambda: NOW)  # type: ignore[arg-type]
    with pytest.raises(auth.InsecureConfiguration):
        a.mint_dev(agency_id="x", role="operator", person="p")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_openapi_declares_security_and_every_error_answer(spec: Any) -> None:
    doc = create_app(spec, configure_auth(_settings(spec.name))).openapi()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["staffToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["staffToken"]["description"],
    }
    assert "Problem" in doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in ("/health", "/ready", "/metrics"):
                assert "security" not in op
                continue
            assert op.get("security"), f"{method} {path} declares no security"
            # the gateway's webhook: a signature, no roles, so never a 403
            for code in ("401",) if path == "/v1/sms/receipts" else ("401", "403"):
                body = op["responses"][code]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Problem"}, (path, code)
            if "422" in op["responses"] and "portal" not in path:
                body = op["responses"]["422"]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Problem"}, (path, "422")
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def _verifier(**kw: Any) -> auth.TokenVerifier:
    base: dict[str, Any] = {"secret": "s" * 40, "audience": "lienthong", "issuer": "idp"}
    return auth.TokenVerifier(**{**base, **kw})


def _claims(**kw: Any) -> dict[str, Any]:
    return {
        "sub": "Nguyễn Văn A",
        "agency_id": "000.02.30.H29",
        "role": "department_head",
        "aud": "lienthong",
        "iss": "idp",
        "iat": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(hours=1)).timestamp()),
        **kw,
    }


def _verify(v: auth.TokenVerifier, token: str) -> auth.Staff:
    return asyncio.run(v.verify(token, NOW))


def test_hs256_checks_audience_issuer_expiry_and_role() -> None:
    v = _verifier()
    who = _verify(v, jwt.encode(_claims(), "s" * 40, algorithm="HS256"))
    assert (who.agency_id, who.role, who.person) == (
        "000.02.30.H29",
        "department_head",
        "Nguyễn Văn A",
    )
    for bad in (
        _claims(aud="other"),
        _claims(iss="someone"),
        _claims(exp=int(NOW.timestamp())),
        _claims(role="king"),
        {k: v for k, v in _claims().items() if k != "aud"},
    ):
        with pytest.raises(HTTPException) as e:
            _verify(v, jwt.encode(bad, "s" * 40, algorithm="HS256"))
        assert e.value.status_code == 401


def _jwks(key: Ed25519PrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": kid, "alg": "EdDSA", "use": "sig"}]}


def test_eddsa_with_a_jwks_file_and_no_algorithm_confusion(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(_jwks(key, "idp-2026")))
    v = _verifier(secret="", jwks_file=str(path))
    token = jwt.encode(_claims(), key, algorithm="EdDSA", headers={"kid": "idp-2026"})
    assert _verify(v, token).role == "department_head"
    other = Ed25519PrivateKey.generate()
    for bad in (
        jwt.encode(_claims(), other, algorithm="EdDSA", headers={"kid": "idp-2026"}),
        jwt.encode(_claims(), key, algorithm="EdDSA", headers={"kid": "unknown"}),
        jwt.encode(_claims(), "s" * 40, algorithm="HS256"),  # HS256 is off without a secret
        jwt.encode(_claims(), "s" * 64, algorithm="HS384"),
    ):
        with pytest.raises(HTTPException) as e:
            _verify(v, bad)
        assert e.value.status_code == 401


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, Ed25519PrivateKey]]:
    key = Ed25519PrivateKey.generate()
    body = json.dumps(_jwks(key, "k1")).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    server.shutdown()


def test_eddsa_with_keys_from_a_jwks_url(jwks_server: tuple[str, Ed25519PrivateKey]) -> None:
    url, key = jwks_server
    v = _verifier(jwks_url=url)
    token = jwt.encode(_claims(), key, algorithm="EdDSA", headers={"kid": "k1"})
    assert _verify(v, token).agency_id == "000.02.30.H29"
    assert _verify(v, jwt.encode(_claims(), "s" * 40, algorithm="HS256")).role  # both on


def test_portal_credentials_and_tokens() -> None:
    creds = auth.PortalCredentials(auth.parse_clients("dvcqg:s3cret"), timedelta(minutes=15))
    client = creds.check("dvcqg", "s3cret")
    token = creds.mint(client, NOW)
    assert creds.verify(token, NOW + timedelta(minutes=14)) == client
    with pytest.raises(HTTPException):
        creds.verify(token, NOW + timedelta(minutes=15))
    with pytest.raises(HTTPException):
        creds.check("dvcqg", "guess")
    hashed = auth.parse_clients("dvcqg:sha256:" + auth._hash_secret("s3cret"))
    assert auth.PortalCredentials(hashed, timedelta(minutes=1)).check("dvcqg", "s3cret")
    rotated = auth.PortalCredentials(auth.parse_clients("dvcqg:new"), timedelta(minutes=15))
    with pytest.raises(HTTPException):
        rotated.verify(token, NOW)  # a new secret revokes the old tokens


def test_lookup_codes_seal_and_hash() -> None:
    code = auth.new_lookup_code()
    assert len(code) == 14 and code.count("-") == 2
    priv = auth.dev_seal_private_key()
    sealed = auth.seal(auth.seal_public_key(priv), code, "000.00.01.H29-261123-0001")
    assert code not in sealed
    assert auth.unseal(priv, sealed, "000.00.01.H29-261123-0001") == code
    with pytest.raises(InvalidTag):
        auth.unseal(priv, sealed, "000.00.01.H29-261123-0002")  # bound to its dossier
    h = auth.hash_lookup_code("X-1", code)
    assert auth.lookup_matches(h, "X-1", code.lower().replace("-", ""))
    assert not auth.lookup_matches(h, "X-2", code)


def test_masking_keeps_only_what_recognises() -> None:
    a = {
        "name": "Trần Văn Bình",
        "object_type": 1,
        "id_number": "001090001234",
        "phone": "0987654321",
        "email": "binh@example.vn",
        "address": "12 Lê Lợi",
    }
    m = auth.redact({"applicant": a, "recipient": "binh@example.vn", "code": "C"})
    assert m["applicant"] == {
        "name": "T*** V*** B***",
        "object_type": 1,
        "id_number": "*********234",
        "phone": "*******321",
        "email": "b***@example.vn",
        "address": "1*** L*** L***",
    }
    assert m["recipient"] == "b***@example.vn" and m["code"] == "C"


def test_every_route_of_every_service_takes_a_principal() -> None:
    """A cheap guard beside the matrix: each route (but the probes) has a credential
    dependency, so a new route cannot be public by accident."""
    for spec in SPECS:
        app = create_app(spec, configure_auth(_settings(spec.name)))
        for path, ops in app.openapi()["paths"].items():
            if path in ("/health", "/ready", "/metrics"):
                continue
            for op in ops.values():
                assert op.get("security"), (spec.name, path)
        assert not [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/dev/tokens"]


def test_compose_holds_no_secret_and_publishes_on_loopback_only() -> None:
    import yaml

    text = (Path(__file__).resolve().parents[2] / "compose.yaml").read_text("utf-8")
    doc = yaml.safe_load(text)
    for name, svc in doc["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        env = {**doc["x-service"]["environment"], **svc.get("environment", {})}
        for key, value in env.items():
            if any(w in key for w in ("SECRET", "PASSWORD", "PRIVATE", "CLIENTS")):
                assert str(value).startswith("${"), (name, key)
    assert DEV_JWT_SECRET not in text and "change-me" not in text
    # each service connects as its own role; only the db-roles step has the administrator
    for name in ("intake", "routing", "consultation", "notification", "console"):
        env = {**doc["x-service"]["environment"], **doc["services"][name]["environment"]}
        assert "DATABASE_URL" not in env, name
        assert env[f"{name.upper()}_DATABASE_URL"].startswith(f"postgresql://lienthong_{name}:")


def test_a_staff_token_may_not_live_longer_than_the_maximum() -> None:
    """A stolen token is not good for a century: ``exp - iat`` at most the configured
    maximum (12 h by default), ``iat`` and ``exp`` required, ``iat`` not in the future."""
    v = _verifier()
    iat = int(NOW.timestamp())
    assert v.max_lifetime == timedelta(hours=12)
    ok = _claims(exp=iat + 12 * 3600)
    assert _verify(v, jwt.encode(ok, "s" * 40, algorithm="HS256")).role == "department_head"
    century = _claims(exp=int((NOW + timedelta(days=365 * 100)).timestamp()))
    for bad, why in (
        (century, "longer than the 12 h 00 min allowed"),
        (_claims(exp=iat + 12 * 3600 + 1), "longer than"),
        (_claims(iat=iat + 120, exp=iat + 3600), "not yet valid"),
        (_claims(iat=iat - 60, exp=iat - 60), "expired"),
        ({k: x for k, x in _claims().items() if k != "iat"}, "iat"),
        ({k: x for k, x in century.items() if k != "exp"}, "exp"),
        # NaN compares false with everything: it would skip every check above
        (_claims(iat=float("nan"), exp=int(century["exp"])), "finite"),
        (_claims(iat="nan", exp=iat + 3600), "finite"),
        (_claims(exp=True), "finite"),
    ):
        with pytest.raises(HTTPException) as e:
            _verify(v, jwt.encode(bad, "s" * 40, algorithm="HS256"))
        assert e.value.status_code == 401 and why in str(e.value.detail), e.value.detail
    # a little clock skew of the issuer is allowed
    ahead = _claims(iat=iat + 30, exp=iat + 3600)
    assert _verify(v, jwt.encode(ahead, "s" * 40, algorithm="HS256")).role
    short = _verifier(max_lifetime=timedelta(minutes=30))
    with pytest.raises(HTTPException):
        _verify(short, jwt.encode(_claims(), "s" * 40, algorithm="HS256"))  # lives an hour


def test_the_maximum_lifetime_is_configured_and_dev_tokens_keep_within_it() -> None:
    s = _settings("consultation", dev_mode=True, jwt_max_lifetime_s=1800)
    a = auth.Authenticator(s, ManualClock(NOW))
    assert a.tokens.max_lifetime == timedelta(minutes=30)
    token = a.mint_dev(agency_id="000.00.06.H29", role="officer", person="p")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 1800
    assert asyncio.run(a.tokens.verify(token, NOW)).person == "p"
    # the default: 12 h, and development tokens (make run, the CLIs) live exactly that
    d = auth.Authenticator(_settings("consultation", dev_mode=True), ManualClock(NOW))
    claims = jwt.decode(
        d.mint_dev(agency_id="000.00.06.H29", role="officer", person="p"),
        options={"verify_signature": False},
    )
    assert claims["exp"] - claims["iat"] == 12 * 3600 == d.tokens.max_lifetime.total_seconds()
    assert auth.dev_token_lifetime(s) == timedelta(minutes=30)


@pytest.mark.parametrize("spec", (INTAKE, NOTIFICATION), ids=lambda s: s.name)
def test_openapi_declares_the_lookup_codes_answers(spec: Any) -> None:
    """Where a lookup code is taken: 401 for a code that opens nothing (whether or not the
    dossier exists) and 429 with Retry-After for too many wrong ones."""
    doc = create_app(spec, configure_auth(_settings(spec.name))).openapi()
    taking = [
        (path, op)
        for path, ops in doc["paths"].items()
        for op in ops.values()
        if any("lookupCode" in s for s in op.get("security", []))
    ]
    assert len(taking) == 3, [p for p, _ in taking]
    for path, op in taking:
        answers = op["responses"]
        assert "unknown dossier get this same answer" in answers["401"]["description"], path
        assert "Retry-After" in answers["429"]["headers"], path
        assert "wrong lookup codes" in answers["429"]["description"], path
        if "404" in answers:
            assert "staff only" in answers["404"]["description"], path
