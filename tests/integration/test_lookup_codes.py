"""The applicant's lookup code (X-Lookup-Code) on every service that takes one, intake and
notification, on the real broker and PostgreSQL: a wrong code and a dossier that does not
exist get one answer (status, body, headers, the same hash work), and wrong guesses are
limited per dossier and per client address, the count shared by replicas."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from deploy.local import SmtpSink
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION
from services.runtime import auth
from services.runtime.calendar import VN_TZ
from services.runtime.clock import ManualClock
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import applicant, configure_auth, eventually, staff

DESK = "000.01.50.H29"  # receives (and decides) 1.000894
MARRIAGE = {
    "procedure_code": "1.000894",
    "channel": 1,
    "applicant": {
        "name": "Trần Văn Bình",
        "id_number": "001090001234",
        "email": "b@example.vn",
        "commune": "SAI_GON",
    },
    "documents": [{"code": "TK", "name": "Tờ khai đăng ký kết hôn"}],
}
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=VN_TZ)
NO_SUCH = "000.01.50.H29-261123-9999"
WRONG = "AAAA-BBBB-CCCC"


@dataclass
class Stack:
    clock: ManualClock
    apps: dict[str, FastAPI]
    code: str = ""
    lookup: str = ""
    nid: str = ""

    def client(self, name: str, address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.apps[name], client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=f"http://{name}", timeout=30)

    def pool(self, name: str) -> Any:
        return self.apps[name].state.runtime.pool


@pytest.fixture
async def stack(kafka_bootstrap: str, database_url: str, topic_prefix: str) -> AsyncIterator[Stack]:
    """Intake (two replicas) and notification, one dossier received and its Form 01 sent."""
    sink = SmtpSink()
    sink.start()
    clock = ManualClock(NOW)

    def settings(name: str, replica: str = "0") -> ServiceSettings:
        s = configure_auth(ServiceSettings.for_service(name))
        s.kafka_bootstrap_servers = kafka_bootstrap
        s.database_url = database_url
        s.topic_prefix = topic_prefix
        s.smtp_port = sink.port
        s.replica = replica
        return s

    apps = {
        "intake": create_app(INTAKE, settings("intake"), clock),
        "intake-2": create_app(INTAKE, settings("intake", "1"), clock),
        "notification": create_app(NOTIFICATION, settings("notification"), clock),
    }
    try:
        async with contextlib.AsyncExitStack() as es:
            for app in apps.values():
                await es.enter_async_context(app.router.lifespan_context(app))
            s = Stack(clock, apps)
            async with s.client("intake") as intake:
                r = await intake.post(
                    "/v1/dossiers", json=MARRIAGE, headers=staff(DESK, now=clock.now())
                )
            assert r.status_code == 201, r.text
            s.code, s.lookup = r.json()["code"], r.json()["lookup_code"]
            nid = await eventually(
                lambda: s.pool("notification").fetchval(
                    "SELECT id FROM notifications WHERE dossier_code = $1 AND kind = 'form01'",
                    s.code,
                ),
                lambda v: v is not None,
                timeout=60,
            )
            s.nid = str(nid)
            yield s
    finally:
        sink.stop()


def doors(s: Stack) -> list[tuple[str, Callable[[str], tuple[str, str, dict[str, Any]]]]]:
    """Every endpoint that takes a lookup code: (service, a request for a dossier code)."""
    return [
        ("intake", lambda code: ("GET", f"/v1/dossiers/{code}", {})),
        (
            "intake",
            lambda code: ("POST", f"/v1/dossiers/{code}/supplements", {"json": {"documents": []}}),
        ),
        (
            "intake",
            lambda code: ("POST", f"/v1/dossiers/{code}/withdrawal", {"json": {"reason": "Rút"}}),
        ),
        ("notification", lambda code: ("GET", "/v1/notifications", {"params": {"dossier": code}})),
        # a notification: the one of the dossier, or one that does not exist
        (
            "notification",
            lambda code: (
                "GET",
                f"/v1/notifications/{s.nid if code == s.code else uuid.uuid4()}",
                {},
            ),
        ),
        (
            "notification",
            lambda code: (
                "GET",
                f"/v1/notifications/{s.nid if code == s.code else uuid.uuid4()}/html",
                {},
            ),
        ),
    ]


async def test_a_wrong_code_and_an_unknown_dossier_get_one_answer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack
    hashed: list[str] = []
    real = auth.hash_lookup_code

    def counting(dossier_code: str, lookup_code: str) -> str:
        hashed.append(dossier_code)
        return real(dossier_code, lookup_code)

    monkeypatch.setattr(auth, "hash_lookup_code", counting)
    for service, request in doors(s):
        async with s.client(service) as http:
            answers = []
            for code, lookup in ((s.code, WRONG), (NO_SUCH, WRONG), (NO_SUCH, s.lookup)):
                method, url, kw = request(code)
                hashed.clear()
                r = await http.request(method, url, headers=applicant(lookup), **kw)
                assert len(hashed) == 1, (url, hashed)  # the same hash work either way
                answers.append((r.status_code, r.json(), r.headers.get("www-authenticate")))
            assert answers[0] == answers[1] == answers[2], (service, url, answers)
            status, body, scheme = answers[0]
            assert status == 401 and scheme == auth.LOOKUP_HEADER
            assert body == {
                "detail": auth.WRONG_LOOKUP,
                "errors": [{"field": "header.X-Lookup-Code", "reason": auth.WRONG_LOOKUP}],
            }
    async with s.client("intake") as intake, s.client("notification") as notes:
        mine = applicant(s.lookup)
        assert (await intake.get(f"/v1/dossiers/{s.code}", headers=mine)).status_code == 200
        r = await notes.get("/v1/notifications", params={"dossier": s.code}, headers=mine)
        assert r.status_code == 200 and len(r.json()) >= 1
        assert (await notes.get(f"/v1/notifications/{s.nid}", headers=mine)).status_code == 200
        # staff are told what exists: they are authenticated, and an agency's 403 is theirs
        r = await intake.get(f"/v1/dossiers/{NO_SUCH}", headers=staff(DESK, now=s.clock.now()))
        assert r.status_code == 404


@pytest.mark.parametrize("service", ["intake", "notification"])
async def test_the_eleventh_wrong_code_for_a_dossier_is_refused_for_a_while(
    stack: Stack, service: str
) -> None:
    """10 wrong codes in 15 minutes for one dossier, from anywhere (and through either
    intake replica): the 11th attempt gets 429 with Retry-After, the right code too, until
    the oldest wrong one is 15 minutes old. Right codes are never counted."""
    s = stack
    url, kw = (
        (f"/v1/dossiers/{s.code}", {})
        if service == "intake"
        else ("/v1/notifications", {"params": {"dossier": s.code}})
    )
    replicas = ["intake", "intake-2"] if service == "intake" else ["notification"]
    async with contextlib.AsyncExitStack() as es:
        clients = [
            await es.enter_async_context(s.client(replicas[i % len(replicas)], f"10.0.0.{i}"))
            for i in range(12)
        ]
        for _ in range(15):  # the applicant reading their own dossier is never limited
            r = await clients[0].get(url, headers=applicant(s.lookup), **kw)
            assert r.status_code == 200, r.text
        first = s.clock.now()
        for i in range(10):
            r = await clients[i].get(url, headers=applicant(WRONG), **kw)
            assert r.status_code == 401, (i, r.text)
            s.clock.advance(timedelta(seconds=30))
        for lookup in (WRONG, s.lookup):  # the 11th: not even checked
            r = await clients[10].get(url, headers=applicant(lookup), **kw)
            assert r.status_code == 429, r.text
            wait = int(r.headers["Retry-After"])
            assert wait == int((first + timedelta(minutes=15) - s.clock.now()).total_seconds())
            assert "thử lại sau" in r.json()["detail"] and str(wait) in r.json()["detail"]
            assert r.json()["errors"][0]["field"] == "header.X-Lookup-Code"
        # staff are not applicants: their tokens still open it
        desk = staff(DESK, now=s.clock.now())
        assert (await clients[11].get(url, headers=desk, **kw)).status_code == 200
        # another dossier is not locked by this one's guesses
        r = await clients[11].get(
            url.replace(s.code, NO_SUCH), headers=applicant(WRONG), **_other(kw)
        )
        assert r.status_code == 401
        s.clock.set(first + timedelta(minutes=15, seconds=1))  # the oldest wrong code left
        r = await clients[10].get(url, headers=applicant(s.lookup), **kw)
        assert r.status_code == 200, r.text
        r = await clients[10].get(url, headers=applicant(WRONG), **kw)
        assert r.status_code == 401  # one place free, taken again
        r = await clients[10].get(url, headers=applicant(s.lookup), **kw)
        assert r.status_code == 429


def _other(kw: dict[str, Any]) -> dict[str, Any]:
    return {"params": {"dossier": NO_SUCH}} if "params" in kw else {}


async def test_wrong_codes_are_limited_per_client_address(stack: Stack) -> None:
    """30 wrong guesses in 15 minutes from one address, each for another dossier: the 31st
    gets 429, whatever dossier it names; another address is still answered."""
    s = stack
    async with s.client("intake", "192.0.2.7") as guesser, s.client("intake", "192.0.2.8") as other:
        for n in range(30):
            r = await guesser.get(
                f"/v1/dossiers/{DESK}-261123-{n + 100:04d}", headers=applicant(WRONG)
            )
            assert r.status_code == 401, (n, r.text)
        r = await guesser.get(f"/v1/dossiers/{s.code}", headers=applicant(s.lookup))
        assert r.status_code == 429 and int(r.headers["Retry-After"]) == 900
        r = await other.get(f"/v1/dossiers/{s.code}", headers=applicant(s.lookup))
        assert r.status_code == 200
        rows = await s.pool("intake").fetchval(
            "SELECT count(*) FROM lookup_failures WHERE key LIKE 'client:%'"
        )
        assert rows == 30  # refused guesses are not counted: the lock ends on its own


async def test_racing_guesses_through_both_replicas_check_no_more_than_the_limit(
    stack: Stack,
) -> None:
    """40 wrong codes for one dossier at once, from 40 addresses, half through each intake
    replica: at most 10 are checked (401), the others 429; after them, guesses one at a time
    are checked only until 10 in all were."""
    s = stack
    url = f"/v1/dossiers/{s.code}"
    async with contextlib.AsyncExitStack() as es:
        clients = [
            await es.enter_async_context(s.client(("intake", "intake-2")[i % 2], f"10.1.0.{i}"))
            for i in range(40)
        ]
        burst = await asyncio.gather(*(c.get(url, headers=applicant(WRONG)) for c in clients))
        statuses = [r.status_code for r in burst]
        assert set(statuses) <= {401, 429} and statuses.count(401) <= 10, statuses
        checked = statuses.count(401)
        for c in clients:
            r = await c.get(url, headers=applicant(WRONG))
            if r.status_code == 429:
                break
            assert r.status_code == 401
            checked += 1
        assert checked == 10
        rows = await s.pool("intake").fetchval(
            "SELECT count(*) FROM lookup_failures WHERE key = $1", f"dossier:{s.code}"
        )
        assert rows == 10
