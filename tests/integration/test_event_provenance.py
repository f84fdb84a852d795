"""No principal can forge another's event, and dead letters cannot be laundered (issue 22,
findings 1, 2, 5 and 6), on the real broker (SASL/SCRAM, ACLs) and PostgreSQL.

- The console's credentials write no event topic: a forged ``round_completed`` is refused
  by the broker; the console may write only the replay topics.
- Each consumer writes only its own dead-letter topic, so the console knows a dead letter's
  writer from the topic, as the broker saw it, and shows as forged (and will not replay)
  one whose headers claim an origin that writer could not have had.
- A consumer applies a record of its replay topic only as the replay of a dead letter it
  holds, once, with the same event id.
- A record keyed by another dossier than its subject, or holding text PostgreSQL cannot
  store, is dead-lettered (``key_mismatch``, ``invalid``) and nothing is applied.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import TopicAuthorizationFailedError

from contracts.envelope import Envelope
from contracts.topics import CONSULTATION, DEAD_LETTERS, DOSSIER, NOTIFICATION, REPLAYS
from services.console.app import SPEC as CONSOLE
from services.runtime.acl import TOPIC, WRITE, Acl, create_acls, group_id, provision
from services.runtime.consumer import EventConsumer
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.service import create_app
from tests.helpers import eventually, headers, kafka_kwargs, read_topic, send_as, staff
from tests.integration.test_authorization import settings_for
from tests.integration.test_broker_auth import forged
from tests.integration.test_poison import A, B, Running, effects, event, publish

OPERATOR = staff("000.00.00.H29", "operator")


async def record_kind(conn: asyncpg.Connection, env: Envelope, payload: Any) -> None:
    """The handler under test: one ``effects`` row per event applied."""
    await conn.execute("INSERT INTO effects(ref) VALUES ($1)", payload.kind)


def recording_consumer(topic_prefix: str, *, replays: bool) -> EventConsumer:
    """Notification's consumer with ``record_kind``, reading its replay topic too if asked
    (a replay refused once is dead-lettered at once: ``max_attempts=1``)."""
    return EventConsumer(
        service="notification",
        group_id=group_id("notification", topic_prefix),
        topics=(NOTIFICATION, REPLAYS["notification"]) if replays else (NOTIFICATION,),
        handlers={"notification.sent": record_kind},
        topic_prefix=topic_prefix,
        max_attempts=1 if replays else 5,
    )


async def test_the_console_cannot_write_an_event_topic_only_replays(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str
) -> None:
    """Finding 1: with the console's credentials a forged ``consultation.round_completed``
    moved a route on. Now the broker refuses it, and any other event topic."""
    console = KafkaSecurity.from_env("console", secured)
    for topic in (CONSULTATION, DOSSIER, NOTIFICATION):
        with pytest.raises(TopicAuthorizationFailedError):
            await send_as(kafka_bootstrap, console, topic.full_name(topic_prefix), forged(), A)
    # nor another consumer's dead letters; its replay topics it may write
    with pytest.raises(TopicAuthorizationFailedError):
        await send_as(
            kafka_bootstrap, console, DEAD_LETTERS["routing"].full_name(topic_prefix), b"{}", A
        )
    await send_as(kafka_bootstrap, console, REPLAYS["routing"].full_name(topic_prefix), forged(), A)


async def test_provisioning_revokes_what_an_earlier_version_granted(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str
) -> None:
    """A broker provisioned before kept the console's writes on every event topic: the
    next provisioning takes them back (ACLs are not only ever added)."""
    console = KafkaSecurity.from_env("console", secured)
    old = Acl(TOPIC, CONSULTATION.full_name(topic_prefix), console.username or "console", WRITE)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **kafka_kwargs())
    await admin.start()
    try:
        await create_acls(admin, [old])
    finally:
        await admin.close()
    await send_as(kafka_bootstrap, console, CONSULTATION.full_name(topic_prefix), forged(), A)
    await provision(kafka_bootstrap, topic_prefix, env=secured)
    with pytest.raises(TopicAuthorizationFailedError):
        await send_as(kafka_bootstrap, console, CONSULTATION.full_name(topic_prefix), forged(), A)


async def test_a_consumer_writes_only_its_own_dead_letters(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str
) -> None:
    notification = KafkaSecurity.from_env("notification", secured)
    with pytest.raises(TopicAuthorizationFailedError):
        await send_as(
            kafka_bootstrap,
            notification,
            DEAD_LETTERS["consultation"].full_name(topic_prefix),
            b"{}",
            A,
        )
    with pytest.raises(TopicAuthorizationFailedError):  # nor a replay topic
        await send_as(
            kafka_bootstrap, notification, REPLAYS["routing"].full_name(topic_prefix), b"{}", A
        )
    await send_as(
        kafka_bootstrap,
        notification,
        DEAD_LETTERS["notification"].full_name(topic_prefix),
        b"{}",
        A,
    )


@pytest.fixture
async def console(
    kafka_bootstrap: str, database_url: str, topic_prefix: str, secured: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        CONSOLE, settings_for("console", kafka_bootstrap, database_url, topic_prefix, 1)
    )
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")
        )
        yield client


async def dead_letter_of(console: httpx.AsyncClient, event_id: uuid.UUID) -> dict[str, Any]:
    r = await eventually(
        lambda: console.get("/v1/console/dead-letters", headers=OPERATOR),
        lambda r: any(d["event_id"] == str(event_id) for d in r.json()),
        timeout=60,
    )
    entry: dict[str, Any] = next(d for d in r.json() if d["event_id"] == str(event_id))
    return entry


async def test_a_laundered_dead_letter_is_shown_forged_and_cannot_be_replayed(
    kafka_bootstrap: str,
    secured: dict[str, str],
    topic_prefix: str,
    console: httpx.AsyncClient,
) -> None:
    """Finding 2: a dead letter written as notification, claiming to come from the
    consultation topic through consultation's group, was replayed onto the consultation
    topic. Now the console names its writer from the topic and refuses it."""
    notification = KafkaSecurity.from_env("notification", secured)
    value = forged()
    event_id = Envelope.model_validate_json(value).event_id
    claims = [
        ("dlq_reason", b"handler_failed"),
        ("dlq_detail", b"RuntimeError: try again"),
        ("dlq_consumer", group_id("consultation", topic_prefix).encode()),
        ("dlq_topic", CONSULTATION.full_name(topic_prefix).encode()),
        ("dlq_partition", b"0"),
        ("dlq_offset", b"0"),
        ("dlq_stored_id", b"1"),
    ]
    await send_as(
        kafka_bootstrap,
        notification,
        DEAD_LETTERS["notification"].full_name(topic_prefix),
        value,
        A,
        claims,
    )
    entry = await dead_letter_of(console, event_id)
    assert entry["writer"] == "notification" and entry["consumer"].endswith("consultation")
    assert entry["forged"] and "lienthong-consultation" in entry["forged"], entry
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay",
        json={"reason": "Thử phát lại"},
        headers=OPERATOR,
    )
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "origin", r.text
    page = await console.get(
        f"/dead-letters/{entry['id']}", headers={**OPERATOR, "accept": "text/html"}
    )
    assert 'id="forged"' in page.text and 'id="replay"' not in page.text
    # nothing went out on any replay topic
    replays = await read_topic(
        kafka_bootstrap, REPLAYS["notification"].full_name(topic_prefix), at_least=0, timeout=2
    )
    assert replays == []


async def test_a_replay_is_applied_once_and_only_for_a_dead_letter_the_consumer_holds(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic_prefix: str, secured: dict[str, str]
) -> None:
    """A record on notification's replay topic is applied only as the replay of one of its
    own dead letters, not replayed before, with that dead letter's event id."""

    replay_topic = REPLAYS["notification"].full_name(topic_prefix)
    consumer = recording_consumer(topic_prefix, replays=True)
    poisoned = []
    for kind in ("first", "second"):
        p = json.loads(event(kind))
        p["data"].pop("recipient")
        poisoned.append(p)
    await publish(
        kafka_bootstrap,
        NOTIFICATION.full_name(topic_prefix),
        [(A, json.dumps(p).encode()) for p in poisoned],
    )
    console = KafkaSecurity.from_env("console", secured)
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        stored = await eventually(
            lambda: pool.fetch("SELECT id FROM dead_letters WHERE reason = 'invalid' ORDER BY id"),
            lambda r: len(r) == 2,
        )
        one, two = (r["id"] for r in stored)
        fixed = [{**p, "data": {**p["data"], "recipient": "a@b.vn"}} for p in poisoned]

        async def replay(value: dict[str, Any], entry: object) -> None:
            await send_as(
                kafka_bootstrap,
                console,
                replay_topic,
                json.dumps(value).encode(),
                A,
                [("replay_of", str(entry).encode())],
            )

        await replay(fixed[0], one)  # the operator's fix: applied
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 1) == ["first"]
        await replay(fixed[0], one)  # again: the inbox knows the event, no second effect
        await replay(fixed[1], one)  # dead letter one was replayed already
        await replay(json.loads(event("new")), two)  # another event passed off as two
        stranger = json.loads(event("stranger"))
        await replay(stranger, 999_999)  # a dead letter it does not hold
        # ... which made a dead letter of the replay topic: replaying *that* would let the
        # console mint one to replay; refused too
        made = await eventually(
            lambda: pool.fetchval(
                "SELECT id FROM dead_letters WHERE topic = $1"
                " AND convert_from(value, 'UTF8') LIKE $2",
                replay_topic,
                f"%{stranger['event_id']}%",
            ),
            lambda v: v is not None,
        )
        await replay(stranger, made)
        await replay(fixed[1], two)
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 2) == [
            "first",
            "second",
        ]
        refused = await eventually(
            lambda: pool.fetch(
                "SELECT detail FROM dead_letters WHERE reason = 'replay_refused' ORDER BY id"
            ),
            lambda r: len(r) >= 4,
            timeout=30,
        )
    assert await effects(pool) == ["first", "second"]
    details = [r["detail"] for r in refused]
    assert f"no dead letter {one} of a topic it consumes" in details[0], details
    assert f"dead letter {two} held event_id" in details[1], details
    assert "no dead letter 999999" in details[2], details
    assert f"no dead letter {made} of a topic it consumes" in details[3], details
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM dead_letters WHERE id = ANY($1::bigint[]) AND replayed_at IS NOT NULL",
            [one, two],
        )
        == 2
    )


async def test_a_replay_of_an_event_applied_since_settles_its_dead_letter_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic_prefix: str, secured: dict[str, str]
) -> None:
    """The producer sent the fixed event itself after the dead letter: the operator's later
    replay has no second effect, and the dead letter is settled (replayed)."""

    consumer = recording_consumer(topic_prefix, replays=True)
    poisoned = json.loads(event("late-fix"))
    poisoned["data"].pop("recipient")
    fixed = {**poisoned, "data": {**poisoned["data"], "recipient": "a@b.vn"}}
    topic = NOTIFICATION.full_name(topic_prefix)
    await publish(kafka_bootstrap, topic, [(A, json.dumps(poisoned).encode())])
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        stored = await eventually(
            lambda: pool.fetchval("SELECT id FROM dead_letters WHERE reason = 'invalid'"),
            lambda v: v is not None,
        )
        await publish(kafka_bootstrap, topic, [(A, json.dumps(fixed).encode())])
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 1) == ["late-fix"]
        await send_as(
            kafka_bootstrap,
            KafkaSecurity.from_env("console", secured),
            REPLAYS["notification"].full_name(topic_prefix),
            json.dumps(fixed).encode(),
            A,
            [("replay_of", str(stored).encode())],
        )
        await eventually(
            lambda: pool.fetchval(
                "SELECT replayed_at IS NOT NULL FROM dead_letters WHERE id = $1", stored
            ),
            lambda v: bool(v),
        )
    assert await effects(pool) == ["late-fix"]
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_a_key_that_is_not_the_subject_and_unstorable_text_are_dead_lettered(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic_prefix: str, secured: dict[str, str]
) -> None:
    """Findings 5 and 6: a valid event keyed by another dossier, and one holding U+0000, are
    refused before any effect; the good event after them goes through."""

    nul = json.loads(event("nul"))
    nul["data"]["subject"] = "Thông\u0000báo"
    await publish(
        kafka_bootstrap,
        NOTIFICATION.full_name(topic_prefix),
        [(B, event("wrong-key", subject=A)), (A, json.dumps(nul).encode()), (A, event("good"))],
    )
    consumer = recording_consumer(topic_prefix, replays=False)
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 1) == ["good"]
        dead = await read_topic(
            kafka_bootstrap, DEAD_LETTERS["notification"].full_name(topic_prefix), at_least=2
        )
    reasons = [headers(r)["dlq_reason"] for r in dead]
    assert reasons == ["key_mismatch", "invalid"]
    assert B in headers(dead[0])["dlq_detail"] and "U+0000" in headers(dead[1])["dlq_detail"]
    assert all(headers(r)["dlq_consumer"] == group_id("notification", topic_prefix) for r in dead)
    assert await effects(pool) == ["good"]
