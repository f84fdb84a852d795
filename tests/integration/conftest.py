from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.runtime.db import create_pool, migrate


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, "rt", max_size=10)
    await migrate(p, "rt")
    await p.execute("CREATE TABLE effects (id bigserial PRIMARY KEY, ref text NOT NULL)")
    yield p
    await p.close()
