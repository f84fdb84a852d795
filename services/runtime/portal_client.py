"""The National Public Service Portal's (DVCQG) service API, as local systems call it.

No official public specification exists; this follows what open-source clients do (the
OpenCPS integration, ``DVCQGIntegrationActionImpl``, and others): log in with the local
system's credentials for a ``session``, then post every call to one service endpoint with
``{"session", "madonvi", "service": <name>, ...}``; the portal answers
``{"error_code", "message", ...}``, ``error_code`` 0 meaning success. What is not known is
said where it is used (the real paths, the token's lifetime, the codes besides 0).

One client per service; intake syncs dossiers (``DongBoHoSoMC``, ``CapNhatTienDoHoSoMC``,
``TraCuuHoSo``), notification posts messages to applicants. No call is ever made inside a
database transaction: callers claim, call, then mark.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from services.runtime.logging import get_logger

log = get_logger(__name__)

# The paths under the portal's base URL. UNKNOWN for the real portal: OpenCPS reads them
# from its configuration (``auth_endpoint``, ``integration_endpoint``) and no public value
# was found; our simulator (deploy/simulators/portal.py) serves these.
AUTH_PATH = "/api/auth"
SERVICE_PATH = "/api/service"

SUCCESS = 0
UNREADABLE = -9999
"""What ``_error_code`` makes of an ``error_code`` that is not a number."""
SESSION_INVALID = -2
"""The simulator's code for an unknown or expired session (the real one is UNKNOWN)."""


class PortalUnavailable(Exception):
    """The portal could not be reached or did not answer properly: retry later; not the
    record's fault (connection refused, timeout, 5xx, an answer that is not JSON)."""


class PortalGarbled(PortalUnavailable):
    """The portal answered, but not in its envelope (not JSON, or no ``error_code``): a
    ``PortalUnavailable`` that keeps the whole answer (``status_code``, ``headers``,
    ``body``) so that a caller can store it for inspection."""

    def __init__(
        self, message: str, *, status_code: int, headers: dict[str, str], body: bytes
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers
        self.body = body


@dataclass(frozen=True)
class PortalAnswer:
    """What the portal said: ``error_code`` (0 is success), its message, the whole body."""

    error_code: int
    message: str
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.error_code == SUCCESS


@dataclass(frozen=True)
class PortalConfig:
    """Where and who: the base URL, the local system's account, its unit code
    (``madonvi``) and the ``dstcode`` header OpenCPS sends on every call."""

    base_url: str
    username: str
    password: str
    unit_code: str
    dstcode: str = ""
    timeout_s: float = 10.0
    session_ttl_s: float = 600.0
    """The portal returns no expiry; like OpenCPS we log in again after 10 minutes, and at
    once when the portal says the session is no longer valid."""


def _garbled(r: httpx.Response, what: str) -> PortalGarbled:
    return PortalGarbled(
        f"HTTP {r.status_code}: {what}",
        status_code=r.status_code,
        headers=dict(r.headers),
        body=r.content,
    )


def _error_code(value: Any) -> int:
    """``error_code`` as a number: open-source clients see both 0 and "0" (and once "00")."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return UNREADABLE


class PortalClient:
    """Logs in, keeps the session, calls services; one HTTP connection pool per client."""

    def __init__(self, config: PortalConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = client or httpx.AsyncClient(base_url=config.base_url, timeout=config.timeout_s)
        self._session: str | None = None
        self._session_at = 0.0
        self._lock = asyncio.Lock()
        self.logins = 0

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.dstcode:
            headers["dstcode"] = self.config.dstcode
        return headers

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            r = await self._http.post(path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:  # refused, reset, timed out
            raise PortalUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise PortalUnavailable(f"HTTP {r.status_code}: {r.text[:200]}")
        try:
            data = r.json()
        except ValueError:
            raise _garbled(r, f"an answer that is not JSON: {r.text[:200]!r}") from None
        if not isinstance(data, dict) or "error_code" not in data:
            raise _garbled(r, f"an answer we do not understand: {data!r:.200}")
        return data

    async def session(self, *, fresh: bool = False) -> str:
        """The current session, logging in when there is none, it is old, or ``fresh``."""
        async with self._lock:
            old = time.monotonic() - self._session_at > self.config.session_ttl_s
            if self._session is None or old or fresh:
                body = {"username": self.config.username, "password": self.config.password}
                data = await self._post(AUTH_PATH, body)
                code = _error_code(data.get("error_code"))
                session = data.get("session")
                if code != SUCCESS or not isinstance(session, str) or not session:
                    raise PortalUnavailable(f"login refused: {code} {data.get('message')!r}")
                self._session, self._session_at = session, time.monotonic()
                self.logins += 1
            return self._session

    async def call(self, service: str, **params: Any) -> PortalAnswer:
        """Call ``service``; a session the portal no longer knows is renewed once."""
        for attempt in (0, 1):
            session = await self.session(fresh=attempt == 1)
            body = {
                "session": session,
                "madonvi": self.config.unit_code,
                "service": service,
                **params,
            }
            data = await self._post(SERVICE_PATH, body)
            answer = PortalAnswer(
                _error_code(data.get("error_code")), str(data.get("message") or ""), data
            )
            if answer.error_code == SESSION_INVALID and attempt == 0:
                log.info("portal_session_renewed", service=service)
                continue
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        await self._http.aclose()
