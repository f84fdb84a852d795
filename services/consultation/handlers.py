"""Consultation's subscribers and timer handlers."""

from __future__ import annotations

import asyncpg

from contracts.common import StepKind
from contracts.envelope import Envelope
from contracts.events import (
    DossierReceived,
    DossierRouted,
    DossierStopped,
    DossierSupplemented,
    DossierWithdrawn,
    HandedOver,
    StepCompleted,
)
from services.consultation import domain, store
from services.consultation.opinions import Opinions
from services.runtime.consumer import Handler
from services.runtime.timers import TimerHandler


def build(opinions: Opinions) -> dict[str, Handler]:
    async def on_received(conn: asyncpg.Connection, env: Envelope, d: DossierReceived) -> None:
        """What the dossier was handed in with: an opinion request lists, by name, the
        documents it sends that the dossier really holds."""
        docs = [x.model_dump(mode="json", include={"code", "name", "copies"}) for x in d.documents]
        await store.save_documents(conn, d.code, docs, merge=False)

    async def on_supplemented(
        conn: asyncpg.Connection, env: Envelope, s: DossierSupplemented
    ) -> None:
        docs = [x.model_dump(mode="json", include={"code", "name", "copies"}) for x in s.documents]
        await store.save_documents(conn, s.code, docs, merge=True)

    async def on_routed(conn: asyncpg.Connection, env: Envelope, r: DossierRouted) -> None:
        """The round opens with the routing when the route's first step consults (routes
        planned before steps existed always said so)."""
        if r.opens_round:
            await opinions.open_round(conn, env, r.code, r)

    async def on_step_completed(conn: asyncpg.Connection, env: Envelope, c: StepCompleted) -> None:
        """The lead agency's head ended the round by hand: what is still open is cancelled
        (the round's own completion ends the step by itself, with no one named)."""
        if c.step.kind is StepKind.CONSULT and c.by is not None:
            reason = f"cơ quan chủ trì kết thúc lấy ý kiến: {c.result or ''}".rstrip(": ")
            await opinions.cancel_dossier(conn, env, c.code, reason)

    async def on_handed_over(conn: asyncpg.Connection, env: Envelope, h: HandedOver) -> None:
        """The route reached its consult step: the round opens now."""
        if h.round is not None:
            await opinions.open_round(conn, env, h.code, h.round)

    async def on_withdrawn(conn: asyncpg.Connection, env: Envelope, w: DossierWithdrawn) -> None:
        await opinions.cancel_dossier(conn, env, w.code, "hồ sơ bị rút theo yêu cầu của người nộp")

    async def on_stopped(conn: asyncpg.Connection, env: Envelope, s: DossierStopped) -> None:
        await opinions.cancel_dossier(conn, env, s.code, f"dừng xử lý hồ sơ: {s.reason}")

    return {
        "dossier.received": on_received,
        "dossier.supplemented": on_supplemented,
        "routing.dossier_routed": on_routed,
        "routing.handed_over": on_handed_over,
        "routing.step_completed": on_step_completed,
        "dossier.withdrawn": on_withdrawn,
        "dossier.stopped": on_stopped,
    }


def timer_handlers(opinions: Opinions) -> dict[str, TimerHandler]:
    return {
        domain.REMIND: opinions.on_remind,
        domain.ESCALATE: opinions.on_escalate,
        domain.FINAL: opinions.on_final,
    }
