"""Intake's wiring."""

from __future__ import annotations

import uuid
from pathlib import Path

from contracts.events import ProcedurePublished
from contracts.topics import CONSULTATION, DOSSIER, NOTIFICATION, ROUTING
from services.intake import api, handlers, store
from services.intake.desk import Desk
from services.intake.domain import CATALOGUE_DIR, Catalogue
from services.runtime.service import Runtime, ServiceSpec, Wiring

CATALOGUE_NS = uuid.UUID("7f1b9d7e-2b7c-4c5e-9a53-6f0c7a1d2e11")


def wire(rt: Runtime) -> Wiring:
    catalogue = Catalogue.load(rt.settings.catalogue_dir or CATALOGUE_DIR)
    desk = Desk(rt, catalogue)

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

    return Wiring(
        handlers=handlers.handlers(desk),
        router=api.build_router(rt, catalogue, desk),
        on_start=publish_catalogue,
    )


SPEC = ServiceSpec(
    name="intake",
    migrations=Path(__file__).parent / "migrations",
    topics=(DOSSIER, ROUTING, CONSULTATION, NOTIFICATION),
    wire=wire,
)
