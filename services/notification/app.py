"""Notification's wiring."""

from __future__ import annotations

from pathlib import Path

from contracts.topics import CONSULTATION, DOSSIER
from services.notification import api, handlers
from services.notification.delivery import SmtpSender
from services.notification.domain import FormBook
from services.runtime.service import Runtime, ServiceSpec, Wiring


def wire(rt: Runtime) -> Wiring:
    s = rt.settings
    notifier = handlers.Notifier(
        rt, FormBook.load(), SmtpSender(s.smtp_host, s.smtp_port, s.smtp_sender)
    )
    return Wiring(
        handlers=handlers.build(notifier),
        timers=handlers.timer_handlers(notifier),
        router=api.build_router(rt),
    )


SPEC = ServiceSpec(
    name="notification",
    migrations=Path(__file__).parent / "migrations",
    topics=(DOSSIER, CONSULTATION),
    wire=wire,
)
