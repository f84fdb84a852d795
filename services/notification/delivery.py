"""Delivery: email over SMTP, outside any database transaction.

A sender loop claims due notifications in a short transaction (status ``sending`` with a
lease; ``FOR UPDATE SKIP LOCKED``, so replicas share the work), sends them with no
transaction open, and marks each in another short transaction: ``sent`` (with its
``notification.sent`` event), ``pending`` again with a later due time (backoff), or
``failed`` with the reason. A failed commit therefore never re-sends a batch, and a crash
between send and mark only re-sends that message once its lease ends, with the same
Message-ID (``<notification id@sender domain>``) so a mailbox recognises it.

The SMTP session is reset (RSET) after every refused message and dropped after any
connection or protocol error, so one bad message never affects the next applicant's.
Desk and post notices are handed over by people: they are marked sent without SMTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from contracts.events import NotificationSent
from services.notification import store
from services.runtime.logging import get_logger
from services.runtime.outbox import Waker
from services.runtime.service import Runtime

log = get_logger(__name__)

DELIVERIES = Counter(
    "lienthong_notification_deliveries_total",
    "Delivery attempts of notifications by channel and result",
    ["channel", "result"],
)


class Result(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # the message's own transient failure (a 4xx answer): counts an attempt
    FAILED = "failed"  # permanent: a 5xx answer, an address or header that cannot be sent
    UNREACHABLE = "unreachable"  # the server cannot be reached: not the message's fault


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str | None = None
    message_id: str | None = None


class SmtpSender:
    """One kept-open SMTP connection, reset after a refused message, dropped after an
    error on the connection itself (the next send connects again)."""

    def __init__(self, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.domain = sender.rpartition("@")[2] or "lienthong.local"
        self.timeout = timeout
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def message_id(self, nid: uuid.UUID) -> str:
        """Stable per notification: a re-send after a crash carries the same id."""
        return f"<{nid}@{self.domain}>"

    def build(self, n: asyncpg.Record) -> EmailMessage:
        """The email of notification ``n``; ValueError if a header cannot be written."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = n["recipient"]
        msg["Subject"] = n["subject"]
        msg["Date"] = format_datetime(n["created_at"])
        msg["Message-ID"] = self.message_id(n["id"])
        msg["X-Lienthong-Notification"] = str(n["id"])
        msg["X-Lienthong-Dossier"] = n["dossier_code"]
        msg.set_content(n["body_text"])
        msg.add_alternative(n["body_html"], subtype="html")
        return msg

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is None or not self._client.is_connected:
            client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
            )
            await client.connect()
            self._client = client
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def _reset(self) -> None:
        """RSET after a refused message; a session that cannot reset is dropped."""
        if self._client is None:
            return
        try:
            await self._client.rset()
        except Exception:
            await self._drop()

    async def close(self) -> None:
        if self._client is not None and self._client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._client.quit()
        self._client = None

    async def send(self, n: asyncpg.Record) -> Outcome:
        """Send notification ``n`` and say what happened; never raises for a bad message."""
        mid = self.message_id(n["id"])
        try:
            msg = self.build(n)
        except (ValueError, TypeError) as exc:
            return Outcome(Result.FAILED, f"cannot write the message: {exc}", mid)
        async with self._lock:
            for fresh in (False, True):
                reused = self._client is not None and self._client.is_connected
                try:
                    await (await self._connected()).send_message(msg)
                    return Outcome(Result.SENT, None, mid)
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    await self._reset()
                    codes = [e.code for e in exc.recipients]
                    detail = "; ".join(f"{e.code} {e.message}" for e in exc.recipients)
                    permanent = all(c >= 500 for c in codes)
                    return Outcome(Result.FAILED if permanent else Result.RETRY, detail, mid)
                except aiosmtplib.SMTPNotSupported as exc:
                    await self._reset()
                    return Outcome(Result.FAILED, str(exc), mid)
                except (
                    aiosmtplib.SMTPServerDisconnected,
                    aiosmtplib.SMTPConnectError,
                    aiosmtplib.SMTPConnectTimeoutError,
                    aiosmtplib.SMTPTimeoutError,
                    aiosmtplib.SMTPReadTimeoutError,
                    OSError,
                ) as exc:
                    await self._drop()
                    if reused and not fresh:
                        continue  # the server hung up an idle connection: once more
                    return Outcome(Result.UNREACHABLE, f"{type(exc).__name__}: {exc}", mid)
                except aiosmtplib.SMTPResponseException as exc:
                    await self._reset()
                    result = Result.FAILED if exc.code >= 500 else Result.RETRY
                    return Outcome(result, f"{exc.code} {exc.message}", mid)
                except (ValueError, UnicodeError) as exc:
                    await self._reset()
                    return Outcome(Result.FAILED, f"cannot send: {exc}", mid)
                except aiosmtplib.SMTPException as exc:
                    await self._drop()
                    return Outcome(Result.RETRY, f"{type(exc).__name__}: {exc}", mid)
        return Outcome(Result.UNREACHABLE, "no connection", mid)  # pragma: no cover


@dataclass(frozen=True)
class DeliveryPolicy:
    """How many to claim at once, how long a claim holds, how often and how late to retry."""

    batch_size: int = 20
    lease: timedelta = timedelta(seconds=30)  # > one send's worst case (2 x SMTP timeout)
    max_attempts: int = 8
    retry_base: timedelta = timedelta(seconds=2)
    retry_max: timedelta = timedelta(minutes=10)
    poll_interval: float = 0.5

    def backoff(self, attempts: int) -> timedelta:
        """2, 4, 8, ... times the base after each failed attempt, up to ``retry_max``."""
        factor: int = 2 ** max(0, attempts - 1)
        return min(self.retry_base * factor, self.retry_max)


class Deliveries:
    """The sender loop: claim, send outside any transaction, mark."""

    def __init__(self, rt: Runtime, smtp: SmtpSender, policy: DeliveryPolicy) -> None:
        self.rt = rt
        self.smtp = smtp
        self.policy = policy
        self.sent = 0
        self.unreachable = 0  # consecutive attempts that found the server unreachable

    async def claim(self) -> tuple[uuid.UUID, list[asyncpg.Record]]:
        """Take a batch of due notifications (one short transaction, committed)."""
        claim = uuid.uuid4()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rows = await store.claim_due(
                conn, self.rt.clock.now(), self.policy.lease, self.policy.batch_size, claim
            )
        return claim, rows

    async def attempt(self, n: asyncpg.Record) -> Outcome:
        """Deliver one claimed notification; no transaction is open here."""
        if n["channel"] != "email":
            return Outcome(Result.SENT)  # desk, post and agency notices: handed over by people
        return await self.smtp.send(n)

    async def record(self, claim: uuid.UUID, n: asyncpg.Record, outcome: Outcome) -> None:
        """Mark the outcome of one attempt (one short transaction)."""
        now = self.rt.clock.now()
        DELIVERIES.labels(n["channel"], outcome.result.value).inc()
        if outcome.result is Result.UNREACHABLE:
            self.unreachable += 1
        elif n["channel"] == "email":
            self.unreachable = 0
        async with self.rt.pool.acquire() as conn, conn.transaction():
            if outcome.result is Result.SENT:
                if await store.mark_sent(conn, n["id"], claim, now, outcome.message_id):
                    await self.rt.outbox.add(
                        conn,
                        NotificationSent(
                            notification_id=n["id"],
                            code=n["dossier_code"],
                            kind=n["kind"],
                            channel=n["channel"],
                            recipient=n["recipient"],
                            subject=n["subject"],
                            sent_at=now,
                        ),
                        subject=n["dossier_code"],
                    )
                    self.sent += 1
            elif outcome.result is Result.FAILED or (
                outcome.result is Result.RETRY and n["attempts"] >= self.policy.max_attempts
            ):
                reason = outcome.reason or "failed"
                if outcome.result is Result.RETRY:
                    reason = f"gave up after {n['attempts']} attempts: {reason}"
                log.warning("notification_failed", id=str(n["id"]), reason=reason)
                await store.mark_failed(conn, n["id"], claim, now, reason)
            else:
                # An outage backs off on how long it has lasted, not on the message.
                unreachable = outcome.result is Result.UNREACHABLE
                tries = self.unreachable if unreachable else n["attempts"]
                await store.retry_later(
                    conn,
                    n["id"],
                    claim,
                    now + self.policy.backoff(max(1, tries)),
                    outcome.reason,
                    count_attempt=not unreachable,
                )

    async def release(
        self, claim: uuid.UUID, rows: Sequence[asyncpg.Record], outcome: Outcome
    ) -> None:
        """Hand back claimed rows not tried: the server is unreachable."""
        if not rows:
            return
        due = self.rt.clock.now() + self.policy.backoff(max(1, self.unreachable))
        async with self.rt.pool.acquire() as conn, conn.transaction():
            for n in rows:
                await store.retry_later(
                    conn, n["id"], claim, due, outcome.reason, count_attempt=False
                )

    async def run_once(self) -> int:
        """Claim, send and mark one batch; returns how many were claimed.

        The lease is short, so a crashed sender's claim passes to another soon; a live
        sender renews it for what it still holds once a third of it has gone.
        """
        claim, rows = await self.claim()
        renewed = self.rt.clock.now()
        for i, n in enumerate(rows):
            now = self.rt.clock.now()
            if now - renewed > self.policy.lease / 3:
                await store.renew(self.rt.pool, claim, now + self.policy.lease)
                renewed = now
            outcome = await self.attempt(n)
            await self.record(claim, n, outcome)
            if outcome.result is Result.UNREACHABLE:
                await self.release(claim, rows[i + 1 :], outcome)
                break
        return len(rows)

    async def run(self, waker: Waker | None = None) -> None:
        """Deliver until the service's pool closes (the service is stopping)."""
        try:
            while not self.rt.pool.is_closing():
                try:
                    n = await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self.rt.pool.is_closing():
                        break
                    log.warning("delivery_loop_failed", error=repr(exc))
                    await asyncio.sleep(1.0)
                    continue
                if n >= self.policy.batch_size:
                    continue
                if waker is not None:
                    await waker.wait(self.policy.poll_interval)
                else:
                    await asyncio.sleep(self.policy.poll_interval)
        finally:
            await self.smtp.close()
            if waker is not None:
                await waker.stop()
