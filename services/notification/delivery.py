"""Delivery outside any database transaction, one sender loop per channel.

Each loop claims due notifications of its own channels in a short transaction (status
``sending`` with a lease; ``FOR UPDATE SKIP LOCKED``, so replicas share the work), sends
them with no transaction open, and marks each in another short transaction: ``sent`` (with
its ``notification.sent`` event) or ``delivered`` when the receiver confirmed at once,
``pending`` again with a later due time (backoff), or ``failed`` with the reason. A failed
commit therefore never re-sends a batch, and a crash between send and mark only re-sends
that message once its lease ends, with the same id so the receiver recognises it: the
Message-ID ``<notification id@sender domain>``, the SMS ``client_ref``, the portal's
``MaThongBao``, each the notification id.

A server that cannot be reached is nobody's message's fault: the attempt is not counted,
the rest of the batch is handed back, and the channel waits as long as its outage has
lasted so far (from ``retry_base`` up to ``retry_max``); the other channels' loops go on.

One SMTP connection is kept open across messages and batches (closed after a minute
idle, so a server's idle timeout seldom finds it first). The session is reset (RSET) after
every refused message and dropped after any connection or protocol error or a ``421``, so
one bad message never affects the next applicant's.
Desk, post and agency notices are handed over by people: they are marked sent.
The SMS and portal senders are in ``services.notification.channels``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum
from typing import Any, Protocol

import aiosmtplib
import asyncpg
from prometheus_client import Counter

from contracts.events import NotificationSent
from services.notification import domain, store
from services.runtime.logging import get_logger
from services.runtime.outbox import Waker, drain_until_closed
from services.runtime.service import Runtime

log = get_logger(__name__)

DELIVERIES = Counter(
    "lienthong_notification_deliveries_total",
    "Delivery attempts of notifications by channel and result",
    ["channel", "result"],
)


class Result(StrEnum):
    SENT = "sent"  # handed to the server or gateway
    DELIVERED = "delivered"  # the receiver confirmed at once (the portal holds the message)
    RETRY = "retry"  # the message's own transient failure (a 4xx answer): counts an attempt
    FAILED = "failed"  # permanent: a 5xx answer, an address or header that cannot be sent
    UNREACHABLE = "unreachable"  # the server cannot be reached: not the message's fault
    WAIT = "wait"  # not tried: over a rate limit; due again at ``Outcome.not_before``


@dataclass(frozen=True)
class Inbound:
    """An answer from outside that we could not understand, to store whole for operators
    (``inbound_rejects``)."""

    source: str
    reason: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int | None = None


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str | None = None
    message_id: str | None = None
    answer: Mapping[str, Any] | None = None
    """The receiver's whole answer, kept on the notification for inspection."""
    not_before: datetime | None = None
    reject: Inbound | None = None


class Sender(Protocol):
    """What a channel's sender loop drives: the channels it delivers and one send."""

    channels: frozenset[str]

    async def send(self, n: asyncpg.Record) -> Outcome: ...

    async def close(self) -> None: ...


class HandedOver:
    """Desk, post and agency notices: people hand them over, the system marks them sent."""

    channels = domain.HANDED_OVER

    async def send(self, n: asyncpg.Record) -> Outcome:
        return Outcome(Result.SENT)

    async def close(self) -> None:
        return None


class SmtpSender:
    """One kept-open SMTP connection, shared by every message of every batch: reset after
    a refused message, dropped after an error on the connection itself or a ``421``
    (the server closing the session), and closed (QUIT) once it has been idle longer than
    ``idle_s``, under the usual server idle timeouts, so a send seldom finds a session the
    server has already hung up. The next send connects again; a send that finds a kept
    connection dead is tried once more on a fresh one."""

    channels = frozenset({domain.EMAIL})

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout: float = 10.0,
        *,
        idle_s: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.domain = sender.rpartition("@")[2] or "lienthong.local"
        self.timeout = timeout
        self.idle_s = idle_s
        self.connections = 0
        """Connections opened so far (one for many messages while the server keeps it)."""
        self._client: aiosmtplib.SMTP | None = None
        self._used = 0.0  # time.monotonic() of the kept connection's last exchange
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
        if self._client is not None and time.monotonic() - self._used > self.idle_s:
            await self._retire()  # idle too long: the server may be about to hang up
        if self._client is None or not self._client.is_connected:
            client = aiosmtplib.SMTP(
                hostname=self.host, port=self.port, timeout=self.timeout, start_tls=False
            )
            await client.connect()
            self.connections += 1
            self._client = client
            self._used = time.monotonic()
        return self._client

    def _reused(self) -> bool:
        """A kept connection from earlier sends, not yet idle too long."""
        return (
            self._client is not None
            and self._client.is_connected
            and time.monotonic() - self._used <= self.idle_s
        )

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
            self._used = time.monotonic()
        except Exception:
            await self._drop()

    async def _retire(self) -> None:
        """QUIT an idle connection politely, without waiting long for the answer."""
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit(timeout=min(self.timeout, 2.0))
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

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
                reused = self._reused()
                try:
                    client = await self._connected()
                    await client.send_message(msg)
                    self._used = time.monotonic()
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
                    if exc.code == 421:  # the server is closing this session
                        await self._drop()
                        if reused and not fresh:
                            continue
                        return Outcome(Result.RETRY, f"{exc.code} {exc.message}", mid)
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

    outage_probe_max: timedelta = timedelta(minutes=1)

    def outage_backoff(self, lasted: timedelta) -> timedelta:
        """How long a channel waits before trying its server again: as long as the outage
        has lasted so far, at least ``retry_base`` and at most ``outage_probe_max`` (the
        waits roughly double while it lasts; a short blip costs only the base, and a long
        outage is probed once a minute, so the queue drains soon after the server is
        back: one probe costs nothing)."""
        return min(max(lasted, self.retry_base), self.outage_probe_max, self.retry_max)


class TokenBucket:
    """At most ``rate`` sends a second on average, bursts of ``capacity``; ``take`` says how
    long to wait before the send it allows (the token is taken at once, so callers that
    come one after the other queue up in the order they came)."""

    def __init__(self, rate: float, capacity: float | None = None, now: float = 0.0) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity if capacity is not None else rate)
        self.tokens = self.capacity
        self.at = now

    def take(self, now: float) -> float:
        """Take a token at ``now`` (seconds, monotonic); seconds to wait before using it.
        A rate of zero or less means no limit."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self) -> None:
        wait = self.take(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


def recipient_wait(
    sent: Sequence[datetime], now: datetime, limit: int, window: timedelta
) -> datetime | None:
    """When the next message to a recipient may go, given when the last ones went: None if
    now (fewer than ``limit`` in the ``window`` before ``now``), else the moment the oldest
    of the last ``limit`` leaves the window. A limit of zero or less means no limit."""
    if limit <= 0:
        return None
    recent = sorted(t for t in sent if t > now - window)
    if len(recent) < limit:
        return None
    return recent[len(recent) - limit] + window


@dataclass(frozen=True)
class RecipientLimit:
    """At most ``per_window`` messages to one recipient on a channel in ``window``; over it
    a message waits (it is not failed). Counted in the database, so replicas share it."""

    channel: str
    per_window: int
    window: timedelta = timedelta(hours=1)

    async def take(
        self, conn: asyncpg.Connection, n: asyncpg.Record, claim: uuid.UUID, now: datetime
    ) -> datetime | None:
        """Take a place in the recipient's window for this send, or say when one frees up
        (then nothing is taken). Inside a transaction."""
        if self.per_window <= 0:
            return None
        sent = await store.recent_sends(conn, self.channel, n["recipient"], now - self.window)
        later = recipient_wait(sent, now, self.per_window, self.window)
        if later is None:
            await store.take_send(conn, self.channel, n["recipient"], n["id"], claim, now)
        return later


class Deliveries:
    """One channel's sender loop: claim, send outside any transaction, mark."""

    def __init__(
        self,
        rt: Runtime,
        sender: Sender,
        policy: DeliveryPolicy,
        *,
        limit: RecipientLimit | None = None,
    ) -> None:
        self.rt = rt
        self.sender = sender
        self.channels = sender.channels
        self.policy = policy
        self.limit = limit
        self.sent = 0
        self.outage_since: datetime | None = None
        """When this channel's server stopped answering (None: it answers)."""

    @property
    def name(self) -> str:
        return "+".join(sorted(self.channels))

    async def claim(self) -> tuple[uuid.UUID, list[asyncpg.Record]]:
        """Take a batch of this channel's due notifications (one short transaction)."""
        claim = uuid.uuid4()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rows = await store.claim_due(
                conn,
                self.rt.clock.now(),
                self.policy.lease,
                self.policy.batch_size,
                claim,
                self.channels,
            )
        return claim, rows

    async def admit(self, claim: uuid.UUID, n: asyncpg.Record) -> Outcome | None:
        """The per-recipient limit (one short transaction): None if the message may go,
        else a ``WAIT`` until a place in the recipient's window frees up."""
        if self.limit is None:
            return None
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            later = await self.limit.take(conn, n, claim, now)
        if later is None:
            return None
        reason = (
            f"waits for the recipient's limit ({self.limit.per_window} messages in"
            f" {self.limit.window}): due again at {later.isoformat()}"
        )
        return Outcome(Result.WAIT, reason, not_before=later)

    async def attempt(self, n: asyncpg.Record) -> Outcome:
        """Deliver one claimed notification; no transaction is open here."""
        return await self.sender.send(n)

    def _outage_due(self, now: datetime) -> datetime:
        if self.outage_since is None:
            self.outage_since = now
        return now + self.policy.outage_backoff(now - self.outage_since)

    async def record(self, claim: uuid.UUID, n: asyncpg.Record, outcome: Outcome) -> None:
        """Mark the outcome of one attempt (one short transaction). What the receiver said
        is stored as text PostgreSQL takes, so no answer can make the mark fail (and the
        message be tried again for ever)."""
        now = self.rt.clock.now()
        outcome = replace(
            outcome,
            reason=domain.printable(outcome.reason) if outcome.reason is not None else None,
            message_id=domain.printable(outcome.message_id) if outcome.message_id else None,
            answer=domain.storable(dict(outcome.answer)) if outcome.answer is not None else None,
        )
        DELIVERIES.labels(n["channel"], outcome.result.value).inc()
        unreachable = outcome.result is Result.UNREACHABLE
        recovered = False
        if unreachable:
            due = self._outage_due(now)
        elif outcome.result is not Result.WAIT:
            recovered = self.outage_since is not None
            self.outage_since = None  # the server answered
        async with self.rt.pool.acquire() as conn, conn.transaction():
            if recovered:
                # what the outage postponed goes now, not at its last probe's due time
                await store.due_now(conn, n["channel"], now)
            if outcome.reject is not None:
                r = outcome.reject
                rid = await store.save_reject(
                    conn,
                    source=r.source,
                    reason=r.reason,
                    body=r.body,
                    headers=r.headers,
                    status=r.status,
                    at=now,
                )
                log.warning(
                    "inbound_rejected", source=r.source, reason=r.reason, id=rid, nid=str(n["id"])
                )
            if self.limit is not None and outcome.result not in (Result.SENT, Result.DELIVERED):
                await store.give_back_send(conn, n["id"], claim)
            if outcome.result in (Result.SENT, Result.DELIVERED):
                delivered = outcome.result is Result.DELIVERED
                if await store.mark_sent(
                    conn,
                    n["id"],
                    claim,
                    now,
                    outcome.message_id,
                    delivered=delivered,
                    answer=outcome.answer,
                ):
                    if n["channel"] == domain.SMS and outcome.message_id:
                        await store.apply_waiting_receipt(conn, n["id"], outcome.message_id)
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
                await store.mark_failed(conn, n["id"], claim, now, reason, outcome.answer)
            elif outcome.result is Result.WAIT:
                await store.retry_later(
                    conn,
                    n["id"],
                    claim,
                    outcome.not_before or now + self.policy.retry_base,
                    outcome.reason,
                    count_attempt=False,
                )
            else:
                # An outage backs off on how long it has lasted, not on the message.
                await store.retry_later(
                    conn,
                    n["id"],
                    claim,
                    due if unreachable else now + self.policy.backoff(max(1, n["attempts"])),
                    outcome.reason,
                    count_attempt=not unreachable,
                )

    async def release(
        self, claim: uuid.UUID, rows: Sequence[asyncpg.Record], outcome: Outcome
    ) -> None:
        """Hand back claimed rows not tried: the server is unreachable."""
        if not rows:
            return
        due = self._outage_due(self.rt.clock.now())
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
            outcome = await self.admit(claim, n) or await self.attempt(n)
            await self.record(claim, n, outcome)
            if outcome.result is Result.UNREACHABLE:
                await self.release(claim, rows[i + 1 :], outcome)
                break
        return len(rows)

    async def run(self, waker: Waker | Wakeup | None = None) -> None:
        """Deliver until the service's pool closes (the service is stopping)."""
        try:
            await drain_until_closed(
                self.run_once,
                closing=self.rt.pool.is_closing,
                batch_size=self.policy.batch_size,
                poll_interval=self.policy.poll_interval,
                waker=waker,
                what=f"delivery_{self.name}",
            )
        finally:
            await self.sender.close()
            if isinstance(waker, Waker):
                await waker.stop()


class Wakeup:
    """One loop's share of a ``FanOut``: woken with every other loop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()


class FanOut(Waker):
    """One LISTEN connection that wakes every channel's loop: a new notification may be for
    any of them."""

    def __init__(self, dsn: str, channel: str) -> None:
        super().__init__(dsn, channel)
        self.loops: list[Wakeup] = []

    def subscribe(self) -> Wakeup:
        w = Wakeup()
        self.loops.append(w)
        return w

    def _on_notify(self, *_: object) -> None:
        for w in self.loops:
            w.event.set()

    async def watch(self, done: Callable[[], bool], interval: float = 1.0) -> None:
        """Listen again whenever the connection drops (a loop's wait does not see it),
        until ``done`` (the service is stopping)."""
        while not done():
            await Waker.wait(self, interval)
