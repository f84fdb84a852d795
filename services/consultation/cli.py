"""Tools for agencies and auditors: ``python -m services.consultation.cli COMMAND``.

- ``keygen``: an Ed25519 key for a signer; writes the private key (PEM) and prints the
  public key, optionally registering it with a running consultation service.
- ``sign``: the JSON body of a signed reply to a request, ready to POST: Ed25519 over the
  reply's RFC 8785 canonical JSON (``domain.canonical_reply``), the form any agency's
  client produces with an RFC 8785 library.
- ``token``: a bearer token for an agency and role (needs the service's JWT secret).
- ``verify-audit``: walks every request's hash chain in the database; exit 1 and the
  first broken link if any.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from contracts.events import Decision
from services.consultation import domain, store
from services.runtime import auth
from services.runtime.settings import ServiceSettings


def keygen(a: argparse.Namespace) -> int:
    key = Ed25519PrivateKey.generate()
    out = Path(a.out or f".run/keys/{a.key_id}.pem")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    out.chmod(0o600)
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    print(json.dumps({"key_id": a.key_id, "public_key": public.decode(), "private_key": str(out)}))
    if a.register:
        r = httpx.post(
            f"{a.register}/v1/signers",
            headers={"authorization": f"Bearer {a.token}"},
            json={
                "key_id": a.key_id,
                "agency_id": a.agency,
                "person": a.person,
                "role": a.role,
                "public_key": public.decode(),
            },
            timeout=10,
        )
        print(r.status_code, r.text, file=sys.stderr)
        return 0 if r.status_code == 201 else 1
    return 0


def sign(a: argparse.Namespace) -> int:
    key = load_pem_private_key(Path(a.key_file).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        print("not an Ed25519 private key", file=sys.stderr)
        return 2
    nonce = a.nonce or uuid.uuid4().hex
    decision = Decision(a.decision)
    # The same RFC 8785 bytes the service verifies (and Node's `canonicalize` produces).
    message = domain.canonical_reply(
        uuid.UUID(a.request), decision, a.conditions, a.reasons, a.key_id, nonce
    )
    print(
        json.dumps(
            {
                "decision": decision.value,
                "conditions": a.conditions,
                "reasons": a.reasons,
                "signer": a.key_id,
                "nonce": nonce,
                "signature": base64.b64encode(key.sign(message)).decode(),
            },
            ensure_ascii=False,
        )
    )
    return 0


def token(a: argparse.Namespace) -> int:
    settings = ServiceSettings.for_service("consultation")
    secret = a.secret or settings.jwt_secret
    print(
        auth.mint(
            secret,
            agency_id=a.agency,
            role=a.role,
            person=a.person,
            now=datetime.now(UTC),
            ttl=auth.dev_token_lifetime(settings),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    )
    return 0


async def _verify(url: str, schema: str) -> int:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        broken = await store.verify_audit(conn)
        rows = await conn.fetchval("SELECT count(*) FROM audit")
    finally:
        await conn.close()
    if broken is None:
        print(f"audit chain intact: {rows} rows")
        return 0
    print(
        f"audit chain BROKEN at request {broken.request_id}, seq {broken.seq} "
        f"(audit row {broken.audit_id}): {broken.reason}"
    )
    return 1


def verify_audit(a: argparse.Namespace) -> int:
    return asyncio.run(_verify(a.database_url, a.schema))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m services.consultation.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="a signing key for an agency's signer")
    k.add_argument("--key-id", required=True)
    k.add_argument("--agency", required=True)
    k.add_argument("--person", required=True)
    k.add_argument("--role", default="department_head")
    k.add_argument("--out")
    k.add_argument("--register", help="consultation URL to register the key with")
    k.add_argument("--token", default="", help="operator token for --register")
    k.set_defaults(run=keygen)
    s = sub.add_parser("sign", help="print a signed reply body")
    s.add_argument("--key-file", required=True)
    s.add_argument("--key-id", required=True)
    s.add_argument("--request", required=True)
    s.add_argument("--decision", required=True, choices=[d.value for d in Decision])
    s.add_argument("--conditions")
    s.add_argument("--reasons")
    s.add_argument("--nonce")
    s.set_defaults(run=sign)
    t = sub.add_parser("token", help="mint a bearer token")
    t.add_argument("--agency", required=True)
    t.add_argument("--role", default="department_head")
    t.add_argument("--person", default="cli")
    t.add_argument("--secret", default=os.environ.get("LIENTHONG_JWT_SECRET"))
    t.set_defaults(run=token)
    v = sub.add_parser("verify-audit", help="verify every request's audit hash chain")
    v.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    v.add_argument("--schema", default="consultation")
    v.set_defaults(run=verify_audit)
    a = p.parse_args(argv)
    if a.command == "verify-audit" and not a.database_url:
        p.error("--database-url (or DATABASE_URL) is required")
    code: int = a.run(a)
    return code


if __name__ == "__main__":
    sys.exit(main())
