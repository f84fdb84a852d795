"""The SMS gateway and the national portal as channels of the sender loops.

Each turns a claimed notification into one call and the answer into an ``Outcome``; no
database here (the loop marks the outcome in its own short transaction). The notification
id is the message's stable id on every channel: the SMS ``client_ref`` and the portal's
``MaThongBao``, so a re-send after a crash between send and mark is recognised.

SMS gateway (``POST {sms_url}/v1/messages``, ``Authorization: Bearer {sms_api_key}``):
``202``/``200`` ``{"id", "status": "accepted"}`` is sent (200: a ``client_ref`` it already
had, same id); ``400 {"error", "field"}`` is the message's permanent failure; 5xx, a
timeout or a refused connection is the gateway being unreachable (retry, not the message's
fault). Its delivery receipts come back to ``POST /v1/sms/receipts`` (``api.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import asyncpg
import httpx

from services.notification import domain
from services.notification.delivery import Inbound, Outcome, Result, TokenBucket
from services.runtime.logging import get_logger
from services.runtime.portal_client import (
    UNREADABLE,
    PortalAnswer,
    PortalClient,
    PortalGarbled,
    PortalUnavailable,
)

log = get_logger(__name__)

MESSAGES_PATH = "/v1/messages"
RECEIPTS_PATH = "/v1/sms/receipts"
"""Where the gateway posts delivery receipts, under this service's ``public_url``."""


_GATEWAY_ID = re.compile(r"[\x21-\x7e]{1,200}")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def sms_outcome(status: int, body: bytes, headers: Mapping[str, str]) -> Outcome:
    """What the gateway's answer to one message means. Pure, so every case is testable."""
    data = _json(body)

    def garbled(what: str) -> Outcome:
        reason = f"HTTP {status}: an answer we do not understand ({what})"
        return Outcome(
            Result.UNREACHABLE,
            reason,
            reject=Inbound("sms-gateway", reason, body, dict(headers), status),
        )

    if 200 <= status < 300:
        if not isinstance(data, dict):
            return garbled("not a JSON object")
        gid = data.get("id")
        if not isinstance(gid, str) or not _GATEWAY_ID.fullmatch(gid):
            return garbled("no message id of printable ASCII")
        if data.get("status", "accepted") != "accepted":
            return garbled(f"status {data.get('status')!r}")
        return Outcome(Result.SENT, None, gid)
    if status == 400:
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            where = data.get("field")
            reason = data["error"] + (f" (field {where})" if where else "")
            return Outcome(Result.FAILED, f"the gateway refused it: {reason}", answer=data)
        text = body[:300].decode("utf-8", errors="replace")
        return Outcome(
            Result.FAILED,
            f"the gateway refused it: HTTP 400 {text}",
            reject=Inbound(
                "sms-gateway", "a refusal we do not understand", body, dict(headers), status
            ),
        )
    if status in (401, 403):
        # our API key: a configuration fault that holds every message, not this one's
        return Outcome(Result.UNREACHABLE, f"HTTP {status}: the gateway refused our API key")
    if status in (404, 405, 408, 429) or status >= 500:
        return Outcome(Result.UNREACHABLE, f"HTTP {status}: {body[:200]!r}")
    answer = data if isinstance(data, dict) else None
    return Outcome(
        Result.FAILED, f"the gateway refused it: HTTP {status} {body[:200]!r}", answer=answer
    )


class SmsSender:
    """The SMS gateway over HTTP, at most ``rate_per_second`` messages a second from this
    sender (a token bucket)."""

    channels = frozenset({domain.SMS})

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        public_url: str = "",
        rate_per_second: float = 20.0,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.api_key = api_key
        self.callback_url = f"{public_url.rstrip('/')}{RECEIPTS_PATH}" if public_url else None
        self.bucket = TokenBucket(rate_per_second)
        self._http = client or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        if self.callback_url is None:
            log.warning("sms_without_receipts", hint="set NOTIFICATION_PUBLIC_URL")

    def payload(self, n: asyncpg.Record) -> dict[str, str]:
        body = {"to": n["recipient"], "text": n["body_text"], "client_ref": str(n["id"])}
        if self.callback_url:
            body["callback_url"] = self.callback_url
        return body

    async def send(self, n: asyncpg.Record) -> Outcome:
        await self.bucket.acquire()
        try:
            r = await self._http.post(
                MESSAGES_PATH,
                json=self.payload(n),
                headers={"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:  # refused, reset, timed out
            return Outcome(Result.UNREACHABLE, f"{type(exc).__name__}: {exc}")
        outcome = sms_outcome(r.status_code, r.content, r.headers)
        if r.status_code in (401, 403):
            log.error("sms_gateway_refused_key", status=r.status_code)
        return outcome

    async def close(self) -> None:
        await self._http.aclose()


# --- the portal's message to the applicant ----------------------------------------------------

PORTAL_SERVICE = "GuiThongBaoNguoiDan"
"""The portal service that posts a message to an applicant's account. UNKNOWN: the real
portal's name for it is not published (the open-source clients we read call only
``DongBoHoSoMC``, ``CapNhatTienDoHoSoMC`` and ``TraCuuHoSo``); this name is ours, and our
simulator must serve it. Change it here, and only here, once the real one is known."""


def portal_data(n: asyncpg.Record) -> list[dict[str, str]]:
    """The message as the portal takes it: our id, the dossier, the applicant's portal
    account, the subject as title and the text form as body. (Rows made when a dossier
    that came in online without an account was addressed by its code carry no account.)"""
    account = "" if n["recipient"] == n["dossier_code"] else n["recipient"]
    return [
        {
            "MaThongBao": str(n["id"]),
            "MaHoSo": n["dossier_code"],
            "MaDoiTuong": account,
            "TieuDe": n["subject"],
            "NoiDung": n["body_text"],
        }
    ]


def portal_outcome(nid: str, answer: PortalAnswer) -> Outcome:
    """``error_code`` 0: the portal holds it (delivered); another code: that message
    failed, with the portal's message; a code that is not a number: not understood."""
    if answer.error_code == UNREADABLE:
        reason = f"an answer we do not understand: error_code {answer.body.get('error_code')!r}"
        body = json.dumps(answer.body, ensure_ascii=False, default=str).encode()
        return Outcome(Result.UNREACHABLE, reason, reject=Inbound("portal", reason, body))
    if answer.ok:
        return Outcome(Result.DELIVERED, None, nid, answer=answer.body)
    reason = f"the portal refused it: {answer.error_code} {answer.message}".strip()
    return Outcome(Result.FAILED, reason, nid, answer=answer.body)


class PortalSender:
    """Messages to applicants on the national portal, through the service's one
    ``PortalClient`` (its session, renewed when old or refused)."""

    channels = frozenset({domain.PORTAL})

    def __init__(self, client: PortalClient) -> None:
        self.client = client

    async def send(self, n: asyncpg.Record) -> Outcome:
        nid = str(n["id"])
        try:
            answer = await self.client.call(PORTAL_SERVICE, data=portal_data(n))
        except PortalGarbled as exc:
            reject = Inbound("portal", str(exc), exc.body, exc.headers, exc.status_code)
            return Outcome(Result.UNREACHABLE, str(exc), reject=reject)
        except PortalUnavailable as exc:
            return Outcome(Result.UNREACHABLE, str(exc))
        return portal_outcome(nid, answer)

    async def close(self) -> None:
        await self.client.close()
