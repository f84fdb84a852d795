"""Outbound sync to the national portal: every status change of a dossier, in order.

Each event that changes a dossier queues one update (``portal_sync``, in the event's own
transaction, once per event): the whole record as it stood then (``DongBoHoSoMC``), or a
step's progress (``CapNhatTienDoHoSoMC``). A sender loop claims the next unsent update
of each dossier (a short transaction, with a lease): its records first, in order, then
its progress lines, in order, and a progress line only once the portal holds the dossier
(as OpenCPS's ``syncDossierAndDossierStatus`` sends the record before the line). It calls
the portal with no transaction open and marks what happened in another: sent; waiting
again after a backoff, the try counted; or set aside with the portal's answer when it
refuses an update for what it holds, or after ``max_attempts`` tries (the dossier's next
update goes on). An update delivered twice does no harm: a record replaces the portal's
copy. A progress line the portal cannot place (-4) queues the whole record before it.

While the portal is away nothing is counted against the updates: the loop waits, backing
off exponentially with jitter on how long the outage has lasted, and tries again with one
batch; the first answer releases everything that waited. A reconciliation job asks the
portal what it holds (``TraCuuHoSo``) and queues the whole record again where a field its
answer carries differs, or where the record is missing (also for a dossier never created
there: its create set aside, its progress lines waiting).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from contracts.envelope import Envelope
from services.intake import portal, store
from services.intake.domain import Catalogue, UnknownProcedure
from services.runtime.clock import Clock
from services.runtime.logging import get_logger
from services.runtime.outbox import Waker, drain_until_closed
from services.runtime.portal_client import PortalClient, PortalGarbled, PortalUnavailable

log = get_logger(__name__)
RECONCILE_NS = uuid.UUID("0b7d9e52-4a61-4f3c-8e2b-6a1c9d3f5e70")

SYNC_CALLS = Counter(
    "lienthong_portal_sync_calls_total",
    "Calls to the national portal by service and result",
    ["service", "result"],
)
OUTAGE_SECONDS = Gauge(
    "lienthong_portal_sync_outage_seconds", "How long the portal has been unreachable"
)

EXISTS = 3
"""The portal already holds the dossier: the create becomes an update (an open-source
client reads "đã tồn tại" with codes 3/-3; our simulator answers 3). The real code is not
published."""
NOT_FOUND = -4
"""The simulator's answer to an update of a dossier the portal does not hold (UNKNOWN for
the real portal)."""
INVALID = -1
"""A field the portal refuses (the simulator names the record and the field)."""


def differs(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The fields where the portal's copy (``TraCuuHoSo``'s ``result[0]``) differs from our
    record: only those its answer carries (a field it does not return is not a difference:
    the real answer may hold fewer keys than we send), and only those we own (``ours``)."""
    return [k for k, v in ours.items() if k in theirs and theirs[k] != v]


@dataclass(frozen=True)
class SyncPolicy:
    batch_size: int = 50
    lease: timedelta = timedelta(seconds=60)  # > two calls' timeouts
    retry_base: timedelta = timedelta(seconds=2)
    retry_max: timedelta = timedelta(minutes=10)
    jitter: float = 0.2
    max_attempts: int = 8
    poll_interval: float = 0.5
    probe_max: timedelta = timedelta(minutes=1)
    """While the portal is away it is tried again after at most this (one cheap call),
    so the queue drains soon after it is back."""

    def backoff(self, n: int, rng: Callable[[], float] = random.random) -> timedelta:
        """2 s, 4 s, 8 s ... up to 10 min, each spread by ±``jitter`` so replicas and
        dossiers do not all come back at the same instant."""
        base: timedelta = min(self.retry_base * 2 ** max(0, n - 1), self.retry_max)
        spread: float = 1 + self.jitter * (2 * rng() - 1)
        return base * spread


@dataclass
class SyncStats:
    calls: int = 0
    sent: int = 0
    retried: int = 0
    refused: int = 0
    unreachable: int = 0
    resent_by_reconciliation: int = 0
    outage_started: datetime | None = None
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)


class PortalSync:
    """Queues a dossier's updates for the portal and delivers them, in order."""

    def __init__(
        self,
        *,
        pool: Callable[[], asyncpg.Pool],
        clock: Clock,
        catalogue: Catalogue,
        client: PortalClient | None,
        policy: SyncPolicy,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._pool = pool
        self.clock = clock
        self.catalogue = catalogue
        self.client = client
        self.policy = policy
        self.rng = rng
        self.streak = 0  # consecutive rounds that found the portal unreachable
        self.next_try: datetime | None = None
        self.stats = SyncStats()

    @property
    def enabled(self) -> bool:
        return self.client is not None

    # --- queueing (inside the consumer's transaction) ----------------------------------------

    def record_of(self, row: asyncpg.Record) -> dict[str, Any]:
        try:
            procedure = self.catalogue.in_force(row["procedure_code"], row["received_at"].date())
        except UnknownProcedure:
            procedure = None
        return portal.outbound_record(row, procedure)

    async def record(self, conn: asyncpg.Connection, code: str, env: Envelope) -> None:
        """The whole record as it stands after ``env``, queued behind the dossier's earlier
        updates."""
        if not self.enabled:
            return
        row = await store.get_dossier(conn, code)
        if row is None:
            return
        await store.enqueue_sync(
            conn, code, "record", self.record_of(row), env.event_id, self.clock.now()
        )

    async def progress(
        self, conn: asyncpg.Connection, code: str, step: dict[str, str], env: Envelope
    ) -> None:
        if not self.enabled:
            return
        await store.enqueue_sync(conn, code, "progress", step, env.event_id, self.clock.now())

    # --- delivering (no transaction open while calling) ------------------------------------

    async def run_once(self) -> int:
        """Claim, send and mark one round; returns how many updates it claimed."""
        assert self.client is not None
        now = self.clock.now()
        if self.next_try is not None and now < self.next_try:
            return 0
        claim = uuid.uuid4()
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await store.claim_sync(
                conn, now, self.policy.lease, self.policy.batch_size, claim
            )
        if not rows:
            return 0
        # a first try goes in a batch; a retried update goes alone, so one the portal
        # refuses without saying which never holds back the others
        groups: list[list[asyncpg.Record]] = []
        batches: dict[tuple[str, bool], list[asyncpg.Record]] = {}
        for r in rows:
            if r["attempts"] > 1:
                groups.append([r])
            else:
                batches.setdefault((r["kind"], bool(r["known"])), []).append(r)
        groups = list(batches.values()) + groups
        for i, group in enumerate(groups):
            try:
                await self._send(claim, group)
            except PortalUnavailable as exc:
                rest = [r for g in groups[i:] for r in g]
                garbled = exc if isinstance(exc, PortalGarbled) else None
                await self._unreachable(claim, rest, str(exc), garbled)
                break
        return len(rows)

    async def _send(self, claim: uuid.UUID, group: list[asyncpg.Record]) -> None:
        assert self.client is not None
        kind, known = group[0]["kind"], bool(group[0]["known"])
        data = [r["payload"] for r in group]
        service = "DongBoHoSoMC" if kind == "record" else "CapNhatTienDoHoSoMC"
        self.stats.calls += 1
        if kind == "record":
            answer = await self.client.call(
                service, isUpdating="True" if known else "False", data=data
            )
        else:
            answer = await self.client.call(service, data=data)
        self._recovered()
        SYNC_CALLS.labels(service, "ok" if answer.ok else str(answer.error_code)).inc()
        now = self.clock.now()
        ids = [r["id"] for r in group]
        async with self._pool().acquire() as conn, conn.transaction():
            if answer.ok:
                marked = await store.sync_sent(conn, ids, claim, now, answer.body)
                self.stats.sent += len(marked)
                return
            culprit = self._culprit(group, answer.body, answer.message)
            others = [r["id"] for r in group if culprit is None or r["id"] != culprit["id"]]
            said = f"{answer.error_code} {answer.message}"
            if culprit is not None and answer.error_code in (EXISTS, NOT_FOUND):
                code = culprit["dossier_code"]
                await store.portal_known(conn, code, answer.error_code == EXISTS)
                if culprit["kind"] == "record":
                    # the portal holds it (or not) after all: the same record, the other
                    # way, at once the first time, with backoff if it keeps flipping
                    await self._again(
                        conn, claim, culprit, answer, at_once=culprit["attempts"] == 0
                    )
                else:
                    # a progress line of a dossier the portal does not hold: the whole
                    # record goes first (claim_sync), the line waits for it, with backoff
                    await self._record_first(conn, culprit, now)
                    await self._again(conn, claim, culprit, answer)
            elif culprit is not None and answer.error_code == INVALID:
                self.stats.refused += 1
                log.warning("portal_refused", code=culprit["dossier_code"], answer=answer.message)
                await store.sync_failed(conn, culprit["id"], claim, said, answer.body)
            elif len(group) == 1:
                # refused without a reason we understand: kept, tried again later, and
                # set aside with the answer after the last attempt
                await self._again(conn, claim, group[0], answer)
                return
            # the rest of an all-or-nothing batch was not stored: again, each alone
            self.stats.retried += len(others)
            await store.sync_retry(
                conn,
                others,
                claim,
                now,
                "sent again after the batch was refused",
                count_attempt=True,
            )

    async def _again(
        self,
        conn: asyncpg.Connection,
        claim: uuid.UUID,
        r: asyncpg.Record,
        answer: Any,
        *,
        at_once: bool = False,
    ) -> None:
        """A refused update, tried again after a backoff (exponential, capped:
        ``SyncPolicy.backoff``) and counted; after ``max_attempts`` tries it is set aside
        with the portal's last answer, which operators read (``/ops/portal-sync/failed``,
        the dossier's ``portal-sync`` view)."""
        tries = int(r["attempts"]) + 1
        said = f"{answer.error_code} {answer.message}"
        self.stats.retried += 1
        if tries >= self.policy.max_attempts:
            self.stats.refused += 1
            log.warning("portal_gave_up", code=r["dossier_code"], tries=tries, answer=said)
            await store.sync_failed(
                conn,
                r["id"],
                claim,
                f"Cổng DVCQG từ chối {tries} lần, đã tạm gác; lần cuối: {said}",
                answer.body,
            )
            return
        now = self.clock.now()
        due = now if at_once else now + self.policy.backoff(tries, self.rng)
        await store.sync_retry(conn, [r["id"]], claim, due, said, count_attempt=True)

    async def _record_first(
        self, conn: asyncpg.Connection, r: asyncpg.Record, now: datetime
    ) -> None:
        """Queue the dossier's whole record (a create: the portal said it does not hold
        it), once per refused try of the line; it goes before the line (``claim_sync``)."""
        row = await store.get_dossier(conn, r["dossier_code"])
        if row is None:
            return
        cause = uuid.uuid5(RECONCILE_NS, f"record-first/{r['id']}/{r['attempts']}")
        await store.enqueue_sync(conn, r["dossier_code"], "record", self.record_of(row), cause, now)

    @staticmethod
    def _culprit(
        group: list[asyncpg.Record], body: dict[str, Any], message: str
    ) -> asyncpg.Record | None:
        """The update a refusal names: by ``MaHoSo`` in the answer (our simulator) or at
        the start of its message; None when it names none."""
        named = body.get("MaHoSo")
        for r in group:
            code = r["dossier_code"]
            if named == code or message.startswith(f"MaHoSo {code}"):
                return r
        return None

    def _recovered(self) -> None:
        if self.streak:
            start = self.stats.outage_started or self.clock.now()
            self.stats.outages.append((start, self.clock.now()))
            log.info("portal_reachable_again", after_rounds=self.streak)
        self.streak = 0
        self.next_try = None
        self.stats.outage_started = None
        OUTAGE_SECONDS.set(0)

    async def _unreachable(
        self,
        claim: uuid.UUID,
        rows: list[asyncpg.Record],
        reason: str,
        garbled: PortalGarbled | None = None,
    ) -> None:
        """The portal is away (or answered outside its envelope, e.g. a proxy's error
        page): nothing is counted; everything waits for the next try. An answer we do not
        understand is kept with the update it answered, for inspection."""
        now = self.clock.now()
        self.streak += 1
        self.stats.unreachable += 1
        if self.stats.outage_started is None:
            self.stats.outage_started = now
        OUTAGE_SECONDS.set((now - self.stats.outage_started).total_seconds())
        wait = min(self.policy.backoff(self.streak, self.rng), self.policy.probe_max)
        self.next_try = now + wait
        SYNC_CALLS.labels("any", "unreachable").inc()
        log.warning("portal_unreachable", rounds=self.streak, error=reason[:300])
        async with self._pool().acquire() as conn, conn.transaction():
            if garbled is not None and rows:
                await store.keep_answer(
                    conn,
                    rows[0]["id"],
                    {
                        "status_code": garbled.status_code,
                        "headers": garbled.headers,
                        "body": garbled.body[:8192].decode("utf-8", "replace"),
                        "size": len(garbled.body),
                    },
                )
            await store.sync_retry(
                conn, [r["id"] for r in rows], claim, now, reason[:2000], count_attempt=False
            )

    async def run(self, waker: Waker | None = None) -> None:
        """Deliver until the service stops."""
        if self.client is None:
            return
        try:
            await drain_until_closed(
                self.run_once,
                closing=lambda: self._pool().is_closing(),
                batch_size=self.policy.batch_size,
                poll_interval=self.policy.poll_interval,
                waker=waker,
                what="portal_sync",
            )
        finally:
            await self.client.close()

    # --- reconciliation --------------------------------------------------------------------

    async def reconcile(self, limit: int = 100) -> dict[str, int]:
        """Compare what the portal holds of up to ``limit`` dossiers (those with nothing on
        its way, least recently compared first) with our record; queue the whole record
        again where it is missing or differs."""
        assert self.client is not None
        checked = missing = different = 0
        for code in await store.to_reconcile(self._pool(), limit):
            answer = await self.client.call("TraCuuHoSo", mahoso=code)
            now = self.clock.now()
            if not answer.ok:
                log.warning("portal_lookup_refused", code=code, answer=answer.message)
                continue
            held = answer.body.get("result") or []
            async with self._pool().acquire() as conn, conn.transaction():
                row = await store.get_dossier(conn, code)
                if row is None:
                    continue
                ours = self.record_of(row)
                theirs = held[0] if held and isinstance(held[0], dict) else None
                checked += 1
                if theirs is not None:
                    # the portal holds it: progress lines waiting for the record may go
                    await store.portal_known(conn, code, True)
                if theirs is None or differs(ours, theirs):
                    if theirs is None:
                        missing += 1
                        await store.portal_known(conn, code, False)
                    else:
                        different += 1
                    cause = uuid.uuid5(RECONCILE_NS, f"{code}/{now.isoformat()}")
                    await store.enqueue_sync(conn, code, "record", ours, cause, now)
                    await conn.execute(
                        "UPDATE portal_dossiers SET resent = resent + 1 WHERE dossier_code = $1",
                        code,
                    )
                    self.stats.resent_by_reconciliation += 1
                await conn.execute(
                    "UPDATE portal_dossiers SET checked_at = $2 WHERE dossier_code = $1",
                    code,
                    now,
                )
        return {"checked": checked, "missing": missing, "different": different}

    async def run_reconciler(self, interval_s: float) -> None:
        if self.client is None or interval_s <= 0:
            return
        while True:
            await asyncio.sleep(interval_s)
            try:
                report = await self.reconcile()
                log.info("portal_reconciled", **report)
            except asyncio.CancelledError:
                raise
            except PortalUnavailable as exc:
                log.warning("portal_reconcile_unreachable", error=str(exc)[:300])
            except Exception as exc:
                log.warning("portal_reconcile_failed", error=repr(exc))
