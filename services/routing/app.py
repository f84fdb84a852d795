"""Routing's wiring: the use cases built with what they need, then handlers and routes."""

from __future__ import annotations

from pathlib import Path

from contracts.agencies import default_book
from contracts.topics import CATALOGUE, CONSULTATION, DOSSIER, REPLAYS
from services.routing import api, handlers
from services.routing.usecases import Routing
from services.runtime.forms import FormBook
from services.runtime.service import Runtime, ServiceSpec, Wiring


def wire(rt: Runtime) -> Wiring:
    routing = Routing(
        pool=lambda: rt.pool,
        outbox=rt.outbox,
        clock=rt.clock,
        calendar=rt.calendar,
        book=default_book(),
        watch_seconds=rt.settings.apology_watch_working_hours * 3600,
    )
    return Wiring(
        handlers=handlers.build(routing),
        timers=handlers.timers(routing),
        router=api.router(rt, routing, FormBook.load()),
    )


SPEC = ServiceSpec(
    name="routing",
    migrations=Path(__file__).parent / "migrations",
    topics=(CATALOGUE, DOSSIER, CONSULTATION, REPLAYS["routing"]),
    wire=wire,
)
