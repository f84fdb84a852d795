from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.local import SmtpSink
from services.runtime.clock import FileOffsetClock
from tests.e2e.stack import Stack


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def clock(tmp_path: Path) -> FileOffsetClock:
    """The clock every service of the stack reads: moving it moves time for all."""
    return FileOffsetClock(tmp_path / "clock-offset")


@pytest.fixture
def stack(
    kafka_bootstrap: str,
    kafka_env: dict[str, str],
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    smtp: SmtpSink,
    clock: FileOffsetClock,
) -> Iterator[Stack]:
    s = Stack(
        bootstrap=kafka_bootstrap,
        database_url=database_url,
        topic_prefix=topic_prefix,
        logs=tmp_path,
        smtp_port=smtp.port,
        extra={
            **kafka_env,  # each service connects as its own principal
            "LIENTHONG_CLOCK_FILE": str(clock.path),
        },
    )
    s.start()
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
