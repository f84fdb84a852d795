"""Intake's wiring."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from contracts.events import ProcedurePublished
from contracts.topics import CONSULTATION, DOSSIER, NOTIFICATION, REPLAYS, ROUTING
from services.intake import api, handlers, store
from services.intake.desk import Desk
from services.intake.domain import CATALOGUE_DIR, Catalogue
from services.intake.portal_sync import PortalSync, SyncPolicy
from services.runtime.outbox import Waker
from services.runtime.portal_client import PortalClient, PortalConfig
from services.runtime.service import Runtime, ServiceSpec, Wiring
from services.runtime.settings import ServiceSettings

CATALOGUE_NS = uuid.UUID("7f1b9d7e-2b7c-4c5e-9a53-6f0c7a1d2e11")


def portal_client(s: ServiceSettings) -> PortalClient | None:
    """The portal's client when a portal is configured (INTAKE_PORTAL_URL), else none: no
    dossier is synced."""
    if not s.portal_url:
        return None
    return PortalClient(
        PortalConfig(
            base_url=s.portal_url,
            username=s.portal_username,
            password=s.portal_password,
            unit_code=s.portal_unit,
            dstcode=s.portal_dstcode,
            timeout_s=s.portal_timeout_s,
        )
    )


def wire(rt: Runtime) -> Wiring:
    s = rt.settings
    catalogue = Catalogue.load(s.catalogue_dir or CATALOGUE_DIR)
    sync = PortalSync(
        pool=lambda: rt.pool,
        clock=rt.clock,
        catalogue=catalogue,
        client=portal_client(s),
        policy=SyncPolicy(
            batch_size=s.portal_batch_size,
            retry_base=timedelta(seconds=s.portal_retry_base_s),
            retry_max=timedelta(seconds=s.portal_retry_max_s),
            lease=timedelta(seconds=max(30.0, 3 * s.portal_timeout_s)),
        ),
    )
    desk = Desk(rt, catalogue, on_change=sync.record)
    tasks: list[asyncio.Task[None]] = []  # a reference keeps each task from being collected

    async def publish_catalogue() -> None:
        """Publish each procedure version once; a restart republishes nothing new."""
        async with rt.pool.acquire() as conn, conn.transaction():
            for p in catalogue.all():
                if await store.save_procedure(conn, p):
                    await rt.outbox.add(
                        conn,
                        ProcedurePublished(procedure=p),
                        subject=p.code,
                        event_id=uuid.uuid5(CATALOGUE_NS, f"{p.code}:{p.version}"),
                    )

    async def start() -> None:
        await publish_catalogue()
        if sync.enabled:
            waker = Waker(s.database_url, f"{s.db_schema}_portal_sync")
            await waker.start()
            tasks.append(asyncio.create_task(sync.run(waker), name="portal-sync"))
            tasks.append(
                asyncio.create_task(
                    sync.run_reconciler(s.portal_reconcile_interval_s), name="portal-reconcile"
                )
            )

    return Wiring(
        handlers=handlers.handlers(desk, sync),
        router=api.build_router(rt, catalogue, desk, sync),
        on_start=start,
    )


SPEC = ServiceSpec(
    name="intake",
    migrations=Path(__file__).parent / "migrations",
    topics=(DOSSIER, ROUTING, CONSULTATION, NOTIFICATION, REPLAYS["intake"]),
    wire=wire,
)
