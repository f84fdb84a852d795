"""Notification's wiring."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from contracts.topics import CONSULTATION, DOSSIER, ROUTING
from services.notification import api, handlers
from services.notification.delivery import Deliveries, DeliveryPolicy, SmtpSender
from services.runtime.forms import FormBook
from services.runtime.outbox import Waker
from services.runtime.service import Runtime, ServiceSpec, Wiring
from services.runtime.settings import ServiceSettings


def policy(s: ServiceSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        batch_size=s.delivery_batch_size,
        lease=timedelta(seconds=s.delivery_lease_s),
        max_attempts=s.delivery_max_attempts,
        retry_base=timedelta(seconds=s.delivery_retry_base_s),
        retry_max=timedelta(seconds=s.delivery_retry_max_s),
        poll_interval=s.delivery_poll_interval_s,
    )


def wire(rt: Runtime) -> Wiring:
    s = rt.settings
    notifier = handlers.Notifier(rt, FormBook.load())
    smtp = SmtpSender(s.smtp_host, s.smtp_port, s.smtp_sender, timeout=s.smtp_timeout_s)
    deliveries = Deliveries(rt, smtp, policy(s))
    tasks: list[asyncio.Task[None]] = []  # a reference keeps the task from being collected

    async def start_sender() -> None:
        """The sender loop runs beside the consumer; it ends when the pool closes."""
        waker = Waker(s.database_url, f"{s.db_schema}_deliveries")
        await waker.start()
        tasks.append(asyncio.create_task(deliveries.run(waker), name="notification-sender"))

    return Wiring(
        handlers=handlers.build(notifier),
        timers=handlers.timer_handlers(notifier),
        router=api.build_router(rt),
        on_start=start_sender,
        unblocking=handlers.UNBLOCKING,
    )


SPEC = ServiceSpec(
    name="notification",
    migrations=Path(__file__).parent / "migrations",
    topics=(DOSSIER, CONSULTATION, ROUTING),
    wire=wire,
)
