"""Routing's wiring."""

from __future__ import annotations

from pathlib import Path

from contracts.topics import CATALOGUE, CONSULTATION, DOSSIER
from services.routing import api, handlers
from services.runtime.service import Runtime, ServiceSpec, Wiring


def wire(rt: Runtime) -> Wiring:
    return Wiring(handlers=handlers.build(rt), router=api.router(rt))


SPEC = ServiceSpec(
    name="routing",
    migrations=Path(__file__).parent / "migrations",
    topics=(CATALOGUE, DOSSIER, CONSULTATION),
    wire=wire,
)
