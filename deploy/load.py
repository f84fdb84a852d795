"""Load for a running Liên thông: realistic dossiers sent on an open-loop schedule.

``Dossiers`` makes submissions a province's desks would send: every procedure of the
sample catalogue in force today, an applicant of a type the procedure allows (a citizen
with a CCCD or a business with a tax code), every mandatory document, a phone and an
email of their own; each goes to a receiving desk of its procedure (a commune-level one
to every commune desk in turn), with a token of an officer there. ``OpenLoop`` sends them
on a schedule (the i-th at ``i / rate`` seconds, whether or not earlier answers came
back, as real desks do), and ``Receipts`` reads the notification topic, as an operator
would, to time each dossier from its submission to its receipt (Form 01) being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer

from contracts.agencies import default_book
from contracts.common import Channel, CompetenceLevel, ObjectType, Procedure
from contracts.topics import NOTIFICATION
from services.intake.domain import Catalogue
from services.runtime.kafka_auth import KafkaSecurity

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng")
MIDDLE = ("Văn", "Thị", "Minh", "Ngọc", "Hữu", "Thanh", "Quốc", "Gia")
GIVEN = ("An", "Bình", "Chi", "Dũng", "Hà", "Hùng", "Lan", "Long", "Mai", "Nam", "Phúc")
COMPANY = ("Xây dựng", "Thương mại", "Dịch vụ", "Vận tải", "Công nghệ", "Thực phẩm")


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def receiving_desks(p: Procedure, communes: list[str]) -> list[str]:
    """Where a procedure's dossiers are received: a commune-level one at every commune
    one-stop desk (``communes``; dossiers received regardless of where the applicant
    lives), any other at its own receiving agency."""
    if p.receiving_agency in communes:
        return communes
    return [p.receiving_agency]


def locality(body: dict[str, Any], i: int) -> dict[str, Any]:
    """``body`` with the applicant's ward and the land's ward: the ``i``-th and the one
    after it of the agency book's communes, so the commune-level decisions spread over
    every ward (a residence- or property-bound dossier is decided there, not at the desk)."""
    codes = [c.code for c in default_book().communes]
    if not codes:
        return body
    applicant = {**body["applicant"], "commune": codes[i % len(codes)]}
    return {**body, "applicant": applicant, "property_commune": codes[(i + 1) % len(codes)]}


class Dossiers:
    """An endless, reproducible stream of (desk agency, submission body) pairs, cycling
    through the procedures in force today."""

    def __init__(self, catalogue: Catalogue, seed: int = 7, online_share: float = 0.3) -> None:
        today = datetime.now(UTC).date()
        codes = sorted({p.code for p in catalogue.all()})
        self.procedures: list[Procedure] = []
        for code in codes:
            with contextlib.suppress(Exception):
                self.procedures.append(catalogue.in_force(code, today))
        if not self.procedures:
            raise ValueError("no procedure of the catalogue is in force today")
        self.communes = default_book().desks(CompetenceLevel.COMMUNE)
        self.rng = random.Random(seed)
        self.online_share = online_share
        self.run = uuid.uuid4().hex[:6]

    @classmethod
    def sample(cls, **kw: Any) -> Dossiers:
        return cls(Catalogue.load(), **kw)

    @property
    def desks(self) -> list[str]:
        return sorted({d for p in self.procedures for d in self.desks_for(p)})

    def desks_for(self, p: Procedure) -> list[str]:
        return receiving_desks(p, self.communes)

    def body(self, i: int) -> tuple[str, dict[str, Any]]:
        p = self.procedures[i % len(self.procedures)]
        rng = self.rng
        kind = rng.choice(p.eligible_object_types)
        if kind is ObjectType.CITIZEN:
            name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
            id_number = f"0{rng.randrange(10**10, 10**11)}"
        else:
            name = f"Công ty TNHH {rng.choice(COMPANY)} {rng.choice(GIVEN)} {i % 1000}"
            id_number = f"0{rng.randrange(10**8, 10**9)}"
        online = rng.random() < self.online_share
        applicant: dict[str, Any] = {
            "name": _nfc(name),
            "object_type": int(kind),
            "id_number": id_number,
            "phone": f"09{i % 10**8:08d}",
            "email": f"nguoi.nop.{self.run}.{i}@example.vn",
        }
        if online:
            applicant["portal_account"] = f"dvcqg-{self.run}-{i}"
        body = {
            "procedure_code": p.code,
            "channel": int(Channel.ONLINE if online else Channel.IN_PERSON),
            "applicant": applicant,
            "summary": _nfc(f"{p.name} (hồ sơ thử tải {i})"),
            "documents": [{"code": d.code} for d in p.required_documents if d.mandatory],
        }
        desks = self.desks_for(p)
        desk = desks[(i // len(self.procedures)) % len(desks)]
        body["receiving_agency"] = desk
        return desk, locality(body, i // len(self.procedures) + 1)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return (self.body(i) for i in itertools.count())


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@dataclass
class Tally:
    """What a load run saw, updated as answers and receipts arrive."""

    scheduled: int = 0
    sent: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    behind: int = 0  # sent over 50 ms after their slot (all connections busy, or the sender slow)
    accept_ms: list[float] = field(default_factory=list)
    receipt_ms: list[float] = field(default_factory=list)
    submitted: dict[str, float] = field(default_factory=dict)  # code -> monotonic submit time
    first_error: str | None = None

    @property
    def in_flight(self) -> int:
        return self.sent - self.accepted - self.errors - sum(self.refused.values())


class ClientPool:
    """Many small httpx clients used in turn: httpx's pool checks every connection it holds
    for each request it assigns, so one client with hundreds of connections makes a load
    generator the bottleneck (seen: a core spent in ``has_expired`` at 100 requests/s)."""

    def __init__(self, connections: int, per_client: int = 8, timeout: float = 60) -> None:
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [
            httpx.AsyncClient(timeout=timeout, limits=limits)
            for _ in range(max(1, connections // per_client))
        ]
        self._turn = itertools.cycle(self.clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.next().post(url, **kw)

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class OpenLoop:
    """Sends ``rate`` dossiers a second for ``duration`` seconds, each on its own slot."""

    def __init__(
        self,
        intake_url: str,
        dossiers: Dossiers,
        token: Callable[[str, int], str],
        *,
        rate: float,
        duration: float,
        max_in_flight: int = 128,
        officers: int = 40,
    ) -> None:
        self.url = intake_url.rstrip("/")
        self.dossiers = dossiers
        self.token = token
        self.rate = rate
        self.duration = duration
        self.tally = Tally()
        self.max_in_flight = max_in_flight
        self.slots = asyncio.Semaphore(max_in_flight)
        self.officers = officers
        self._tokens: dict[tuple[str, int], str] = {}

    def _auth(self, agency: str, i: int) -> str:
        """A token of one of the desk's ``officers`` (each desk has many, and intake limits
        submissions per officer a minute)."""
        who = (agency, i % self.officers)
        if who not in self._tokens:
            self._tokens[who] = self.token(*who)
        return self._tokens[who]

    async def _one(self, http: httpx.AsyncClient, i: int, slot: float) -> None:
        """Send dossier ``i``; its latencies count from ``slot``, the moment it was due (a
        request that waited for a free connection is not let off that wait)."""
        agency, body = self.dossiers.body(i)
        t = self.tally
        headers = {
            "authorization": f"Bearer {self._auth(agency, i)}",
            "Idempotency-Key": f"load-{self.dossiers.run}-{i}",
        }
        started = slot
        t.sent += 1
        try:
            r = await http.post(f"{self.url}/v1/dossiers", json=body, headers=headers)
        except httpx.HTTPError as exc:
            t.errors += 1
            t.first_error = t.first_error or repr(exc)
            return
        finally:
            self.slots.release()
        if r.status_code in (200, 201):
            t.accepted += 1
            t.accept_ms.append((time.monotonic() - started) * 1000)
            t.submitted[r.json()["code"]] = started
        else:
            t.refused[r.status_code] = t.refused.get(r.status_code, 0) + 1
            t.first_error = t.first_error or f"{r.status_code} {r.text[:300]}"

    async def run(self) -> Tally:
        # never more requests than connections; a request waiting here for a free slot is
        # counted as sent late and timed from its slot
        clients = ClientPool(self.max_in_flight)
        try:
            start = time.monotonic()
            total = int(self.rate * self.duration)
            pending: set[asyncio.Task[None]] = set()
            for i in range(total):
                slot = start + i / self.rate
                delay = slot - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.slots.acquire()
                if time.monotonic() - slot > 0.05:
                    self.tally.behind += 1
                self.tally.scheduled += 1
                task = asyncio.create_task(self._one(clients.next(), i, slot))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
        finally:
            await clients.aclose()
        return self.tally


class Receipts:
    """Reads the notification topic from its end (no consumer group, so it takes nothing
    from the services) and times each receipt sent against its dossier's submission."""

    def __init__(self, bootstrap: str, prefix: str, tally: Tally, kind: str = "form01") -> None:
        self.consumer = AIOKafkaConsumer(
            NOTIFICATION.full_name(prefix),
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **KafkaSecurity.from_env(None).kwargs(),
        )
        self.tally = tally
        self.kind = kind
        self.seen: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # position at the end now, before the first dossier is sent
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for record in self.consumer:
            now = time.monotonic()
            with contextlib.suppress(ValueError, KeyError, TypeError):
                event = json.loads(record.value or b"")
                data = event["data"]
                if event["type"] != "notification.sent" or data["kind"] != self.kind:
                    continue
                code = data["code"]
                submitted = self.tally.submitted.get(code)
                if submitted is not None and code not in self.seen:
                    self.seen.add(code)
                    self.tally.receipt_ms.append((now - submitted) * 1000)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()
