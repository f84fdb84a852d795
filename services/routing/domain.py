"""Routing rules: who leads a dossier and whose opinion it needs."""

from __future__ import annotations

from contracts.common import Procedure
from contracts.events import ConsultTarget


def consult_targets(procedure: Procedure) -> tuple[ConsultTarget, ...]:
    """One target per consulted agency, in catalogue order, never the lead agency itself."""
    seen: set[str] = set()
    out = []
    for c in procedure.consultations:
        if c.agency_id == procedure.lead_agency or c.agency_id in seen:
            continue
        seen.add(c.agency_id)
        out.append(
            ConsultTarget(
                agency_id=c.agency_id, agency_name=c.agency_name, template_id=c.template_id
            )
        )
    return tuple(out)


def initial_state(targets: tuple[ConsultTarget, ...]) -> str:
    return "consulting" if targets else "deciding"
