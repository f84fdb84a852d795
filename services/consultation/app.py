"""Consultation's wiring."""

from __future__ import annotations

from pathlib import Path

from contracts.agencies import default_book
from contracts.topics import DOSSIER, REPLAYS, ROUTING
from services.consultation import api, handlers
from services.consultation.opinions import Opinions
from services.consultation.templates import TEMPLATES_DIR, TemplateBook
from services.runtime.calendar import CompressedCalendar
from services.runtime.service import Runtime, ServiceSpec, Wiring


def wire(rt: Runtime) -> Wiring:
    book = TemplateBook.load(rt.settings.templates_dir or TEMPLATES_DIR)
    calendar = CompressedCalendar() if rt.settings.demo_minutes else rt.calendar
    opinions = Opinions(rt, book, calendar, default_book())
    return Wiring(
        handlers=handlers.build(opinions),
        timers=handlers.timer_handlers(opinions),
        router=api.build_router(rt, opinions, book),
    )


SPEC = ServiceSpec(
    name="consultation",
    migrations=Path(__file__).parent / "migrations",
    topics=(ROUTING, DOSSIER, REPLAYS["consultation"]),
    wire=wire,
)
