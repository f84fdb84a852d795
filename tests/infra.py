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
from deploy.local import database_passwords, embedded_postgres
from services.runtime import db_roles
from services.runtime.kafka_auth import FIELDS


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
def kafka(tmp: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Yields (bootstrap servers, kind, client environment).

    The client environment holds the SASL settings: the admin as ``KAFKA_SASL_…`` and each
    service's principal as ``INTAKE_KAFKA_SASL_…`` etc. (for the local broker, whose
    security is on; from the environment for a cluster named there; empty otherwise)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        kafka_env = {k: v for k, v in os.environ.items() if "KAFKA_S" in k}  # SASL, SECURITY
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"], "env", kafka_env
    elif docker_available():
        from testcontainers.kafka import KafkaContainer

        # Confluent Platform 8.0 ships Apache Kafka 4.0. PLAINTEXT, no ACLs.
        with KafkaContainer("confluentinc/cp-kafka:8.0.0").with_kraft() as k:
            yield k.get_bootstrap_server(), "testcontainers", {}
    else:
        broker = LocalKafka(tmp / "kafka")
        broker.start()
        try:
            yield broker.bootstrap, "apache-kafka", broker.client_env()
        finally:
            broker.stop()


ADMIN_KEYS = tuple(f"KAFKA_{f}" for f in FIELDS)


@contextlib.contextmanager
def admin_environment(env: dict[str, str]) -> Iterator[None]:
    """The test process itself connects as the admin of ``env`` (its ``KAFKA_…`` part), as
    every client that takes its settings from the environment does."""
    saved = {k: os.environ.get(k) for k in ADMIN_KEYS}
    os.environ.update({k: v for k, v in env.items() if k in ADMIN_KEYS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


async def provision_roles(url: str) -> dict[str, str]:
    """The services' roles and schemas in the database of ``url`` (a superuser's), with
    this process's passwords (roles are cluster-wide: every test database of the session
    gets the same ones); service name -> DSN."""
    return await db_roles.provision(url, database_passwords())


def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."
