"""Who is calling, and what they may do: the plumbing every service's HTTP API shares.

Three kinds of principal:

- ``Staff``: an officer or operator with a JWT bearer token (``sub`` the person,
  ``agency_id``, ``role``; ``aud`` and ``iss`` checked). HS256 with a configured secret for
  development; EdDSA/RS256/ES256 with keys from a JWKS (URL or file) in production.
- ``Applicant``: whoever holds a dossier's lookup code (``X-Lookup-Code``), printed on
  Form 01/02/03; intake keeps only its hash.
- ``PortalClient``: the National Public Service Portal, with client credentials (HTTP Basic,
  or a short-lived token from ``POST /v1/portal/token``).

Routes declare what they need with the FastAPI dependencies built by ``Guards``; the
security schemes and error answers land in each service's OpenAPI document.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import secrets
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    APIKeyHeader,
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)

from services.runtime.clock import Clock
from services.runtime.settings import DEV_JWT_SECRET, ServiceSettings

ALGORITHM = "HS256"
ASYMMETRIC = ("EdDSA", "RS256", "ES256")
AUDIENCE = "lienthong"
ISSUER = "lienthong-dev"
PORTAL_AUDIENCE = "lienthong-portal"
PORTAL_ISSUER = "lienthong-intake"

OPERATOR = "operator"
OFFICER = "officer"
DEPARTMENT_HEAD = "department_head"
AGENCY_HEAD = "agency_head"
COORDINATOR = "coordinator"
ROLES = frozenset({OPERATOR, OFFICER, DEPARTMENT_HEAD, AGENCY_HEAD, COORDINATOR})
HEADS = frozenset({DEPARTMENT_HEAD, AGENCY_HEAD})

LOOKUP_HEADER = "X-Lookup-Code"
DEFAULT_TOKEN_LIFETIME = timedelta(hours=12)
"""What ``mint`` gives a token, and the default longest lifetime a staff token may have."""
CLOCK_SKEW = timedelta(seconds=60)
"""How far in the future a token's ``iat`` may be (the issuer's clock runs ahead)."""
_LOOKUP_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U: read aloud at a desk


class InsecureConfiguration(RuntimeError):
    """A service was asked to start in production with development credentials."""


# --- principals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Staff:
    """An officer of an agency, or an operator of the system, from a verified token."""

    agency_id: str
    role: str
    person: str
    department: str | None = None
    """The department (phòng, ban) of the agency the person works in, if the token says."""
    name: str | None = None
    """The person's full name for forms (Form 05 signs with it), if the token says."""

    @property
    def display_name(self) -> str:
        return self.name or self.person

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR

    @property
    def is_head(self) -> bool:
        return self.role in HEADS

    @property
    def key(self) -> str:
        return f"staff:{self.agency_id}:{self.person}"

    @property
    def actor(self) -> str:
        return f"{self.person}@{self.agency_id} ({self.role})"


Claims = Staff  # the name consultation used first


@dataclass(frozen=True)
class PortalClient:
    client_id: str

    @property
    def key(self) -> str:
        return f"portal:{self.client_id}"

    @property
    def actor(self) -> str:
        return f"portal:{self.client_id}"


@dataclass(frozen=True)
class Applicant:
    """Whoever holds the lookup code of ``dossier_code`` (checked against its hash)."""

    dossier_code: str

    @property
    def key(self) -> str:
        return f"applicant:{self.dossier_code}"

    @property
    def actor(self) -> str:
        return f"applicant:{self.dossier_code}"


Principal = Staff | PortalClient | Applicant


def unauthorized(detail: str, scheme: str = "Bearer") -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": scheme})


def forbidden(detail: str, field: str = "authorization") -> HTTPException:
    return HTTPException(
        403, detail={"detail": detail, "errors": [{"field": field, "reason": detail}]}
    )


# --- staff tokens ----------------------------------------------------------------------


def mint(
    secret: str,
    *,
    agency_id: str,
    role: str,
    person: str,
    now: datetime,
    ttl: timedelta = DEFAULT_TOKEN_LIFETIME,
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    department: str | None = None,
    name: str | None = None,
) -> str:
    """An HS256 staff token (development and tests; production tokens come from an IdP)."""
    claims: dict[str, Any] = {
        "sub": person,
        "agency_id": agency_id,
        "role": role,
        "aud": audience,
        "iss": issuer,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    if department:
        claims["department"] = department
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _check_times(data: dict[str, Any], now: datetime, max_lifetime: timedelta) -> None:
    """``exp``/``iat`` against the service's clock (which tests and demos move): not expired,
    not issued in the future (beyond ``CLOCK_SKEW``), and not meant to live longer than
    ``max_lifetime`` (``exp - iat``), so a stolen token is not good for years."""
    t, exp, iat = now.timestamp(), _instant(data, "exp"), _instant(data, "iat")
    if t >= exp:
        raise jwt.ExpiredSignatureError("Signature has expired")
    if iat > t + CLOCK_SKEW.total_seconds():
        raise jwt.ImmatureSignatureError("The token is not yet valid (iat)")
    if exp <= iat:
        raise jwt.InvalidTokenError("the token expires before it was issued (exp <= iat)")
    if exp - iat > max_lifetime.total_seconds():
        raise jwt.InvalidTokenError(
            f"the token lives {_span(exp - iat)} (exp - iat), longer than the"
            f" {_span(max_lifetime.total_seconds())} allowed"
        )


def _instant(data: dict[str, Any], claim: str) -> float:
    """A NumericDate claim as a finite number of seconds: not a string, not a boolean, not
    NaN or infinite (every comparison with NaN is false, which would skip the checks)."""
    value = data[claim]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise jwt.InvalidTokenError(f"{claim} must be a finite number of seconds")
    return float(value)


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s} s"


class TokenVerifier:
    """Verifies staff tokens: HS256 with the shared secret, or an asymmetric algorithm with
    a key from the JWKS whose ``kid`` the token names. Each algorithm only with its own kind
    of key, so an HS256 token signed with a public key is refused."""

    def __init__(
        self,
        *,
        secret: str,
        audience: str,
        issuer: str,
        jwks_url: str | None = None,
        jwks_file: str | None = None,
        max_lifetime: timedelta = DEFAULT_TOKEN_LIFETIME,
    ) -> None:
        self.secret = secret
        self.audience = audience
        self.issuer = issuer
        self.max_lifetime = max_lifetime
        self._client = jwt.PyJWKClient(jwks_url, lifespan=300, timeout=5) if jwks_url else None
        self._keyset = (
            jwt.PyJWKSet.from_json(Path(jwks_file).read_text("utf-8")) if jwks_file else None
        )

    @property
    def asymmetric(self) -> bool:
        return self._client is not None or self._keyset is not None

    async def _key(self, token: str, alg: str) -> tuple[Any, str]:
        if alg == ALGORITHM:
            if not self.secret:
                raise jwt.InvalidAlgorithmError("HS256 tokens are not accepted here")
            return self.secret, ALGORITHM
        if alg not in ASYMMETRIC or not self.asymmetric:
            raise jwt.InvalidAlgorithmError(f"algorithm {alg} is not accepted")
        if self._keyset is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            try:
                jwk = self._keyset[str(kid)]
            except KeyError:
                raise jwt.InvalidKeyError(f"no key {kid} in the JWKS file") from None
        else:
            assert self._client is not None
            jwk = await asyncio.to_thread(self._client.get_signing_key_from_jwt, token)
        if jwk.algorithm_name != alg:
            raise jwt.InvalidAlgorithmError(f"key {jwk.key_id} is not for {alg}")
        return jwk.key, alg

    async def verify(self, token: str, now: datetime) -> Staff:
        try:
            alg = str(jwt.get_unverified_header(token).get("alg", ""))
            key, algorithm = await self._key(token, alg)
            data = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            _check_times(data, now, self.max_lifetime)
            role = str(data["role"])
            if role not in ROLES:
                raise jwt.InvalidTokenError(f"unknown role {role!r}")
            department, name = data.get("department"), data.get("name")
            return Staff(
                agency_id=str(data["agency_id"]),
                role=role,
                person=str(data["sub"]),
                department=None if department is None else str(department)[:40],
                name=None if name is None else unicodedata.normalize("NFC", str(name))[:200],
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            raise unauthorized(f"invalid token: {exc}") from None


# --- the portal's client credentials ---------------------------------------------------


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_clients(spec: str) -> dict[str, str]:
    """``id:secret,id2:sha256:<hex>`` -> client id to the SHA-256 of its secret."""
    clients: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        cid, _, secret = item.partition(":")
        if not cid or not secret:
            raise ValueError(f"portal client {item!r}: expected id:secret")
        clients[cid] = secret[7:].lower() if secret.startswith("sha256:") else _hash_secret(secret)
    return clients


class PortalCredentials:
    """Client ids with hashed secrets; tokens are HS256 with a key derived from the
    client's secret hash, so every replica verifies them and a new secret revokes them."""

    def __init__(self, clients: dict[str, str], ttl: timedelta) -> None:
        self.clients = clients
        self.ttl = ttl

    def _key(self, client_id: str) -> bytes:
        return hmac.new(bytes.fromhex(self.clients[client_id]), b"portal-token", "sha256").digest()

    def check(self, client_id: str, secret: str) -> PortalClient:
        known = self.clients.get(client_id)
        given = _hash_secret(secret)
        if known is None or not hmac.compare_digest(known, given):
            raise unauthorized("invalid client credentials", "Basic")
        return PortalClient(client_id)

    def mint(self, client: PortalClient, now: datetime) -> str:
        return jwt.encode(
            {
                "sub": client.client_id,
                "aud": PORTAL_AUDIENCE,
                "iss": PORTAL_ISSUER,
                "iat": int(now.timestamp()),
                "exp": int((now + self.ttl).timestamp()),
            },
            self._key(client.client_id),
            algorithm=ALGORITHM,
        )

    def verify(self, token: str, now: datetime) -> PortalClient:
        try:
            sub = str(jwt.decode(token, options={"verify_signature": False}).get("sub", ""))
            if sub not in self.clients:
                raise jwt.InvalidTokenError("unknown client")
            data = jwt.decode(
                token,
                self._key(sub),
                algorithms=[ALGORITHM],
                audience=PORTAL_AUDIENCE,
                issuer=PORTAL_ISSUER,
                options={
                    "require": ["exp", "iat", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            _check_times(data, now, self.ttl)
            return PortalClient(sub)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
            raise unauthorized(f"invalid portal token: {exc}") from None


DEV_PORTAL_CLIENT = "dvcqg-dev"
DEV_PORTAL_SECRET = "dev-portal-secret"


# --- the applicant's lookup code -------------------------------------------------------


def new_lookup_code() -> str:
    """12 characters of a 30-letter alphabet (about 59 bits), shown as XXXX-XXXX-XXXX."""
    raw = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalize_lookup_code(code: str) -> str:
    raw = "".join(c for c in code.upper() if c.isalnum())
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def hash_lookup_code(dossier_code: str, lookup_code: str) -> str:
    """What intake and notification store: SHA-256 over the dossier code and the secret."""
    norm = normalize_lookup_code(lookup_code)
    return hashlib.sha256(f"{dossier_code}\x00{norm}".encode()).hexdigest()


def lookup_matches(stored_hash: str | None, dossier_code: str, lookup_code: str) -> bool:
    if not stored_hash:
        return False
    return hmac.compare_digest(stored_hash, hash_lookup_code(dossier_code, lookup_code))


# The lookup code travels to notification (which prints it on Form 01) sealed with
# notification's X25519 public key: intake's outbox and every topic hold only ciphertext.
_DEV_SEAL_SEED = hashlib.sha256(b"lienthong development lookup seal").digest()


def dev_seal_private_key() -> str:
    return base64.b64encode(_DEV_SEAL_SEED).decode()


def seal_public_key(private_b64: str) -> str:
    priv = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return base64.b64encode(priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _seal_key(shared: bytes, eph: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"lienthong-lookup" + eph + recipient
    ).derive(shared)


def seal(public_b64: str, plaintext: str, context: str) -> str:
    """ECIES: ephemeral X25519, HKDF-SHA256, AES-GCM bound to ``context`` (the dossier code)."""
    recipient = base64.b64decode(public_b64)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _seal_key(eph.exchange(X25519PublicKey.from_public_bytes(recipient)), eph_pub, recipient)
    nonce = secrets.token_bytes(12)
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), context.encode())
    return base64.b64encode(eph_pub + nonce + ct).decode()


def unseal(private_b64: str, sealed: str, context: str) -> str:
    priv = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    me = priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = base64.b64decode(sealed)
    eph_pub, nonce, ct = blob[:32], blob[32:44], blob[44:]
    key = _seal_key(priv.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, me)
    return AESGCM(key).decrypt(nonce, ct, context.encode()).decode()


def seal_key_for_intake(settings: ServiceSettings) -> str:
    """The public key intake seals lookup codes with; the development pair only in dev mode."""
    if settings.lookup_seal_public_key:
        return settings.lookup_seal_public_key
    if settings.dev_mode:
        return seal_public_key(dev_seal_private_key())
    raise InsecureConfiguration("set INTAKE_LOOKUP_SEAL_PUBLIC_KEY (seal-keygen)")


def unseal_key_for_notification(settings: ServiceSettings) -> str:
    if settings.lookup_seal_private_key:
        return settings.lookup_seal_private_key
    if settings.dev_mode:
        return dev_seal_private_key()
    raise InsecureConfiguration("set NOTIFICATION_LOOKUP_SEAL_PRIVATE_KEY (seal-keygen)")


# --- per-principal rate limit and audit of personal-data reads ---------------------------


async def rate_limit(pool: asyncpg.Pool, key: str, limit: int, now: datetime) -> int | None:
    """Count one request of ``key`` in the current minute (shared by every replica through
    the ``rate_limits`` table); seconds to wait if over ``limit``, else None."""
    window = now.replace(second=0, microsecond=0)
    n: int = await pool.fetchval(
        "INSERT INTO rate_limits(principal, window_start, n) VALUES ($1, $2, 1)"
        " ON CONFLICT (principal, window_start) DO UPDATE SET n = rate_limits.n + 1"
        " RETURNING n",
        key,
        window,
    )
    if n == 1:
        await pool.execute(
            "DELETE FROM rate_limits WHERE window_start < $1", window - timedelta(hours=1)
        )
    if n <= limit:
        return None
    return max(1, int((window + timedelta(minutes=1) - now).total_seconds() + 0.999))


# --- the applicant's door: one answer for a wrong code and an unknown dossier, limited ---

StoredHash = Callable[[str], Awaitable[str | None]]
"""The lookup-code hash a service keeps for a dossier code; None if it knows no such dossier."""

_NO_DOSSIER_HASH = hashlib.sha256(b"lienthong: no such dossier").hexdigest()
"""Compared with when the dossier is unknown, so both failures cost the same hash work."""
_KEY_MAX = 100  # a path can name a 5,000-character "code": it is counted, not stored whole

WRONG_LOOKUP = "Mã tra cứu không đúng hoặc không có hồ sơ này"


def wrong_lookup() -> HTTPException:
    """The one answer to a lookup code that opens nothing: wrong code or no such dossier."""
    return HTTPException(
        401,
        detail={
            "detail": WRONG_LOOKUP,
            "errors": [{"field": f"header.{LOOKUP_HEADER}", "reason": WRONG_LOOKUP}],
        },
        headers={"WWW-Authenticate": LOOKUP_HEADER},
    )


def too_many_guesses(retry_after: int) -> HTTPException:
    reason = (
        "Nhập sai mã tra cứu quá nhiều lần (cho hồ sơ này hoặc từ địa chỉ này);"
        f" vui lòng thử lại sau {retry_after} giây"
    )
    return HTTPException(
        429,
        detail={
            "detail": reason,
            "errors": [{"field": f"header.{LOOKUP_HEADER}", "reason": reason}],
        },
        headers={"Retry-After": str(retry_after)},
    )


@dataclass(frozen=True)
class GuessLimits:
    """Wrong lookup codes allowed per dossier and per client address within ``window``."""

    per_dossier: int
    per_client: int
    window: timedelta

    @classmethod
    def of(cls, settings: ServiceSettings) -> GuessLimits:
        return cls(
            per_dossier=settings.lookup_guesses_per_dossier,
            per_client=settings.lookup_guesses_per_client,
            window=timedelta(seconds=settings.lookup_guess_window_s),
        )


class LookupDoor:
    """Checks an applicant's lookup code for a dossier, for every service that takes one.

    A wrong code and an unknown dossier get the same 401 (same body, same hash work), so
    the door tells nobody which dossiers exist. Each such failure is counted twice in the
    ``lookup_failures`` table (shared by the replicas): under the dossier's code and under
    the client's address. Past ``per_dossier`` (or ``per_client``) failures within the
    window, every attempt is answered 429 with Retry-After, the right code too, without
    being checked or counted, until the oldest failure leaves the window.

    Every guess is first written down as a failure, then the failures are counted, and
    the row is taken back if the code was right or the guess is refused: of guesses racing
    on any replicas, each one counted later sees the rows of those counted before it, so
    no more than the limit are ever checked (a lock would let a flood of guesses hold the
    pool's connections)."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        stored_hash: StoredHash,
        limits: GuessLimits,
        now: Callable[[], datetime],
    ) -> None:
        self.pool = pool
        self.stored_hash = stored_hash
        self.limits = limits
        self.now = now

    def _keys(self, dossier_code: str, client: str) -> dict[str, int]:
        return {
            f"dossier:{dossier_code[:_KEY_MAX]}": self.limits.per_dossier,
            f"client:{client[:_KEY_MAX]}": self.limits.per_client,
        }

    async def open(self, dossier_code: str, lookup_code: str, client: str) -> Applicant:
        """The applicant of ``dossier_code`` if ``lookup_code`` is its code; else 401
        (counted), or 429 when too many wrong codes came for the dossier or from ``client``."""
        pool, now, window = self.pool(), self.now(), self.limits.window
        keys = self._keys(dossier_code, client)
        mine = [
            r["id"]
            for r in await pool.fetch(
                "WITH gone AS (DELETE FROM lookup_failures WHERE at <= $3)"
                " INSERT INTO lookup_failures(key, at) SELECT unnest($1::text[]), $2"
                " RETURNING id",
                list(keys),
                now,
                now - window,
            )
        ]
        earlier = await pool.fetch(
            "SELECT key, at FROM lookup_failures WHERE key = ANY($1::text[]) AND at > $2"
            " AND id <> ALL($3::bigint[]) ORDER BY at DESC",
            list(keys),
            now - window,
            mine,
        )
        seen: dict[str, list[datetime]] = {}
        for r in earlier:
            seen.setdefault(r["key"], []).append(r["at"])
        waits = [  # until the limit-th latest failure leaves the window
            (ats[limit - 1] + window - now).total_seconds()
            for key, limit in keys.items()
            if len(ats := seen.get(key, [])) >= limit
        ]
        if waits:
            await pool.execute("DELETE FROM lookup_failures WHERE id = ANY($1::bigint[])", mine)
            retry = max(1, min(int(window.total_seconds()), int(max(waits) + 0.999)))
            raise too_many_guesses(retry)
        stored = await self.stored_hash(dossier_code)
        matches = lookup_matches(stored or _NO_DOSSIER_HASH, dossier_code, lookup_code)
        if matches and stored:
            await pool.execute("DELETE FROM lookup_failures WHERE id = ANY($1::bigint[])", mine)
            return Applicant(dossier_code)
        raise wrong_lookup()


def client_address(request: Request) -> str:
    """The caller's address as the server sees it (behind a reverse proxy: the address it
    forwards, when uvicorn trusts it, FORWARDED_ALLOW_IPS)."""
    return request.client.host if request.client else "unknown"


async def audit_read(
    conn: asyncpg.Connection | asyncpg.Pool,
    who: Staff,
    dossier_code: str,
    endpoint: str,
    at: datetime,
) -> None:
    """One row per read of personal data by an officer or operator (table ``pii_reads``)."""
    await conn.execute(
        "INSERT INTO pii_reads(at, person, role, agency_id, dossier_code, endpoint)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        at,
        who.person,
        who.role,
        who.agency_id,
        dossier_code,
        endpoint,
    )


# --- the authenticator and the route guards ------------------------------------------


def dev_token_lifetime(settings: ServiceSettings) -> timedelta:
    """How long development tokens live: 12 hours, or the maximum a service accepts
    (``LIENTHONG_JWT_MAX_LIFETIME_S``) if that is shorter."""
    return min(DEFAULT_TOKEN_LIFETIME, timedelta(seconds=settings.jwt_max_lifetime_s))


def check_configuration(settings: ServiceSettings) -> None:
    """Refuse to run outside development mode with the built-in secret (or none)."""
    if settings.dev_mode:
        return
    if settings.jwt_secret == DEV_JWT_SECRET:
        raise InsecureConfiguration(
            "the built-in development JWT secret is set: configure LIENTHONG_JWT_SECRET"
            " (32+ characters) or LIENTHONG_JWKS_URL/LIENTHONG_JWKS_FILE, or run with"
            " LIENTHONG_DEV_MODE=1 on a development machine"
        )
    if settings.jwt_secret and len(settings.jwt_secret) < 32:
        raise InsecureConfiguration("LIENTHONG_JWT_SECRET must have at least 32 characters")
    if not settings.jwt_secret and not (settings.jwks_url or settings.jwks_file):
        raise InsecureConfiguration("no way to verify tokens: set a JWT secret or a JWKS source")


class Authenticator:
    """Turns credentials into principals for one service."""

    def __init__(self, settings: ServiceSettings, clock: Clock) -> None:
        check_configuration(settings)
        self.settings = settings
        self.clock = clock
        self.tokens = TokenVerifier(
            secret=settings.jwt_secret,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            jwks_url=settings.jwks_url,
            jwks_file=settings.jwks_file,
            max_lifetime=timedelta(seconds=settings.jwt_max_lifetime_s),
        )
        clients = parse_clients(settings.portal_clients)
        if not clients and settings.dev_mode:
            clients = parse_clients(f"{DEV_PORTAL_CLIENT}:{DEV_PORTAL_SECRET}")
        self.portal = PortalCredentials(clients, timedelta(seconds=settings.portal_token_ttl_s))

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def dev_token_lifetime(self) -> timedelta:
        return dev_token_lifetime(self.settings)

    def mint_dev(
        self, *, agency_id: str, role: str, person: str, department: str | None = None
    ) -> str:
        """Development mode only: a staff token signed with the configured secret, living
        12 hours or the configured maximum lifetime if shorter."""
        if not self.settings.dev_mode:
            raise InsecureConfiguration("token minting exists only in development mode")
        return mint(
            self.settings.jwt_secret,
            agency_id=agency_id,
            role=role,
            person=person,
            now=self.now(),
            ttl=self.dev_token_lifetime,
            audience=self.settings.jwt_audience,
            issuer=self.settings.jwt_issuer,
            department=department,
            name=person,
        )


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="staffToken",
    bearerFormat="JWT",
    description="Officers and operators: a JWT with sub, agency_id, role, aud and iss.",
)
_portal_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="portalToken",
    description="The national portal: a token from POST /v1/portal/token.",
)
_portal_basic = HTTPBasic(
    auto_error=False,
    scheme_name="portalClient",
    description="The national portal: its client id and secret.",
)
_lookup = APIKeyHeader(
    name=LOOKUP_HEADER,
    auto_error=False,
    scheme_name="lookupCode",
    description="The applicant: the dossier's lookup code printed on Form 01/02/03.",
)

BearerCred = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
PortalBearerCred = Annotated[HTTPAuthorizationCredentials | None, Depends(_portal_bearer)]
BasicCred = Annotated[HTTPBasicCredentials | None, Depends(_portal_basic)]
LookupCred = Annotated[str | None, Depends(_lookup)]


@dataclass(frozen=True)
class Guards:
    """FastAPI dependencies, one per kind of principal a route accepts."""

    auth: Authenticator

    def staff(self, roles: Iterable[str] | None = None) -> Callable[..., Awaitable[Staff]]:
        """A valid staff token (optionally of one of ``roles``); 401 without, 403 if the
        role is not allowed."""
        allowed = frozenset(roles) if roles is not None else None
        auth = self.auth

        async def dependency(cred: BearerCred) -> Staff:
            if cred is None or cred.scheme.lower() != "bearer":
                raise unauthorized("missing bearer token")
            who = await auth.tokens.verify(cred.credentials, auth.now())
            if allowed is not None and who.role not in allowed:
                raise forbidden(f"role {who.role} may not do this", "role")
            return who

        return dependency

    def staff_or_portal(self) -> Callable[..., Awaitable[Staff | PortalClient]]:
        """Any staff token, or the portal's credentials (read-only catalogue)."""
        auth = self.auth

        async def dependency(
            cred: BearerCred, portal_cred: PortalBearerCred, basic: BasicCred
        ) -> Staff | PortalClient:
            if basic is not None:
                return auth.portal.check(basic.username, basic.password)
            if cred is None:
                raise unauthorized("missing credentials")
            try:
                return await auth.tokens.verify(cred.credentials, auth.now())
            except HTTPException:
                return auth.portal.verify(cred.credentials, auth.now())

        return dependency

    def portal(self) -> Callable[..., Awaitable[PortalClient]]:
        """The portal only: HTTP Basic client credentials or a portal token; a staff token is
        recognised and refused with 403."""
        auth = self.auth

        async def dependency(cred: PortalBearerCred, basic: BasicCred) -> PortalClient:
            if basic is not None:
                return auth.portal.check(basic.username, basic.password)
            if cred is None:
                raise unauthorized("missing client credentials", "Basic")
            try:
                return auth.portal.verify(cred.credentials, auth.now())
            except HTTPException:
                await auth.tokens.verify(cred.credentials, auth.now())  # 401 if not staff
                raise forbidden("the portal's endpoints are for the portal client") from None

        return dependency

    def staff_or_applicant(self, door: LookupDoor) -> Callable[..., Awaitable[Staff | Applicant]]:
        """A staff token, or the lookup code of the dossier named by the path's ``code``."""

        async def dependency(
            code: str, cred: BearerCred, lookup: LookupCred, request: Request
        ) -> Staff | Applicant:
            return await self.resolve(code, cred, lookup, door, client_address(request))

        return dependency

    async def resolve(
        self,
        dossier_code: str,
        cred: HTTPAuthorizationCredentials | None,
        lookup: str | None,
        door: LookupDoor,
        client: str,
    ) -> Staff | Applicant:
        """A staff token if one is given, else the applicant's lookup code for the dossier
        (one 401 for a wrong code and an unknown dossier; 429 past the guess limits)."""
        if cred is not None:
            return await self.auth.tokens.verify(cred.credentials, self.auth.now())
        if lookup:
            return await door.open(dossier_code, lookup, client)
        raise unauthorized("missing bearer token or lookup code")


def require_agency(who: Staff, agencies: Iterable[str | None], *, operators: bool) -> None:
    """403 unless the caller is an operator (when ``operators``) or of one of ``agencies``."""
    if who.is_operator:
        if operators:
            return
        raise forbidden("operators may not do this", "role")
    if who.agency_id not in {a for a in agencies if a}:
        raise forbidden("this dossier belongs to another agency", "agency")


_PROBLEM_REF = "#/components/schemas/Problem"
_DESCRIPTIONS = {
    400: "Bad request",
    401: "No credentials, or invalid, expired or wrong-audience ones",
    403: "Authenticated, but this caller may not do this (role or agency)",
    404: "Not found",
    409: "Conflicts with the current state",
    422: "Invalid input: which field, and why",
    429: "Too many requests from this caller: retry after Retry-After seconds",
    503: "Temporarily unable to serve",
}


_LOOKUP_DESCRIPTIONS = {
    401: "No credentials, or invalid, expired or wrong-audience ones; or a lookup code that"
    " opens nothing: a wrong code and an unknown dossier get this same answer",
    404: "Not found (staff only: with a lookup code an unknown dossier answers 401)",
    429: "Too many wrong lookup codes for this dossier or from this address (counted per"
    " dossier and per client over a sliding window): retry after Retry-After seconds",
}


def responses(
    *codes: int, non_json_route: bool = False, lookup: bool = False
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error answers a route gives, with the real body model
    (``{detail, errors: [{field, reason}]}``) and the headers that come with 401 and 429.
    A route whose success is not JSON (an HTML page) still answers errors in JSON.
    ``lookup``: the route takes the applicant's lookup code (``X-Lookup-Code``), so 401
    also means a code that opens nothing, and 429 too many wrong ones (always declared)."""
    from contracts.api import Problem

    if lookup:
        codes = tuple(sorted({*codes, 401, 429}))
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = (
            {"content": {"application/json": {"schema": {"$ref": _PROBLEM_REF}}}}
            if non_json_route
            else {"model": Problem}
        )
        entry["description"] = (
            _LOOKUP_DESCRIPTIONS.get(code, _DESCRIPTIONS[code]) if lookup else _DESCRIPTIONS[code]
        )
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "scheme"}
            }
        if code == 429:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        out[code] = entry
    return out


# --- what a caller may see of an applicant ---------------------------------------------

PERSONAL_KEYS = frozenset({"name", "id_number", "phone", "email", "address", "birth_date"})


def mask(value: Any) -> Any:
    """Keep enough to recognise, nothing to identify: initials, last three digits, domain."""
    if value is None:
        return None
    s = str(value)
    if "@" in s:
        local, _, domain = s.partition("@")
        return f"{local[:1]}***@{domain}"
    if s.replace("-", "").replace("+", "").isdigit():
        return "*" * max(0, len(s) - 3) + s[-3:]
    return " ".join(f"{w[:1]}***" for w in s.split()) or "***"


def redact_applicant(applicant: dict[str, Any]) -> dict[str, Any]:
    return {k: (mask(v) if k in PERSONAL_KEYS else v) for k, v in applicant.items()}


def redact(data: Any) -> Any:
    """Every ``applicant`` object and ``recipient`` inside ``data``, masked."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            if k == "applicant" and isinstance(v, dict):
                out[k] = redact_applicant(v)
            elif k == "recipient":
                out[k] = mask(v)
            else:
                out[k] = redact(v)
        return out
    if isinstance(data, list):
        return [redact(x) for x in data]
    return data


def main() -> None:  # pragma: no cover - a tool for operators
    """``python -m services.runtime.auth seal-keygen``: a lookup-code sealing key pair."""
    import sys

    if sys.argv[1:] != ["seal-keygen"]:
        print("usage: python -m services.runtime.auth seal-keygen", file=sys.stderr)
        raise SystemExit(2)
    priv = base64.b64encode(secrets.token_bytes(32)).decode()
    print(f"NOTIFICATION_LOOKUP_SEAL_PRIVATE_KEY={priv}")
    print(f"INTAKE_LOOKUP_SEAL_PUBLIC_KEY={seal_public_key(priv)}")


if __name__ == "__main__":  # pragma: no cover
    main()
