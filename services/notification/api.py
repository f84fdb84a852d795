"""Notification's HTTP API: what was sent about a dossier, and each notice as a page."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse

from contracts.api import NotificationView
from services.notification import store
from services.runtime.service import Runtime


def _view(r: Any) -> dict[str, Any]:
    return {k: r[k] for k in NotificationView.model_fields}


def build_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/notifications", response_model=list[NotificationView], tags=["notification"])
    async def list_(dossier: Annotated[str, Query(min_length=1, max_length=40)]) -> list[Any]:
        rows = await store.of_dossier(rt.pool, dossier)
        return [{**_view(x), "dossier_code": x["dossier_code"]} for x in rows]

    @r.get("/notifications/{nid}", response_model=NotificationView, tags=["notification"])
    async def get(nid: UUID) -> Any:
        row = await store.get(rt.pool, nid)
        if row is None:
            raise HTTPException(404, detail=f"no notification {nid}")
        return _view(row)

    @r.get("/notifications/{nid}/html", response_class=HTMLResponse, tags=["notification"])
    async def html(nid: UUID) -> str:
        row = await store.get(rt.pool, nid)
        if row is None:
            raise HTTPException(404, detail=f"no notification {nid}")
        return (
            '<!doctype html><html lang="vi"><head><meta charset="utf-8">'
            f"<title>{row['subject']}</title></head><body>{row['body_html']}</body></html>"
        )

    return r
