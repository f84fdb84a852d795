from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.runtime.acl import provision
from services.runtime.db import create_pool, migrate
from services.runtime.kafka_auth import KafkaSecurity


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, "rt", max_size=10)
    await migrate(p, "rt")
    await p.execute("CREATE TABLE effects (id bigserial PRIMARY KEY, ref text NOT NULL)")
    yield p
    await p.close()


@pytest.fixture
async def secured(
    kafka_bootstrap: str, kafka_env: dict[str, str], topic_prefix: str
) -> AsyncIterator[dict[str, str]]:
    """Topics and ACLs of this test's prefix, created by the admin; the environment with
    every service's credentials."""
    if not KafkaSecurity.from_env(None, kafka_env).sasl:
        pytest.skip("the session's broker has no SASL (testcontainers, or a PLAINTEXT cluster)")
    await provision(kafka_bootstrap, topic_prefix, env=kafka_env)
    yield kafka_env
