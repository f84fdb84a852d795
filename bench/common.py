"""Shared bench plumbing: a database and a broker, embedded unless the environment names one."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from deploy.kafka import LocalKafka
from deploy.local import embedded_postgres, local_broker
from services.runtime.kafka_auth import KafkaSecurity


def kafka_kwargs() -> dict[str, object]:
    """SASL settings of the environment (the admin) for a raw aiokafka client."""
    return KafkaSecurity.from_env().kwargs()


@contextlib.contextmanager
def database() -> Iterator[str]:
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="lt-bench-") as tmp:
        yield embedded_postgres(Path(tmp) / "pg")


@contextlib.contextmanager
def broker() -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    with tempfile.TemporaryDirectory(prefix="lt-bench-kafka-") as tmp:
        k = local_broker(Path(tmp))
        k.start()
        # SASL: the bench itself is the admin; ServiceStack gives each service its own.
        env = k.client_env() if isinstance(k, LocalKafka) else {}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield k.bootstrap
        finally:
            k.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


async def fresh_database(admin_url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


async def seed_requests(
    pool: asyncpg.Pool, n: int, *, due: object, template_id: str, agency_id: str
) -> None:
    """``n`` open opinion requests of distinct dossiers, all due at ``due``."""
    await pool.execute(
        """
        INSERT INTO requests(id, dossier_code, lead_agency, lead_agency_name, agency_id,
            agency_name, template_id, template_version, subject, body_text, body_html,
            requested_at, due_at)
        SELECT md5('r' || g)::uuid,
               '000.00.01.H29-2612' || lpad((g / 9000 + 1)::text, 2, '0') || '-'
                   || lpad((g % 9000 + 1)::text, 4, '0'),
               '000.00.06.H29', 'Sở Xây dựng', $3, 'Cơ quan được hỏi ý kiến',
               $4, 1, 's', 't', 'h', $1::timestamptz - interval '21 days', $1
        FROM generate_series(1, $2::int) g
        """,
        due,
        n,
        agency_id,
        template_id,
    )
    # Each request's round: the aggregate every consultation path locks first.
    await pool.execute(
        "INSERT INTO rounds(dossier_code, expected, opened_at)"
        " SELECT dossier_code, count(*), min(requested_at) FROM requests GROUP BY dossier_code"
        " ON CONFLICT DO NOTHING"
    )
