"""Real infrastructure for tests: environment, else testcontainers, else embedded.

- ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` set: use them.
- Docker reachable: Apache Kafka (KRaft) and PostgreSQL containers via testcontainers.
- Otherwise: Apache Kafka run locally on the JDK (``deploy.kafka``) and embedded PostgreSQL.
Each is started once per test session.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from deploy.kafka import LocalKafka
from deploy.local import embedded_postgres


def docker_available() -> bool:
    if os.environ.get("LIENTHONG_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def kafka(tmp: Path) -> Iterator[tuple[str, str]]:
    """Yields (bootstrap servers, kind)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], "env"
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        # Confluent Platform 8.0 ships Apache Kafka 4.0.
        with KafkaContainer("confluentinc/cp-kafka:8.0.0").with_kraft() as k:
            yield k.get_bootstrap_server(), "testcontainers"
    else:
        broker = LocalKafka(tmp / "kafka")
        broker.start()
        try:
            yield broker.bootstrap, "apache-kafka"
        finally:
            broker.stop()


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[tuple[str, str]]:
    """Yields (admin database URL, kind)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"], "env"
    elif docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17") as pg:
            yield pg.get_connection_url(driver=None), "testcontainers"
    else:
        yield embedded_postgres(tmp / "pg"), "embedded"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def fresh_database(admin_url: str) -> str:
    """A new, empty database on the same server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."
