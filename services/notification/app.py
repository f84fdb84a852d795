"""Notification's wiring: the consumer's handlers, the API, and one sender loop per
channel (email, the notices people hand over, and SMS and the portal where configured)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from contracts.topics import CONSULTATION, DOSSIER, REPLAYS, ROUTING
from services.notification import api, domain, handlers
from services.notification.channels import PortalSender, SmsSender
from services.notification.delivery import (
    Deliveries,
    DeliveryPolicy,
    FanOut,
    HandedOver,
    RecipientLimit,
    SmtpSender,
)
from services.runtime.forms import FormBook
from services.runtime.logging import get_logger
from services.runtime.portal_client import PortalClient, PortalConfig
from services.runtime.service import Runtime, ServiceSpec, Wiring
from services.runtime.settings import ServiceSettings

log = get_logger(__name__)


def policy(s: ServiceSettings) -> DeliveryPolicy:
    return DeliveryPolicy(
        batch_size=s.delivery_batch_size,
        lease=timedelta(seconds=s.delivery_lease_s),
        max_attempts=s.delivery_max_attempts,
        retry_base=timedelta(seconds=s.delivery_retry_base_s),
        retry_max=timedelta(seconds=s.delivery_retry_max_s),
        poll_interval=s.delivery_poll_interval_s,
    )


def portal_config(s: ServiceSettings) -> PortalConfig:
    return PortalConfig(
        base_url=s.portal_url,
        username=s.portal_username,
        password=s.portal_password,
        unit_code=s.portal_unit,
        dstcode=s.portal_dstcode,
        timeout_s=s.portal_timeout_s,
    )


def sender_loops(rt: Runtime) -> list[Deliveries]:
    """One loop per channel, so that one channel's outage never holds another's messages:
    email, the notices people hand over, and SMS and the portal where configured."""
    s = rt.settings
    p = policy(s)
    channels = handlers.configured_channels(s)
    loops = [Deliveries(rt, HandedOver(), p)]
    if domain.EMAIL in channels:
        smtp = SmtpSender(s.smtp_host, s.smtp_port, s.smtp_sender, timeout=s.smtp_timeout_s)
        loops.append(Deliveries(rt, smtp, p))
    if domain.SMS in channels:
        if not s.sms_webhook_secret:
            log.warning("sms_receipts_unverifiable", hint="set NOTIFICATION_SMS_WEBHOOK_SECRET")
        sms = SmsSender(
            s.sms_url,
            s.sms_api_key,
            public_url=s.public_url,
            rate_per_second=s.sms_rate_per_second,
        )
        limit = RecipientLimit(domain.SMS, s.sms_per_recipient_per_hour)
        loops.append(Deliveries(rt, sms, p, limit=limit))
    if domain.PORTAL in channels:
        loops.append(Deliveries(rt, PortalSender(PortalClient(portal_config(s))), p))
    return loops


def wire(rt: Runtime) -> Wiring:
    s = rt.settings
    notifier = handlers.Notifier(rt, FormBook.load())
    loops = sender_loops(rt)
    tasks: list[asyncio.Task[None]] = []  # a reference keeps the task from being collected

    async def start_senders() -> None:
        """The sender loops run beside the consumer; they end when the pool closes. One
        LISTEN connection wakes them all."""
        fan_out = FanOut(s.database_url, f"{s.db_schema}_deliveries")
        await fan_out.start()

        async def watch() -> None:
            try:
                await fan_out.watch(rt.pool.is_closing)
            finally:
                await fan_out.stop()

        tasks.append(asyncio.create_task(watch(), name="notification-listen"))
        for loop in loops:
            tasks.append(
                asyncio.create_task(
                    loop.run(fan_out.subscribe()), name=f"notification-sender-{loop.name}"
                )
            )

    return Wiring(
        handlers=handlers.build(notifier),
        timers=handlers.timer_handlers(notifier),
        router=api.build_router(rt),
        on_start=start_senders,
        unblocking=handlers.UNBLOCKING,
    )


SPEC = ServiceSpec(
    name="notification",
    migrations=Path(__file__).parent / "migrations",
    topics=(DOSSIER, CONSULTATION, ROUTING, REPLAYS["notification"]),
    wire=wire,
)
