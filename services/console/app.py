"""The console's wiring: its consumer of every topic, the API, the pages, and the loops
that wake streams and sample lag."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter

from contracts.envelope import Envelope
from contracts.events import EVENT_TYPES
from services.console import api, pages
from services.console.handlers import ConsoleConsumer
from services.runtime.acl import CONSUMES
from services.runtime.service import Runtime, ServiceSpec, Wiring


async def _applied_by_console_consumer(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
    """Never called: ``ConsoleConsumer`` applies records itself (raw, every topic)."""


def wire(rt: Runtime) -> Wiring:
    broadcaster = api.Broadcaster(rt.settings.database_url, f"{rt.settings.db_schema}_events")
    monitor = api.Monitor(rt)
    router = APIRouter()
    router.include_router(api.build_router(rt, broadcaster, monitor))
    router.include_router(pages.build_router(rt, monitor))
    tasks: list[asyncio.Task[None]] = []  # a reference keeps the task from being collected

    async def start() -> None:
        await broadcaster.start()
        tasks.append(asyncio.create_task(monitor.run(), name="console-lag-sampler"))

    return Wiring(
        handlers={t: _applied_by_console_consumer for t in EVENT_TYPES},
        router=router,
        on_start=start,
        consumer_class=ConsoleConsumer,
        error_page=pages.error_page,
    )


SPEC = ServiceSpec(
    name="console",
    migrations=Path(__file__).parent / "migrations",
    topics=CONSUMES["console"],
    wire=wire,
)
